"""Shared pieces of the benchmark suite: model sizes, random-weight builders, timers, result files.

Real sizes are SPEC.md section 2 (Wan2.2 TI2V-5B, UMT5-XXL, Wan2.2 VAE); ``tiny`` sizes let every
script run end to end on a CPU in seconds, so a GPU run never fails on a bug a CPU could catch.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

TEXT_TOKENS = 512  # UMT5 context length (SPEC.md 2)
NUM_FRAMES = 121  # 31 latent frames


@dataclass(frozen=True)
class Size:
    """One render size: its name, pixel size and latent grid."""

    name: str
    width: int
    height: int
    frames: int = NUM_FRAMES

    def latent(self, channels: int, spatial: int = 16, temporal: int = 4) -> tuple[int, int, int, int, int]:
        return (1, channels, (self.frames - 1) // temporal + 1, self.height // spatial, self.width // spatial)

    def tokens(self, spatial: int = 16, patch: int = 2, temporal: int = 4) -> int:
        _, _, f, h, w = self.latent(1, spatial, temporal)
        return f * (h // patch) * (w // patch)


# SPEC.md 2: anchor 3,472 tokens; 720p 27,280; 2K 111,600; 4K 249,240.
SIZES = {
    "anchor": Size("anchor", 448, 256),
    "720p": Size("720p", 1280, 704),
    "2k": Size("2k", 2560, 1440),
    "4k": Size("4k", 3840, 2144),
}
TINY_SIZES = {
    "anchor": Size("anchor", 128, 64, 9),
    "720p": Size("720p", 192, 128, 9),
    "2k": Size("2k", 256, 128, 9),
    "4k": Size("4k", 320, 192, 9),
}


def transformer_config(tiny: bool) -> dict[str, Any]:
    """Wan2.2 TI2V-5B transformer hyper-parameters (SPEC.md 2), or a CPU-sized copy."""
    if tiny:
        return dict(num_attention_heads=2, attention_head_dim=16, in_channels=48, out_channels=48, text_dim=64,
                    freq_dim=256, ffn_dim=64, num_layers=2)
    return dict(num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48, text_dim=4096,
                freq_dim=256, ffn_dim=14336, num_layers=30)


def detail_extra_config(tiny: bool) -> dict[str, Any]:
    """The injector's sizes (SPEC.md 4)."""
    return dict(anchor_channels=48, injector_hidden_channels=32 if tiny else 768, injector_groups=16,
                injection_blocks=(0,))


def text_encoder_config(tiny: bool, vocab_size: int) -> dict[str, Any]:
    """UMT5-XXL encoder sizes (about 5.7B parameters), or a CPU-sized copy with the same vocabulary."""
    if tiny:
        return dict(vocab_size=vocab_size, d_model=64, d_kv=8, d_ff=128, num_layers=2, num_heads=8,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu")
    return dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                feed_forward_proj="gated-gelu")


def vae_config(tiny: bool) -> dict[str, Any]:
    """Wan2.2 VAE (48 latent channels, 4x16x16), or a CPU-sized copy of the same shape family."""
    base = dict(z_dim=48, is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_temporal=4,
                scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
    if tiny:
        return dict(base, base_dim=8, decoder_base_dim=8, num_res_blocks=1, dim_mult=[1, 2, 2, 2])
    return dict(base, base_dim=160, decoder_base_dim=256)


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(factory: Callable[[], torch.nn.Module], device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Construct a model directly on ``device`` in ``dtype`` (no 20 GB fp32 detour on the CPU).

    Tensors that diffusers' loader keeps in float32 (``_keep_in_fp32_modules`` of a diffusers
    model) are upcast, as ``from_pretrained(dtype=...)`` leaves them, so timings match a loaded
    bundle. (transformers applies its own list only for float16, so the text encoder stays bf16.)
    """
    from diffusers import ModelMixin

    with torch.device(device), default_dtype(dtype):
        model = factory()
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ()) if isinstance(model, ModelMixin) else set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if keep & set(name.split(".")) and tensor.is_floating_point():
            tensor.data = tensor.data.float()
    return model.eval().requires_grad_(False)


def randomize_(module: torch.nn.Module, std: float = 0.02, seed: int = 0) -> None:
    """Non-zero random values for every parameter (zero-initialised layers would hide work)."""
    generator = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std, generator=generator)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """(seconds, result) of one call, the device synchronised on both sides."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float | None:
    """Peak allocated GPU memory since the last reset, in GB (1e9 bytes); None on the CPU."""
    return torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None


def allocated_gb(device: str) -> float | None:
    return torch.cuda.memory_allocated() / 1e9 if device.startswith("cuda") else None


def environment(device: str) -> dict[str, Any]:
    """Device, software versions and date, stored with every result file."""
    import diffusers
    import transformers

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    multiprocessors=props.multi_processor_count)
    else:
        info.update(gpu=None, cpu=platform.processor() or platform.machine())
    return info


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically, so a run cut short never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"
