"""Wan2.2 DiT weights in the original Wan naming -> diffusers ``WanTransformer3DModel`` naming.

The key map is diffusers' own (``convert_wan_transformer_to_diffusers`` in
``diffusers.loaders.single_file_utils``); this module adds the config translation and the
strict check that every tensor found a place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

from pixelwizard.conversion.common import (
    ConversionError,
    StateDict,
    build_empty,
    load_safetensors_folder,
    load_strict,
    read_json,
)

WEIGHTS_PATTERN = "diffusion_pytorch_model*.safetensors"


def to_diffusers_keys(state_dict: StateDict) -> StateDict:
    """Rename original Wan DiT keys to diffusers keys (a ``model.diffusion_model.`` prefix is allowed)."""
    return convert_wan_transformer_to_diffusers(dict(state_dict))


def diffusers_config(original: dict[str, Any], text_dim: int) -> dict[str, Any]:
    """The diffusers config of an original Wan ``config.json`` (``WanModel`` arguments)."""
    try:
        dim, heads = int(original["dim"]), int(original["num_heads"])
        return dict(
            patch_size=tuple(original.get("patch_size", (1, 2, 2))),
            num_attention_heads=heads,
            attention_head_dim=dim // heads,
            in_channels=int(original["in_dim"]),
            out_channels=int(original["out_dim"]),
            text_dim=text_dim,
            freq_dim=int(original["freq_dim"]),
            ffn_dim=int(original["ffn_dim"]),
            num_layers=int(original["num_layers"]),
            cross_attn_norm=bool(original.get("cross_attn_norm", True)),
            qk_norm="rms_norm_across_heads" if original.get("qk_norm", True) else None,
            eps=float(original.get("eps", 1e-6)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"Wan config.json: missing or bad field {exc}") from None


def read_original(folder: Path) -> tuple[dict[str, Any], StateDict]:
    """(diffusers config, diffusers-keyed weights) of the DiT in an original Wan2.2 folder."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"Wan transformer: {config_path} does not exist")
    original = read_json(config_path)
    weights = to_diffusers_keys(load_safetensors_folder(folder, WEIGHTS_PATTERN, "Wan transformer"))
    text_key = "condition_embedder.text_embedder.linear_1.weight"
    if text_key not in weights:
        raise ConversionError("Wan transformer: 1 missing key(s): text_embedding.0.weight")
    return diffusers_config(original, int(weights[text_key].shape[1])), weights


def build(config: dict[str, Any], weights: StateDict, what: str = "Wan transformer") -> WanTransformer3DModel:
    """A stock transformer holding exactly ``weights``."""
    return load_strict(build_empty(lambda: WanTransformer3DModel(**config)), weights, what)
