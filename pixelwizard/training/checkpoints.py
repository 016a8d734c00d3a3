"""Where training starts from and how its result is written: whole bundles, replaced atomically.

A run writes its bundle into a temporary sibling folder and renames it into place only when
everything is written, so a failed or interrupted run never damages an existing checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

RANDOM = "random"  # --model value: a fresh bundle of the trained tiny size, weights from the seed


def open_training_pipeline(model: str, device: str, seed: int = 0):
    """The pipeline to train: a bundle folder loaded in float32, or ``random`` (trained-size, from ``seed``)."""
    from pixelwizard.bundle import load_bundle
    from pixelwizard.default_model import build_tiny_pipeline

    if model == RANDOM:
        return build_tiny_pipeline(seed=seed, size="trained").to(device)
    return load_bundle(model, device=device, dtype=torch.float32)


def fresh_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A model of the same class and config with freshly initialised weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return type(model).from_config(model.config).to(device=model.device, dtype=model.dtype)


def write_bundle(pipe, destination: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """save_pretrained into a temporary sibling folder, then swap it in for ``destination``.

    ``dtype`` (float16 for the shipped bundle) converts the pipeline's weights before saving.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        if dtype is not None:
            pipe.to(dtype=dtype)
        pipe.save_pretrained(staging, safe_serialization=True)
        if destination.exists():
            retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.replace(destination, retired)
            os.replace(staging, destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination
