"""Conversion of released weights: every tensor lands where it belongs, nothing missing or left over.

Each test builds a checkpoint in the *original* naming from a reference model with random values
(so every tensor is distinct), using name tables written here from the original module
structures (Wan's WanModel, Wan2.2 VAE, Wan's T5Encoder; the release format of
pixelwizard.conversion.release), converts it, and compares tensor by tensor.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
from safetensors.torch import save_file
from transformers import UMT5Config, UMT5EncoderModel

from pixelwizard.bundle import load_bundle
from pixelwizard.conversion import ConversionError, release, umt5, wan_transformer, wan_vae
from pixelwizard.default_model import TINY_VOCABULARY
from pixelwizard.models.tokenizer import build_word_tokenizer
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel
from pixelwizard.sampling import flow_scheduler

REPO = Path(__file__).resolve().parents[1]
DIT = dict(num_attention_heads=2, attention_head_dim=16, in_channels=48, out_channels=48, text_dim=32, freq_dim=256,
           ffn_dim=64, num_layers=2)
ORIGINAL_DIT_CONFIG = {"_class_name": "WanModel", "model_type": "ti2v", "dim": 32, "ffn_dim": 64, "freq_dim": 256,
                       "in_dim": 48, "out_dim": 48, "num_heads": 2, "num_layers": 2, "eps": 1e-6, "text_len": 512}
INJECTOR = dict(anchor_channels=48, injector_hidden_channels=32, injector_groups=16, injection_blocks=(0, 1))
VAE = dict(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 2, 2, 2], num_res_blocks=2,
           temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
           scale_factor_temporal=4, scale_factor_spatial=16)
T5 = dict(vocab_size=len(TINY_VOCABULARY) + 3, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
          relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu")


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (distinct across tensors with probability one), float32."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.float().eval()


def assert_same_tensors(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(reference)
    wrong = [k for k in reference if not torch.equal(ours[k].float(), reference[k].float())]
    assert not wrong, f"tensors in the wrong place: {wrong[:5]}"


# -- original naming tables, written from the original module structures ---------------------------
def wan_dit_names(layers: int) -> dict[str, str]:
    """original Wan DiT key -> diffusers key."""
    names = {}
    for wb in ("weight", "bias"):
        names.update({
            f"patch_embedding.{wb}": f"patch_embedding.{wb}",
            f"text_embedding.0.{wb}": f"condition_embedder.text_embedder.linear_1.{wb}",
            f"text_embedding.2.{wb}": f"condition_embedder.text_embedder.linear_2.{wb}",
            f"time_embedding.0.{wb}": f"condition_embedder.time_embedder.linear_1.{wb}",
            f"time_embedding.2.{wb}": f"condition_embedder.time_embedder.linear_2.{wb}",
            f"time_projection.1.{wb}": f"condition_embedder.time_proj.{wb}",
            f"head.head.{wb}": f"proj_out.{wb}",
        })
    names["head.modulation"] = "scale_shift_table"
    for i in range(layers):
        b = f"blocks.{i}"
        for attn, ours in (("self_attn", "attn1"), ("cross_attn", "attn2")):
            for proj, target in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0")):
                for wb in ("weight", "bias"):
                    names[f"{b}.{attn}.{proj}.{wb}"] = f"{b}.{ours}.{target}.{wb}"
            for norm in ("norm_q", "norm_k"):
                names[f"{b}.{attn}.{norm}.weight"] = f"{b}.{ours}.{norm}.weight"
        for wb in ("weight", "bias"):
            names[f"{b}.norm3.{wb}"] = f"{b}.norm2.{wb}"  # Wan's cross-attention norm is norm3
            names[f"{b}.ffn.0.{wb}"] = f"{b}.ffn.net.0.proj.{wb}"
            names[f"{b}.ffn.2.{wb}"] = f"{b}.ffn.net.2.{wb}"
        names[f"{b}.modulation"] = f"{b}.scale_shift_table"
    return names


def _resnet(original: str, ours: str, shortcut: bool) -> dict[str, str]:
    names = {f"{original}.residual.0.gamma": f"{ours}.norm1.gamma", f"{original}.residual.3.gamma": f"{ours}.norm2.gamma"}
    for wb in ("weight", "bias"):
        names[f"{original}.residual.2.{wb}"] = f"{ours}.conv1.{wb}"
        names[f"{original}.residual.6.{wb}"] = f"{ours}.conv2.{wb}"
        if shortcut:
            names[f"{original}.shortcut.{wb}"] = f"{ours}.conv_shortcut.{wb}"
    return names


def wan22_vae_names(config: dict) -> dict[str, str]:
    """original Wan2.2 VAE key -> diffusers key (Encoder3d / Decoder3d of Wan's vae2_2)."""
    mult, res, temporal = config["dim_mult"], config["num_res_blocks"], config["temperal_downsample"]
    enc = [config["base_dim"] * m for m in [1, *mult]]
    dec = [config["decoder_base_dim"] * m for m in [mult[-1], *mult[::-1]]]
    names: dict[str, str] = {}
    for side in ("encoder", "decoder"):
        names.update(_resnet(f"{side}.middle.0", f"{side}.mid_block.resnets.0", False))
        names.update(_resnet(f"{side}.middle.2", f"{side}.mid_block.resnets.1", False))
        names[f"{side}.middle.1.norm.gamma"] = f"{side}.mid_block.attentions.0.norm.gamma"
        names[f"{side}.head.0.gamma"] = f"{side}.norm_out.gamma"
        for wb in ("weight", "bias"):
            names[f"{side}.conv1.{wb}"] = f"{side}.conv_in.{wb}"
            names[f"{side}.head.2.{wb}"] = f"{side}.conv_out.{wb}"
            for layer in ("to_qkv", "proj"):
                names[f"{side}.middle.1.{layer}.{wb}"] = f"{side}.mid_block.attentions.0.{layer}.{wb}"
    for wb in ("weight", "bias"):
        names[f"conv1.{wb}"] = f"quant_conv.{wb}"
        names[f"conv2.{wb}"] = f"post_quant_conv.{wb}"
    stages = len(mult)
    for i in range(stages):  # Down_ResidualBlock i: `res` residual blocks, then a Resample unless last
        for j in range(res):
            names.update(_resnet(f"encoder.downsamples.{i}.downsamples.{j}", f"encoder.down_blocks.{i}.resnets.{j}",
                                 shortcut=j == 0 and enc[i] != enc[i + 1]))
        if i < stages - 1:
            for wb in ("weight", "bias"):
                names[f"encoder.downsamples.{i}.downsamples.{res}.resample.1.{wb}"] = (
                    f"encoder.down_blocks.{i}.downsampler.resample.1.{wb}")
                if temporal[i]:
                    names[f"encoder.downsamples.{i}.downsamples.{res}.time_conv.{wb}"] = (
                        f"encoder.down_blocks.{i}.downsampler.time_conv.{wb}")
    up_temporal = temporal[::-1]
    for i in range(stages):  # Up_ResidualBlock i: `res + 1` residual blocks, then a Resample unless last
        for j in range(res + 1):
            names.update(_resnet(f"decoder.upsamples.{i}.upsamples.{j}", f"decoder.up_blocks.{i}.resnets.{j}",
                                 shortcut=j == 0 and dec[i] != dec[i + 1]))
        if i < stages - 1:
            for wb in ("weight", "bias"):
                names[f"decoder.upsamples.{i}.upsamples.{res + 1}.resample.1.{wb}"] = (
                    f"decoder.up_blocks.{i}.upsampler.resample.1.{wb}")
                if up_temporal[i]:
                    names[f"decoder.upsamples.{i}.upsamples.{res + 1}.time_conv.{wb}"] = (
                        f"decoder.up_blocks.{i}.upsampler.time_conv.{wb}")
    return names


def wan_t5_names(layers: int) -> dict[str, str]:
    """original Wan T5Encoder key -> transformers UMT5EncoderModel key."""
    names = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
    for i in range(layers):
        b, o = f"blocks.{i}", f"encoder.block.{i}"
        names.update({
            f"{b}.norm1.weight": f"{o}.layer.0.layer_norm.weight",
            **{f"{b}.attn.{p}.weight": f"{o}.layer.0.SelfAttention.{p}.weight" for p in "qkvo"},
            f"{b}.pos_embedding.embedding.weight": f"{o}.layer.0.SelfAttention.relative_attention_bias.weight",
            f"{b}.norm2.weight": f"{o}.layer.1.layer_norm.weight",
            f"{b}.ffn.gate.0.weight": f"{o}.layer.1.DenseReluDense.wi_0.weight",
            f"{b}.ffn.fc1.weight": f"{o}.layer.1.DenseReluDense.wi_1.weight",
            f"{b}.ffn.fc2.weight": f"{o}.layer.1.DenseReluDense.wo.weight",
        })
    return names


def release_new_names(blocks: tuple[int, ...]) -> dict[str, str]:
    """The release format of dt_embedding / spatial_adapter (docs/conversion.md) -> ours."""
    modules = {"dt_embedding.0": "dt_embedder.linear_1", "dt_embedding.2": "dt_embedder.linear_2",
               "spatial_adapter.encoder.0": "anchor_injector.in_conv", "spatial_adapter.encoder.1": "anchor_injector.norm_in",
               "spatial_adapter.encoder.3": "anchor_injector.out_conv", "spatial_adapter.norm": "anchor_injector.norm_tokens",
               "spatial_adapter.gate_t": "anchor_injector.gate_t", "spatial_adapter.gate_dt": "anchor_injector.gate_dt",
               **{f"spatial_adapter.proj.{i}": f"anchor_injector.block_proj.{i}" for i in blocks}}
    return {f"{a}.{wb}": f"{b}.{wb}" for a, b in modules.items() for wb in ("weight", "bias")}


def to_original(reference: dict[str, torch.Tensor], names: dict[str, str], prefix: str = "") -> dict:
    assert sorted(names.values()) == sorted(reference), "the name table must cover the model exactly"
    return {prefix + original: reference[ours].clone() for original, ours in names.items()}


# -- reference models -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dit() -> WanTransformer3DModel:
    return randomized(WanTransformer3DModel(**DIT), 1)


@pytest.fixture(scope="module")
def detail() -> PixelWizardTransformer3DModel:
    return randomized(PixelWizardTransformer3DModel(**DIT, **INJECTOR), 2)


@pytest.fixture(scope="module")
def vae() -> AutoencoderKLWan:
    return randomized(AutoencoderKLWan(**VAE, latents_mean=wan_vae.LATENTS_MEAN, latents_std=wan_vae.LATENTS_STD), 3)


@pytest.fixture(scope="module")
def text_encoder() -> UMT5EncoderModel:
    return randomized(UMT5EncoderModel(UMT5Config(**T5)), 4)


def _release_generator(detail, prefix: str = "model.") -> dict[str, torch.Tensor]:
    sd = detail.state_dict()
    backbone = {k: v for k, v in sd.items() if not k.startswith(("dt_embedder.", "anchor_injector."))}
    new = {k: v for k, v in sd.items() if k not in backbone}
    return {**to_original(backbone, wan_dit_names(DIT["num_layers"]), prefix),
            **to_original(new, release_new_names(INJECTOR["injection_blocks"]), prefix)}


# -- per component ----------------------------------------------------------------------------------
def test_wan_dit_original_keys_land_in_place(dit):
    original = to_original(dit.state_dict(), wan_dit_names(DIT["num_layers"]))
    model = wan_transformer.build(DIT, wan_transformer.to_diffusers_keys(original))
    assert_same_tensors(model.state_dict(), dit.state_dict())


def test_wan_dit_config_translation():
    config = wan_transformer.diffusers_config(ORIGINAL_DIT_CONFIG, text_dim=32)
    assert {k: config[k] for k in DIT} == DIT


def test_wan22_vae_original_keys_land_in_place_and_config_is_read_off_the_shapes(vae):
    original = to_original(vae.state_dict(), wan22_vae_names(VAE))
    config = wan_vae.config_from_weights(original)
    assert {k: config[k] for k in VAE} == {**VAE, "patch_size": 2}
    model = wan_vae.build(original)
    assert_same_tensors(model.state_dict(), vae.state_dict())


def test_diffusers_own_vae_converter_does_not_cover_the_wan22_blocks(vae):
    """Why wan_vae maps the residual blocks itself: diffusers' converter misnames them."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    original = to_original(vae.state_dict(), wan22_vae_names(VAE))
    assert set(convert_wan_vae_to_diffusers(dict(original))) != set(vae.state_dict())


def _wan_t5_forward(sd: dict[str, torch.Tensor], ids: torch.Tensor, heads: int, layers: int) -> torch.Tensor:
    """Wan's T5Encoder computation, written out: RMS norms, unscaled attention with a per-layer
    bidirectional relative bias (32 buckets, distance 128), gated tanh-GELU feed-forward."""
    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def buckets(n: int, num_buckets: int = 32, max_dist: int = 128) -> torch.Tensor:
        rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
        half = num_buckets // 2
        out = (rel > 0).long() * half
        rel = rel.abs()
        exact = half // 2
        large = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(max_dist / exact)
                         * (half - exact)).long()
        return out + torch.where(rel < exact, rel, large.clamp(max=half - 1))

    x = sd["token_embedding.weight"][ids]
    b, n, d = x.shape
    for i in range(layers):
        p = f"blocks.{i}."
        h = rms(x, sd[p + "norm1.weight"])
        q, k, v = (F.linear(h, sd[p + f"attn.{c}.weight"]).view(b, n, heads, -1).transpose(1, 2) for c in "qkv")
        bias = sd[p + "pos_embedding.embedding.weight"][buckets(n)].permute(2, 0, 1)[None]
        attn = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
        x = x + F.linear((attn @ v).transpose(1, 2).reshape(b, n, d), sd[p + "attn.o.weight"])
        h = rms(x, sd[p + "norm2.weight"])
        gate = F.gelu(F.linear(h, sd[p + "ffn.gate.0.weight"]), approximate="tanh")
        x = x + F.linear(F.linear(h, sd[p + "ffn.fc1.weight"]) * gate, sd[p + "ffn.fc2.weight"])
    return rms(x, sd["norm.weight"])


def test_wan_t5_original_keys_land_in_place_and_compute_the_same(text_encoder):
    reference = {k: v for k, v in text_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    original = to_original(reference, wan_t5_names(T5["num_layers"]))
    model = umt5.build(original)
    assert_same_tensors(model.state_dict(), text_encoder.state_dict())
    assert model.encoder.embed_tokens.weight is model.shared.weight
    ids = torch.randint(0, T5["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(ids).last_hidden_state
        theirs = _wan_t5_forward(original, ids, T5["num_heads"], T5["num_layers"])
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)


# -- release checkpoints ----------------------------------------------------------------------------
def test_release_generator_with_model_prefix_lands_in_place(detail, tmp_path):
    generator = _release_generator(detail)
    raw = {k: v + 1 for k, v in generator.items()}
    path = tmp_path / "release.pt"
    torch.save({"generator": raw, "generator_ema": generator, "step": 1000}, path)
    model = release.build_detail(release.read_generator(path), DIT)
    assert tuple(model.config.injection_blocks) == (0, 1)
    assert_same_tensors(model.state_dict(), detail.state_dict())
    raw_model = release.build_detail(release.read_generator(path, "raw"), DIT)
    assert torch.equal(raw_model.proj_out.weight, detail.proj_out.weight + 1)


def test_adapter_only_release_takes_the_backbone_from_the_base(detail, tmp_path):
    generator = {k: v for k, v in _release_generator(detail, prefix="").items()
                 if k.startswith(("dt_embedding.", "spatial_adapter."))}
    base = {k: v for k, v in detail.state_dict().items() if not k.startswith(("dt_embedder.", "anchor_injector."))}
    model = release.build_detail(generator, DIT, base_weights=base)
    assert_same_tensors(model.state_dict(), detail.state_dict())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: g.pop("model.blocks.1.ffn.2.weight"), "missing key(s): blocks.1.ffn.net.2.weight"),
        (lambda g: g.pop("model.spatial_adapter.gate_dt.bias"), "missing key(s): anchor_injector.gate_dt.bias"),
        (lambda g: g.__setitem__("model.spatial_adapter.extra.weight", torch.ones(1)),
         "unexpected key(s): spatial_adapter.extra.weight"),
    ],
)
def test_partial_or_wrong_release_names_the_keys(detail, edit, message):
    raw = _release_generator(detail)
    edit(raw)
    stripped = {k.removeprefix("model."): v for k, v in raw.items()}
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        release.build_detail(stripped, DIT)


def test_release_without_a_generator_is_refused(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"optimizer": {}}, path)
    with pytest.raises(ConversionError, match="no generator_ema or generator"):
        release.read_generator(path)


# -- whole folders through the command line ---------------------------------------------------------
def run_cli(*args: str, home: Path):
    env = {**os.environ, "PIXELWIZARD_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def original_folder(tmp_path_factory, dit, vae, text_encoder) -> Path:
    """A Wan2.2-TI2V-5B folder in the original layout, tiny dims."""
    folder = tmp_path_factory.mktemp("wan-original")
    (folder / "config.json").write_text(json.dumps(ORIGINAL_DIT_CONFIG))
    weights = to_original(dit.state_dict(), wan_dit_names(DIT["num_layers"]))
    keys = sorted(weights)
    for n, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), start=1):
        save_file({k: weights[k].contiguous() for k in part}, folder / f"diffusion_pytorch_model-0000{n}-of-00002.safetensors")
    torch.save(to_original(vae.state_dict(), wan22_vae_names(VAE)), folder / "Wan2.2_VAE.pth")
    t5 = {k: v for k, v in text_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    torch.save(to_original(t5, wan_t5_names(T5["num_layers"])), folder / "models_t5_umt5-xxl-enc-bf16.pth")
    build_word_tokenizer(TINY_VOCABULARY, 77).save_pretrained(folder / "google" / "umt5-xxl")
    return folder


def test_convert_original_layout_with_a_release_checkpoint(original_folder, detail, dit, vae, text_encoder, tmp_path):
    ckpt = tmp_path / "pixelwizard-2k.pt"
    torch.save({"generator_ema": _release_generator(detail)}, ckpt)
    out = tmp_path / "bundle"
    result = run_cli("convert", str(original_folder), "--out", str(out), "--detail", str(ckpt), "--dtype", "fp32",
                     home=tmp_path)
    assert result.returncode == 0, result.stderr
    pipe = load_bundle(out)
    assert_same_tensors(pipe.transformer.state_dict(), dit.state_dict())
    assert_same_tensors(pipe.detail_transformer.state_dict(), detail.state_dict())
    assert_same_tensors(pipe.vae.state_dict(), vae.state_dict())
    assert_same_tensors(pipe.text_encoder.state_dict(), text_encoder.state_dict())
    assert pipe.tokenizer.model_max_length == 512
    assert list(pipe.vae.config.latents_mean) == wan_vae.LATENTS_MEAN


def test_convert_diffusers_layout_without_a_release_gives_a_base_equivalent_detail_model(
    dit, vae, text_encoder, tmp_path
):
    source = tmp_path / "wan-diffusers"
    WanPipeline(tokenizer=build_word_tokenizer(TINY_VOCABULARY, 512), text_encoder=text_encoder, vae=vae,
                transformer=dit, scheduler=flow_scheduler(5.0)).save_pretrained(source)
    out = tmp_path / "bundle"
    result = run_cli("convert", str(source), "--out", str(out), "--dtype", "fp32", home=tmp_path)
    assert result.returncode == 0, result.stderr
    pipe = load_bundle(out)
    assert_same_tensors(pipe.transformer.state_dict(), dit.state_dict())
    detail_sd = pipe.detail_transformer.state_dict()
    assert_same_tensors({k: v for k, v in detail_sd.items() if k in dit.state_dict()}, dit.state_dict())
    assert all(not v.any() for k, v in detail_sd.items() if k.startswith(("dt_embedder.linear_2", "anchor_injector.block_proj")))


def test_convert_a_partial_release_is_one_line_exit_2_and_writes_nothing(original_folder, detail, tmp_path):
    generator = _release_generator(detail)
    generator.pop("model.spatial_adapter.encoder.3.weight")
    ckpt = tmp_path / "partial.pt"
    torch.save({"generator": generator}, ckpt)
    out = tmp_path / "bundle"
    result = run_cli("convert", str(original_folder), "--out", str(out), "--detail", str(ckpt), home=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "anchor_injector.out_conv.weight" in lines[0] and "missing" in lines[0], result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_convert_an_unrecognised_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("convert", str(tmp_path / "empty"), "--out", str(tmp_path / "bundle"), home=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "neither" in lines[0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("index", "model_index.json: not valid JSON"),
        ("truncated vae", "unreadable safetensors"),
        ("weights as .bin", "no .safetensors weights"),
        ("dit config", "transformer/config.json: not valid JSON"),
    ],
)
def test_convert_a_damaged_diffusers_folder_is_one_line_exit_2(dit, vae, text_encoder, tmp_path, damage, message):
    """Every copied component is read (its headers) before the bundle is renamed into place."""
    source = tmp_path / "wan-diffusers"
    WanPipeline(tokenizer=build_word_tokenizer(TINY_VOCABULARY, 512), text_encoder=text_encoder, vae=vae,
                transformer=dit, scheduler=flow_scheduler(5.0)).save_pretrained(source)
    weights = next((source / "vae").glob("*.safetensors"))
    if damage == "index":
        (source / "model_index.json").write_text("{not json")
    elif damage == "truncated vae":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "weights as .bin":
        weights.rename(weights.with_suffix(".bin"))
    else:
        (source / "transformer" / "config.json").write_text("not json")
    out = tmp_path / "bundle"
    result = run_cli("convert", str(source), "--out", str(out), home=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]
