"""Assembling one PixelWizard bundle from a Wan2.2-TI2V-5B folder and an optional release checkpoint.

The bundle is written to a temporary sibling folder and renamed into place only when every
component converted and ``check_bundle`` accepts it: a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from pixelwizard.conversion import release, umt5, wan_transformer, wan_vae
from pixelwizard.conversion.common import (
    ConversionError,
    StateDict,
    build_empty,
    cast,
    check_safetensors,
    load_safetensors_folder,
    load_strict,
    load_torch_file,
    read_json,
)
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel

VAE_FILE = "Wan2.2_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIR = "google/umt5-xxl"
_EXPECTED_CLASSES = {
    "text_encoder": ("transformers", "UMT5EncoderModel"),
    "vae": ("diffusers", "AutoencoderKLWan"),
    "transformer": ("diffusers", "WanTransformer3DModel"),
}


def source_layout(base: Path) -> str:
    """'diffusers' or 'original', or ConversionError saying what a base folder must hold."""
    if (base / "model_index.json").is_file():
        return "diffusers"
    if (base / "config.json").is_file() and (base / VAE_FILE).is_file():
        return "original"
    raise ConversionError(
        f"{base} is neither a diffusers-layout Wan2.2 folder (model_index.json) nor an original Wan2.2 "
        f"folder (config.json, {VAE_FILE}, {T5_FILE}, {TOKENIZER_DIR}/, DiT safetensors)"
    )


def convert(
    base: Path,
    out: Path,
    *,
    detail: Path | None = None,
    weights: release.Weights = "auto",
    dtype: torch.dtype | None = torch.bfloat16,
) -> Path:
    """Write the bundle ``out`` (which must not exist) and return it."""
    from pixelwizard.bundle import check_bundle, staged_folder
    from pixelwizard.sampling import flow_scheduler

    if out.exists():
        raise ConversionError(f"{out} already exists")
    layout = source_layout(base)
    with staged_folder(out) as staging:
        writer = _from_diffusers if layout == "diffusers" else _from_original
        index, config, base_weights = writer(base, staging, dtype)
        _write_detail(staging / "detail_transformer", config, base_weights, detail, weights, dtype)
        flow_scheduler(shift=5.0).save_pretrained(staging / "scheduler")
        _write_index(staging, index)
        check_bundle(staging)
    return out


def _from_diffusers(base: Path, staging: Path, dtype) -> tuple[dict, dict[str, Any], Any]:
    """Copy text encoder, VAE and transformer as they are; re-save the tokenizer with Wan's length."""
    index = read_json(base / "model_index.json")
    if not isinstance(index, dict):
        raise ConversionError(f"{base}/model_index.json: not a JSON object")
    for name, expected in _EXPECTED_CLASSES.items():
        if list(index.get(name) or []) != list(expected):
            raise ConversionError(f"{base}/model_index.json: {name} is {index.get(name)}, expected {list(expected)}")
        if not (base / name).is_dir():
            raise ConversionError(f"{base}: {name}/ is missing")
        check_safetensors(base / name, f"{base}: {name}")
        shutil.copytree(base / name, staging / name, copy_function=_link_or_copy)
    config_path = base / "transformer" / "config.json"
    config = {k: v for k, v in read_json(config_path).items() if not k.startswith("_")}
    tokenizer = _save_tokenizer(base / "tokenizer", staging / "tokenizer", text_len=512)
    return _index(tokenizer), config, lambda: load_safetensors_folder(
        base / "transformer", wan_transformer.WEIGHTS_PATTERN, "base transformer"
    )


def _from_original(base: Path, staging: Path, dtype) -> tuple[dict, dict[str, Any], StateDict]:
    """Convert the DiT, the VAE and the T5 encoder from the original Wan2.2 files."""
    config, weights = wan_transformer.read_original(base)
    weights = cast(weights, dtype)
    wan_transformer.build(config, weights).save_pretrained(staging / "transformer")
    vae = wan_vae.build(cast(load_torch_file(base / VAE_FILE, "Wan2.2 VAE"), dtype))
    vae.save_pretrained(staging / "vae")
    del vae
    text = umt5.build(cast(load_torch_file(base / T5_FILE, "UMT5 encoder"), dtype))
    text.save_pretrained(staging / "text_encoder")
    del text
    text_len = int(read_json(base / "config.json").get("text_len", 512))
    tokenizer = _save_tokenizer(base / TOKENIZER_DIR, staging / "tokenizer", text_len)
    return _index(tokenizer), config, weights


def _write_detail(folder: Path, config: dict[str, Any], base_weights, checkpoint: Path | None,
                  weights: release.Weights, dtype) -> None:
    """The detail transformer: a release checkpoint's, or the base model plus fresh (zero) new modules."""
    resolve = base_weights if callable(base_weights) else (lambda: base_weights)
    if checkpoint is not None:
        generator = cast(release.read_generator(checkpoint, weights), dtype)
        has_backbone = any(not k.startswith(("dt_embedding.", "spatial_adapter.")) for k in generator)
        model = release.build_detail(generator, config, None if has_backbone else cast(resolve(), dtype))
    else:
        model = _detail_from_base(config, cast(resolve(), dtype), dtype)
    model.save_pretrained(folder)


def _detail_from_base(config: dict[str, Any], weights: StateDict, dtype) -> PixelWizardTransformer3DModel:
    """SPEC.md 4: a fresh detail model computes exactly the base model (dt and injector start at zero)."""
    model = build_empty(lambda: PixelWizardTransformer3DModel(**config))
    dt_embedder, injector = model._new_modules()
    fresh = {f"dt_embedder.{k}": v for k, v in dt_embedder.state_dict().items()}
    fresh.update({f"anchor_injector.{k}": v for k, v in injector.state_dict().items()})
    return load_strict(model, {**weights, **cast(fresh, dtype)}, "base transformer")


def _save_tokenizer(source: Path, target: Path, text_len: int):
    """The UMT5 tokenizer with Wan's text length (the pipeline pads every prompt to it)."""
    from transformers import AutoTokenizer

    if not source.is_dir():
        raise ConversionError(f"tokenizer folder {source} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"tokenizer folder {source}: {str(exc).splitlines()[0]}") from None
    tokenizer.model_max_length = text_len
    tokenizer.save_pretrained(target)
    return tokenizer


def _index(tokenizer) -> dict[str, Any]:
    return {
        "tokenizer": ["transformers", type(tokenizer).__name__],
        **{name: list(cls) for name, cls in _EXPECTED_CLASSES.items()},
        "detail_transformer": ["pixelwizard.models.transformer_pixelwizard", "PixelWizardTransformer3DModel"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    }


def _write_index(staging: Path, components: dict[str, Any]) -> None:
    import diffusers

    index = {"_class_name": "PixelWizardPipeline", "_diffusers_version": diffusers.__version__, **components}
    (staging / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _link_or_copy(source: str, target: str) -> str:
    """Hard-link big weight files when the filesystem allows (they are never written in place)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target
