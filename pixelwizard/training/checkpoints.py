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


# `train anchor` size options -> WanTransformer3DModel config keys (a new size starts from fresh weights).
SIZE_KEYS = {"layers": "num_layers", "heads": "num_attention_heads", "head_dim": "attention_head_dim", "ffn_dim": "ffn_dim"}


def size_problem(sizes: dict[str, int]) -> str | None:
    """Why these transformer sizes cannot be built (one line), or None. Wan's 3D RoPE splits an even head dim."""
    for name, value in sizes.items():
        if value < 1:
            return f"{name.replace('_', ' ')} must be at least 1, got {value}"
    head_dim = sizes.get("head_dim")
    if head_dim is not None and (head_dim < 6 or head_dim % 2):
        return f"head dim must be an even number of at least 6 (3D RoPE splits it over t, h, w), got {head_dim}"
    return None


def fresh_copy(model: torch.nn.Module, seed: int, **config_overrides: int) -> torch.nn.Module:
    """A model of the same class and config (with ``config_overrides``) with fresh weights drawn from ``seed``."""
    torch.manual_seed(seed)
    config = {**model.config, **config_overrides}
    return type(model).from_config(config).to(device=model.device, dtype=model.dtype)
