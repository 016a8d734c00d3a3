"""The two-stage pipeline: bundle round trip, seeds, stage shapes."""

import json
from pathlib import Path

import pytest
import torch

from pixelwizard.bundle import ModelFolderError, bundle_revision, check_bundle, load_bundle
from pixelwizard.bundle import staged_folder, write_bundle
from pixelwizard.default_model import build_tiny_pipeline
from pixelwizard.presets import PresetError, get_preset
from pixelwizard.seeds import stage_seeds

# Detail CFG 5 (the 2k/4k value) so that both guidance branches run in the detail stage too.
FAST = get_preset("tiny").with_overrides(
    num_frames=5, anchor_width=64, anchor_height=32, anchor_steps=3, detail_width=128, detail_height=64,
    detail_guidance=5.0,
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_bundle(build_tiny_pipeline(seed=7), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="module")
def pipe(bundle):
    return load_bundle(bundle)


def test_bundle_is_a_diffusers_folder_that_reloads_offline_with_identical_weights(bundle, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    index = json.loads((bundle / "model_index.json").read_text())
    assert index["_class_name"] == "PixelWizardPipeline"
    assert index["detail_transformer"][1] == "PixelWizardTransformer3DModel"
    reference = build_tiny_pipeline(seed=7)
    loaded = load_bundle(bundle)
    for name in ("text_encoder", "vae", "transformer", "detail_transformer"):
        ours, theirs = getattr(loaded, name).state_dict(), getattr(reference, name).state_dict()
        assert ours.keys() == theirs.keys(), name
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert loaded.tokenizer("a red circle").input_ids == reference.tokenizer("a red circle").input_ids


def test_building_from_a_seed_is_deterministic_and_seed_dependent():
    a, b, c = build_tiny_pipeline(seed=1), build_tiny_pipeline(seed=1), build_tiny_pipeline(seed=2)
    wa, wb, wc = (p.transformer.proj_out.weight for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_same_seed_same_latents_and_other_prompt_id_other_latents(pipe):
    one = pipe("a red circle moves right", prompt_id="p1", seed=3, preset=FAST)
    two = pipe("a red circle moves right", prompt_id="p1", seed=3, preset=FAST)
    other = pipe("a red circle moves right", prompt_id="p2", seed=3, preset=FAST)
    assert torch.equal(one.anchor_latent, two.anchor_latent)
    assert torch.equal(one.detail_latent, two.detail_latent)
    assert torch.equal(one.frames, two.frames)
    assert not torch.equal(one.anchor_latent, other.anchor_latent)
    assert not torch.equal(one.detail_latent, other.detail_latent)


def test_stage_seeds_depend_on_base_seed_and_prompt_id_only():
    assert stage_seeds(5, "abc") == stage_seeds(5, "abc")
    assert stage_seeds(5, "abc") != stage_seeds(6, "abc") != stage_seeds(5, "abd")
    assert stage_seeds(5, "abc").anchor != stage_seeds(5, "abc").detail


def test_stage_calls_have_the_preset_shapes(pipe):
    cond, uncond = pipe.encode_prompt("a blue square", "blurry")
    assert cond.shape == uncond.shape == (1, 32, 32)
    anchor = pipe.generate_anchor("a blue square", 11, FAST)
    assert anchor.shape == (1, 16, 2, 2, 4)
    detail = pipe.render_detail(anchor, "a blue square", 12, FAST)
    assert detail.shape == (1, 16, 2, 4, 8)
    frames = pipe.decode(detail)
    assert frames.shape == (5, 64, 128, 3) and frames.dtype == torch.uint8


def test_progress_reports_every_step_of_every_stage(pipe):
    seen = []
    pipe("a blue square", prompt_id="x", seed=0, preset=FAST, on_progress=lambda *a: seen.append(a))
    assert ("anchor", 3, 3) in seen and ("detail", 4, 4) in seen and ("decode", 1, 1) in seen
    assert [a for a in seen if a[0] == "detail"] == [("detail", i, 4) for i in range(1, 5)]


def test_anchor_guides_the_detail_stage_when_the_injector_is_trained(pipe):
    """With non-zero injector weights, a different anchor gives a different detail latent."""
    anchor = pipe.generate_anchor("a blue square", 11, FAST)
    with torch.no_grad():
        for name, p in pipe.detail_transformer.anchor_injector.named_parameters():
            if "block_proj" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    try:
        a = pipe.render_detail(anchor, "a blue square", 12, FAST)
        b = pipe.render_detail(torch.zeros_like(anchor), "a blue square", 12, FAST)
        c = pipe.render_detail(anchor, "a blue square", 12, FAST, zero_anchor_uncond=True)
        assert (a - b).abs().max() > 1e-3
        assert (a - c).abs().max() > 1e-3
        assert torch.allclose(pipe.render_detail(anchor, "a blue square", 12, FAST, batch_cfg=False), a, atol=1e-4)
    finally:
        with torch.no_grad():
            for name, p in pipe.detail_transformer.anchor_injector.named_parameters():
                if "block_proj" in name:
                    p.zero_()


def test_incomplete_bundle_is_named(bundle, tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        check_bundle(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((bundle / "model_index.json").read_text())
    with pytest.raises(ModelFolderError, match="tokenizer"):
        check_bundle(broken)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o755), (0o077, 0o700)])
def test_staged_folder_follows_the_umask_and_replaces_atomically(tmp_path, umask, mask, mode):
    umask(mask)
    destination = tmp_path / "bundle"
    with staged_folder(destination) as staging:
        (staging / "model_index.json").write_text("{}")
        (staging / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(destination) as staging:
            (staging / "a.txt").write_text("new")
            raise RuntimeError("write failed")

    assert destination.stat().st_mode & 0o777 == mode
    assert (destination / "a.txt").read_text() == "old"  # the failed write left the earlier folder alone
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # and no staging folder behind


def test_staged_folder_refuses_to_replace_what_is_not_a_bundle(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("mine")
    (tmp_path / "cache.pt").write_text("latents")
    for destination in (tmp_path / "notes", tmp_path / "cache.pt"):
        with pytest.raises(ModelFolderError, match="not a model bundle"):
            with staged_folder(destination):
                pass
    assert (tmp_path / "notes" / "mine.txt").read_text() == "mine" and (tmp_path / "cache.pt").read_text() == "latents"


def test_a_write_killed_between_its_renames_gets_the_previous_bundle_back(tmp_path):
    """A real process dies (os._exit) after retiring the old bundle and before renaming the new one in."""
    import subprocess
    import sys

    destination = tmp_path / "bundle"
    with staged_folder(destination) as staging:
        (staging / "model_index.json").write_text('{"v": "old"}')
    child = (
        "import os, sys\n"
        "from pixelwizard.bundle import staged_folder\n"
        "real = os.replace\n"
        "def dying(src, dst):\n"
        "    real(src, dst)\n"
        "    os._exit(9)\n"
        "with staged_folder(sys.argv[1]) as staging:\n"
        "    (staging / 'model_index.json').write_text('{\"v\": \"new\"}')\n"
        "    os.replace = dying\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(destination)], cwd=Path(__file__).parents[1])
    assert done.returncode == 9 and not destination.exists()

    with staged_folder(destination) as staging:  # the next write first puts the retired bundle back
        assert (destination / "model_index.json").read_text() == '{"v": "old"}'
        (staging / "model_index.json").write_text('{"v": "next"}')
    assert (destination / "model_index.json").read_text() == '{"v": "next"}'



def test_the_staging_folder_of_a_write_killed_with_sigkill_goes_with_a_later_write_a_day_after(tmp_path):
    """A real process is killed with SIGKILL while it fills its staging folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from pixelwizard.leftovers import STALE_SECONDS

    destination, marker = tmp_path / "bundle", tmp_path / "filling"
    child = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pixelwizard.bundle import staged_folder\n"
        "with staged_folder(sys.argv[1]) as staging:\n"
        "    (staging / 'model_index.json').write_text('{}')\n"
        "    Path(sys.argv[2]).touch()\n"
        "    time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", child, str(destination), str(marker)],
                               cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    [left] = [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.")]
    others = [tmp_path / ".bundle.bak", tmp_path / ".bundle.v2.old-42"]  # a user's file; another bundle's retired copy
    for other in others:
        other.mkdir()
        os.utime(other, (time.time() - 2 * STALE_SECONDS, time.time() - 2 * STALE_SECONDS))

    for age in (0, STALE_SECONDS + 60):  # a day later the next write removes it; before, it could be a live write's
        os.utime(left, (time.time() - age, time.time() - age))
        with staged_folder(destination) as staging:
            (staging / "model_index.json").write_text('{"v": 1}')
        assert left.exists() == (age == 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bundle.bak", ".bundle.v2.old-42", "bundle", "filling"]

def test_revision_changes_when_weights_change(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    assert bundle_revision(copy) == bundle_revision(bundle)
    for stray in ("pixelwizard_revision.tmp", ".pixelwizard_revision.json.1a2b.tmp"):  # a writer of the cache, killed
        (copy / stray).write_text("{}")
    assert bundle_revision(copy) == bundle_revision(bundle)
    weights = next((copy / "vae").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert bundle_revision(copy) != bundle_revision(bundle)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(detail_width=100), "multiple of 32"),
        (dict(anchor_height=48), "multiple of 32"),
        (dict(num_frames=16), "4k\\+1"),
        (dict(detail_steps=0), "detail steps must lie in \\[1, 1000\\]"),
        (dict(anchor_steps=10**20), "anchor steps must lie in \\[1, 1000\\]"),
        (dict(fps=0), "fps must lie in \\[1, 1000\\]"),
        (dict(fps=10**20), "fps must lie in"),
        (dict(detail_width=100_000), "width 100000 is larger than 8192 pixels"),
        (dict(num_frames=1029), "frame count 1029 is more than 1025"),
        (dict(detail_shift=0.0), "detail shift must be a positive number"),
        (dict(anchor_shift=float("inf")), "anchor shift must be a positive number"),
        (dict(detail_guidance=float("nan")), "detail guidance must be a number >= 0"),
        (dict(decode_chunks=50), "decode chunks 50 do not fit width 448"),
        (dict(detail_width=128, decode_chunks=2), "decode chunks 2 do not fit width 128"),
    ],
)
def test_presets_reject_values_the_model_cannot_take(overrides, message):
    with pytest.raises(PresetError, match=message):
        get_preset("tiny").with_overrides(**overrides)


def test_presets_match_the_spec():
    two, four = get_preset("2k"), get_preset("4k")
    assert (two.detail_width, two.detail_height, two.detail_steps, two.detail_shift, two.decode_chunks) == (
        2560, 1440, 4, 5.5, 3
    )
    assert (four.detail_width, four.detail_height, four.detail_steps, four.detail_shift, four.decode_chunks) == (
        3840, 2144, 4, 5.8, 4
    )
    for p in (two, four):
        assert (p.anchor_width, p.anchor_height, p.num_frames, p.anchor_steps, p.anchor_shift) == (448, 256, 121, 50, 5.0)
        assert p.anchor_guidance == p.detail_guidance == 5.0
    with pytest.raises(PresetError, match="unknown preset"):
        get_preset("8k")


def test_threads_sharing_one_pipeline_decode_correctly(pipe):
    """Flows run render jobs in threads over one loaded pipeline; diffusers' Wan VAE keeps its
    causal-convolution cache on the module, so concurrent decodes must not interleave."""
    from concurrent.futures import ThreadPoolExecutor

    latents = [torch.randn(pipe.latent_shape(w, h, 9), generator=torch.Generator().manual_seed(i))
               for i, (w, h) in enumerate([(128, 64), (64, 32), (128, 64), (64, 32)] * 3)]
    alone = [pipe.decode(latent) for latent in latents]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(pipe.decode, latents))
    assert all(torch.equal(a, b) for a, b in zip(alone, together))
