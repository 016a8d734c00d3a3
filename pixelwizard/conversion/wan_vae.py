"""The Wan2.2 VAE (``Wan2.2_VAE.pth``, original naming) -> diffusers ``AutoencoderKLWan``.

diffusers' ``convert_wan_vae_to_diffusers`` covers the Wan2.1 layout only: its block renaming
folds the residual down/up blocks of the Wan2.2 VAE (``encoder.downsamples.I.downsamples.J``,
``decoder.upsamples.I.upsamples.J``) into wrong names. So the parts the two VAEs share (middle,
heads, quant convs, stems) go through diffusers' converter and the residual blocks through the
small map below. The config is read off the tensor shapes; the latent statistics are Wan2.2's.
"""

from __future__ import annotations

import re
from typing import Any

from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from pixelwizard.conversion.common import ConversionError, StateDict, build_empty, load_strict

Z_DIM = 48
# Per-channel latent statistics of the Wan2.2 VAE (published with the model; not in the weights).
LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]

_BLOCK = re.compile(r"^(encoder\.downsamples|decoder\.upsamples)\.(\d+)\.(?:downsamples|upsamples)\.(\d+)\.(.+)$")
_RESNET = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight",
    "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight",
    "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight",
    "shortcut.bias": "conv_shortcut.bias",
}


def _block_key(key: str) -> str:
    """encoder.downsamples.I.downsamples.J.X -> encoder.down_blocks.I.resnets.J.Y or .downsampler.X (and up)."""
    match = _BLOCK.match(key)
    if match is None:
        return key  # left as is: the strict load reports it as unexpected
    stage, block, index, rest = match.groups()
    side, kind = ("encoder", "down") if stage.startswith("encoder") else ("decoder", "up")
    if rest in _RESNET:
        return f"{side}.{kind}_blocks.{block}.resnets.{index}.{_RESNET[rest]}"
    if rest.startswith(("resample.", "time_conv.")):
        return f"{side}.{kind}_blocks.{block}.{kind}sampler.{rest}"
    return key


def to_diffusers_keys(state_dict: StateDict) -> StateDict:
    """Rename every key of a Wan2.2 VAE state dict to the diffusers naming."""
    blocks = {k: v for k, v in state_dict.items() if _BLOCK.match(k)}
    shared = {k: v for k, v in state_dict.items() if k not in blocks}
    converted = convert_wan_vae_to_diffusers(shared)
    converted.update({_block_key(k): v for k, v in blocks.items()})
    return converted


def config_from_weights(state_dict: StateDict) -> dict[str, Any]:
    """The ``AutoencoderKLWan`` config of original Wan2.2 VAE weights, read off their shapes."""
    try:
        stem = state_dict["encoder.conv1.weight"]
        base_dim, in_channels = stem.shape[0], stem.shape[1]
        z_dim = state_dict["conv2.weight"].shape[0]
        stages = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("encoder.downsamples."))
        res_blocks = len({k.split(".")[4] for k in state_dict
                          if k.startswith("encoder.downsamples.0.downsamples.") and ".residual." in k})
        dim_mult = [state_dict[f"encoder.downsamples.{i}.downsamples.0.residual.6.weight"].shape[0] // base_dim
                    for i in range(stages)]
        temporal = [f"encoder.downsamples.{i}.downsamples.{res_blocks}.time_conv.weight" in state_dict
                    for i in range(stages - 1)]
        decoder_base_dim = state_dict["decoder.head.0.gamma"].shape[0] // dim_mult[0]
        out_channels = state_dict["decoder.head.2.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as exc:
        raise ConversionError(f"Wan2.2 VAE: not a Wan2.2 VAE state dict (no {exc})") from None
    if z_dim != Z_DIM:
        raise ConversionError(f"Wan2.2 VAE: {z_dim} latent channels; the Wan2.2 VAE has {Z_DIM}")
    patch_size = round((in_channels / 3) ** 0.5)
    return dict(
        base_dim=base_dim, decoder_base_dim=decoder_base_dim, z_dim=z_dim, dim_mult=dim_mult,
        num_res_blocks=res_blocks, attn_scales=[], temperal_downsample=temporal, is_residual=True,
        in_channels=in_channels, out_channels=out_channels, patch_size=patch_size,
        scale_factor_temporal=2 ** sum(temporal), scale_factor_spatial=patch_size * 2 ** (stages - 1),
        latents_mean=LATENTS_MEAN, latents_std=LATENTS_STD,
    )


def build(state_dict: StateDict) -> AutoencoderKLWan:
    """A diffusers Wan2.2 VAE holding exactly the original weights."""
    config = config_from_weights(state_dict)
    weights = to_diffusers_keys(state_dict)
    return load_strict(build_empty(lambda: AutoencoderKLWan(**config)), weights, "Wan2.2 VAE")
