"""The memory plan: stage offload moves whole components and changes no result."""

import torch

from pixelwizard.default_model import build_tiny_pipeline
from pixelwizard.memory import StageOffloader
from pixelwizard.presets import execution_plan, get_preset

# Detail CFG 5 (the 2k/4k value) so that both guidance branches run in the detail stage too.
FAST = get_preset("tiny").with_overrides(
    num_frames=5, anchor_width=64, anchor_height=32, anchor_steps=3, detail_width=128, detail_height=64,
    detail_guidance=5.0,
)


def test_offloaded_render_equals_the_resident_one():
    resident = build_tiny_pipeline(seed=5).place("cpu")
    offloaded = build_tiny_pipeline(seed=5).place("cpu", offload="model")
    a = resident("a red circle", prompt_id="p", seed=1, preset=FAST)
    b = offloaded("a red circle", prompt_id="p", seed=1, preset=FAST, batch_cfg=False)
    assert torch.allclose(a.detail_latent, b.detail_latent, atol=1e-5)
    assert (a.frames.int() - b.frames.int()).abs().max() <= 1


def test_offloader_moves_a_module_only_for_the_block_and_keeps_its_weights():
    module = torch.nn.Linear(4, 4)
    before = module.weight.detach().clone()
    offloader = StageOffloader("cpu")
    offloader.add(module)
    with offloader.resident(module):
        with offloader.resident(module):  # nested: the outer block keeps it
            assert offloader.load(module) is False
        assert id(module) in offloader._loaded
    assert id(module) not in offloader._loaded
    assert torch.equal(module.weight, before)


def test_large_presets_plan_offload_and_sequential_guidance():
    for name in ("2k", "4k"):
        plan = execution_plan(name)
        assert plan.offload == "model" and plan.batch_cfg is False and plan.attention_backend is None
    assert execution_plan("tiny").offload == "none"
