"""Latent-to-frames decoding, in one piece or in overlapping width chunks (SPEC.md section 6).

Chunks are decoded left to right over the full time axis and blended with cosine ramps over
each overlap (a weighted average whose weights sum to one). Finished columns are written to a
uint8 frame buffer at once, so at most one decoded chunk and one overlap strip are alive:
decode memory is set by the chunk, not the whole 4K video.
(diffusers' ``AutoencoderKLWan.enable_tiling`` tiles in 2D with linear blends; the method asks
for width chunks with cosine blends, so this is written here.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pixelwizard.decode_chunks import DECODE_OVERLAP, chunk_spans

DecodeFn = Callable[[torch.Tensor], torch.Tensor]  # latent (B,C,F,h,w) -> video (B,3,T,H,W) in [-1, 1]


def latent_stats(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (1, C, 1, 1, 1) from the VAE's config: latent = (raw - mean) / std."""
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
    return mean, std


def cosine_ramp(length: int, device: torch.device | None = None) -> torch.Tensor:
    """Weights rising from near 0 to near 1 over ``length`` columns; ramp + flip(ramp) == 1."""
    x = (torch.arange(length, device=device, dtype=torch.float32) + 0.5) / length
    return 0.5 - 0.5 * torch.cos(math.pi * x)


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8 on the CPU."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu()


def decode_frames(decode: DecodeFn, latent: torch.Tensor, *, chunks: int = 1, overlap: int = DECODE_OVERLAP) -> torch.Tensor:
    """Decode one latent (1, C, F, h, w) to uint8 frames (T, H, W, 3) on the CPU."""
    if latent.shape[0] != 1:
        raise ValueError("decode one video at a time")
    spans = chunk_spans(latent.shape[-1], chunks, overlap)
    if len(spans) == 1:
        return to_uint8_frames(decode(latent)[0])

    frames: torch.Tensor | None = None
    pending: torch.Tensor | None = None  # weighted right strip of the previous chunk, not yet final
    scale = 0
    for i, (start, end) in enumerate(spans):
        video = decode(latent[..., start:end])[0].float()  # (3, T, H, cw)
        if frames is None:
            scale = video.shape[-1] // (end - start)
            frames = torch.empty((*video.shape[1:3], latent.shape[-1] * scale, 3), dtype=torch.uint8)
        left = 0 if i == 0 else (spans[i - 1][1] - start) * scale
        right = video.shape[-1] if i == len(spans) - 1 else (spans[i + 1][0] - start) * scale
        if pending is not None:
            ramp = cosine_ramp(left, video.device)
            video[..., :left] = pending + video[..., :left] * ramp
        frames[:, :, start * scale : start * scale + right] = to_uint8_frames(video[..., :right])
        if i < len(spans) - 1:
            strip = video[..., right:]
            pending = strip * cosine_ramp(strip.shape[-1], video.device).flip(0)
    assert frames is not None
    return frames
