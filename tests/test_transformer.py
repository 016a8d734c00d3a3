"""The detail transformer against the stock diffusers Wan transformer (SPEC.md section 4)."""

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.models.attention_dispatch import AttentionBackendName

from pixelwizard.default_model import tiny_transformer_config
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel

Z, TEXT = 16, 32


def make_pair(seed: int = 0):
    torch.manual_seed(seed)
    base = WanTransformer3DModel(**tiny_transformer_config(Z, TEXT)).eval()
    detail = PixelWizardTransformer3DModel(
        **tiny_transformer_config(Z, TEXT), anchor_channels=Z, injector_hidden_channels=32, injector_groups=8
    ).eval()
    missing, unexpected = detail.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected
    assert all(k.startswith(("dt_embedder.", "anchor_injector.")) for k in missing)
    return base, detail


def inputs(batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, Z, 3, 8, 12, generator=g)
    t = torch.tensor([999.0, 500.0][:batch])
    text = torch.randn(batch, 7, TEXT, generator=g)
    anchor = torch.randn(batch, Z, 3, 4, 6, generator=g)
    dt = torch.tensor([56.0, 250.0][:batch])
    return x, t, text, anchor, dt


def randomize_extras(model: PixelWizardTransformer3DModel, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("dt_embedder.", "anchor_injector.")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@torch.no_grad()
def test_zero_initialised_extras_reproduce_the_stock_model_exactly():
    base, detail = make_pair()
    x, t, text, anchor, dt = inputs()
    expected = base(x, t, text, return_dict=False)[0]
    assert torch.equal(detail(x, t, text, return_dict=False)[0], expected)
    assert torch.equal(detail(x, t, text, dt=dt, anchor=anchor, return_dict=False)[0], expected)


@torch.no_grad()
def test_non_zero_extras_make_anchor_and_step_size_change_the_output():
    base, detail = make_pair()
    randomize_extras(detail)
    x, t, text, anchor, dt = inputs()
    plain = detail(x, t, text, return_dict=False)[0]
    with_dt = detail(x, t, text, dt=dt, return_dict=False)[0]
    with_anchor = detail(x, t, text, anchor=anchor, return_dict=False)[0]
    other_anchor = detail(x, t, text, anchor=anchor.flip(-1), return_dict=False)[0]
    assert torch.equal(plain, base(x, t, text, return_dict=False)[0])
    assert (with_dt - plain).abs().max() > 1e-3
    assert (with_anchor - plain).abs().max() > 1e-3
    assert (with_anchor - other_anchor).abs().max() > 1e-3


@torch.no_grad()
def test_per_token_timesteps_of_wan22_ti2v_match_the_stock_model():
    base, detail = make_pair()
    randomize_extras(detail)
    x, t, text, anchor, dt = inputs()
    tokens = 3 * 4 * 6
    t2 = t[:, None].expand(-1, tokens)
    reference = detail(x, t, text, dt=dt, anchor=anchor, return_dict=False)[0]
    assert torch.allclose(detail(x, t2, text, dt=dt, anchor=anchor, return_dict=False)[0], reference, atol=1e-5)
    assert torch.allclose(detail(x, t2, text, return_dict=False)[0], base(x, t2, text, return_dict=False)[0])


def test_config_survives_save_and_reload(tmp_path):
    _, detail = make_pair()
    randomize_extras(detail)
    detail.save_pretrained(tmp_path)
    again = PixelWizardTransformer3DModel.from_pretrained(tmp_path)
    assert again.config.injector_hidden_channels == 32
    assert tuple(again.config.injection_blocks) == (0,)
    for (name, a), (_, b) in zip(detail.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_stock_diffusers_weights_load_unchanged_from_disk(tmp_path):
    base, _ = make_pair()
    base.save_pretrained(tmp_path)
    detail = PixelWizardTransformer3DModel.from_wan_pretrained(
        str(tmp_path), anchor_channels=Z, injector_hidden_channels=32, injector_groups=8
    )
    x, t, text, anchor, dt = inputs()
    with torch.no_grad():
        assert torch.equal(
            detail(x, t, text, dt=dt, anchor=anchor, return_dict=False)[0], base(x, t, text, return_dict=False)[0]
        )


@torch.no_grad()
def test_works_with_diffusers_attention_backend_switch():
    _, detail = make_pair()
    randomize_extras(detail)
    x, t, text, anchor, dt = inputs()
    reference = detail(x, t, text, dt=dt, anchor=anchor, return_dict=False)[0]
    detail.set_attention_backend("_native_math")
    assert detail.blocks[0].attn1.processor._attention_backend == AttentionBackendName._NATIVE_MATH
    switched = detail(x, t, text, dt=dt, anchor=anchor, return_dict=False)[0]
    assert torch.allclose(switched, reference, atol=1e-5)


@pytest.mark.parametrize("blocks", [(5,), ()])
def test_injection_blocks_out_of_range_or_none_are_rejected(blocks):
    with pytest.raises(ValueError, match="injection_blocks"):
        PixelWizardTransformer3DModel(**tiny_transformer_config(Z, TEXT), anchor_channels=Z, injection_blocks=blocks)


@torch.no_grad()
def test_anchor_with_wrong_frame_count_is_rejected():
    _, detail = make_pair()
    x, t, text, anchor, dt = inputs()
    with pytest.raises(ValueError, match="latent frames"):
        detail(x, t, text, dt=dt, anchor=anchor[:, :, :2])
