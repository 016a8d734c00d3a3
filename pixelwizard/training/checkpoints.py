"""Where training starts from: a bundle folder, random weights, or a fresh copy of one model.

Results are written with ``pixelwizard.bundle.write_bundle`` (atomic: a failed or interrupted
run never damages an existing checkpoint).
"""

from __future__ import annotations

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
