"""PixelWizard release checkpoints (``.pt``) -> ``PixelWizardTransformer3DModel`` weights.

A release checkpoint is a dict holding ``generator`` and/or ``generator_ema`` (SPEC.md 7). Inside,
keys may carry a ``model.`` prefix; the backbone is in the original Wan naming, the step-size
embedding under ``dt_embedding.`` and the injector under ``spatial_adapter.``, named as below
(the order of SPEC.md 4; indices 1 of ``dt_embedding`` and 2, 4 of ``spatial_adapter.encoder``
are the parameter-free SiLUs):

=======================================  =====================================  =====================
release key                              layer (SPEC.md 4)                      ours
=======================================  =====================================  =====================
dt_embedding.0.{weight,bias}             Linear(256 -> 3072)                    dt_embedder.linear_1
dt_embedding.2.{weight,bias}             Linear(3072 -> 3072), zero-init        dt_embedder.linear_2
spatial_adapter.encoder.0.{weight,bias}  Conv3d 1x1x1 (48 -> 768)               anchor_injector.in_conv
spatial_adapter.encoder.1.{weight,bias}  GroupNorm(16, 768)                     anchor_injector.norm_in
spatial_adapter.encoder.3.{weight,bias}  Conv3d 3x3x3 (768 -> 3072)             anchor_injector.out_conv
spatial_adapter.norm.{weight,bias}       LayerNorm(3072)                        anchor_injector.norm_tokens
spatial_adapter.gate_t.{weight,bias}     Linear(256 -> 3072), a(t)              anchor_injector.gate_t
spatial_adapter.gate_dt.{weight,bias}    Linear(256 -> 3072), b(dt), zero-init  anchor_injector.gate_dt
spatial_adapter.proj.{i}.{weight,bias}   Linear(3072 -> 3072) for block i       anchor_injector.block_proj.{i}
=======================================  =====================================  =====================

A checkpoint without backbone keys (adapter and dt embedding trained alone) takes its backbone
from the base model; one with backbone keys must hold all of them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pixelwizard.conversion import wan_transformer
from pixelwizard.conversion.common import ConversionError, StateDict, build_empty, load_strict, load_torch_file
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel

Weights = Literal["auto", "ema", "raw"]
_ENTRIES = {"ema": "generator_ema", "raw": "generator"}
_NEW_PREFIXES = ("dt_embedding.", "spatial_adapter.")
_FIXED = {
    "dt_embedding.0": "dt_embedder.linear_1",
    "dt_embedding.2": "dt_embedder.linear_2",
    "spatial_adapter.encoder.0": "anchor_injector.in_conv",
    "spatial_adapter.encoder.1": "anchor_injector.norm_in",
    "spatial_adapter.encoder.3": "anchor_injector.out_conv",
    "spatial_adapter.norm": "anchor_injector.norm_tokens",
    "spatial_adapter.gate_t": "anchor_injector.gate_t",
    "spatial_adapter.gate_dt": "anchor_injector.gate_dt",
}
_PROJ = re.compile(r"^spatial_adapter\.proj\.(\d+)\.(weight|bias)$")


def read_generator(path: Path, weights: Weights = "auto") -> StateDict:
    """The generator state dict of a release checkpoint, ``model.`` prefixes removed.

    ``auto`` takes ``generator_ema`` when present, else ``generator``.
    """
    checkpoint = load_torch_file(path, "release checkpoint")
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"release checkpoint: {path} holds a {type(checkpoint).__name__}, not a dict")
    order = ["ema", "raw"] if weights == "auto" else [weights]
    entry = next((_ENTRIES[w] for w in order if _ENTRIES[w] in checkpoint), None)
    if entry is None:
        wanted = " or ".join(_ENTRIES[w] for w in order)
        raise ConversionError(f"release checkpoint: {path} has no {wanted} (it has: {', '.join(map(str, checkpoint))})")
    state = checkpoint[entry]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ConversionError(f"release checkpoint: {entry} in {path} is not a state dict of tensors")
    return {k.removeprefix("model."): v for k, v in state.items()}


def new_module_keys(state_dict: StateDict) -> StateDict:
    """Rename the dt-embedding and injector keys (table above); unknown ones are kept for the report."""
    out: StateDict = {}
    for key, tensor in state_dict.items():
        module, _, leaf = key.rpartition(".")
        match = _PROJ.match(key)
        if module in _FIXED:
            out[f"{_FIXED[module]}.{leaf}"] = tensor
        elif match:
            out[f"anchor_injector.block_proj.{match.group(1)}.{match.group(2)}"] = tensor
        else:
            out[key] = tensor
    return out


def injector_config(state_dict: StateDict) -> dict[str, Any]:
    """Injector sizes read off the release tensors (the GroupNorm group count is SPEC.md 4's 16)."""
    try:
        conv = state_dict["spatial_adapter.encoder.0.weight"]
    except KeyError:
        raise ConversionError("release checkpoint: 1 missing key(s): spatial_adapter.encoder.0.weight") from None
    blocks = sorted(int(m.group(1)) for k in state_dict if (m := _PROJ.match(k)) and m.group(2) == "weight")
    if not blocks:
        raise ConversionError("release checkpoint: no spatial_adapter.proj.{i} injection block")
    return dict(anchor_channels=conv.shape[1], injector_hidden_channels=conv.shape[0], injection_blocks=tuple(blocks))


def build_detail(
    generator: StateDict, base_config: dict[str, Any], base_weights: StateDict | None = None
) -> PixelWizardTransformer3DModel:
    """The detail transformer of a release generator; the backbone from ``base_weights`` when the
    generator holds none (diffusers-keyed base transformer weights)."""
    new = {k: v for k, v in generator.items() if k.startswith(_NEW_PREFIXES)}
    backbone = {k: v for k, v in generator.items() if k not in new}
    config = {**base_config, **injector_config(new)}
    if backbone:
        weights = wan_transformer.to_diffusers_keys(backbone)
    elif base_weights is not None:
        weights = dict(base_weights)
    else:
        raise ConversionError("release checkpoint: no backbone keys, and no base model to take them from")
    weights.update(new_module_keys(new))
    model = build_empty(lambda: PixelWizardTransformer3DModel(**config))
    return load_strict(model, weights, "release checkpoint")
