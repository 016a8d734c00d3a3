"""Anchor synthesis for detail training: a high-resolution clip degraded to what an anchor looks like.

SPEC.md 7: area downsample by a random factor in [8, 16], resize to the anchor size (448x256),
Gaussian blur with kernel 7 or 9 and sigma in [3, 4.3]; the caller then VAE-encodes the result and
resizes the latent to the token grid. Those numbers are for 2560-wide clips and 448-wide anchors;
``scaled_degradation`` keeps the same proportions at other sizes (the tiny preset's 448 -> 224).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

RELEASE_DETAIL_WIDTH = 2560
RELEASE_ANCHOR_WIDTH = 448
RELEASE_FACTOR = (8.0, 16.0)
RELEASE_KERNELS = (7, 9)
RELEASE_SIGMA = (3.0, 4.3)


@dataclass(frozen=True)
class Degradation:
    """Ranges of the random degradation: downsample factor, blur kernel sizes, blur sigma (anchor pixels)."""

    factor: tuple[float, float]
    kernels: tuple[int, ...]
    sigma: tuple[float, float]


def scaled_degradation(detail_width: int, anchor_width: int, release_factor: bool = False) -> Degradation:
    """SPEC.md 7's degradation at other sizes.

    The downsample factor scales with the detail/anchor width ratio (so the blurred clip carries
    the same share of the anchor's resolution), or with ``release_factor`` stays SPEC.md's [8, 16]
    of the detail clip (so the anchor carries as little of the detail's fine texture as at 2K);
    blur sigma and kernel scale with the anchor width. At 2560 -> 448 both are the release numbers.
    """
    ratio = 1.0 if release_factor else (detail_width / anchor_width) / (RELEASE_DETAIL_WIDTH / RELEASE_ANCHOR_WIDTH)
    blur = anchor_width / RELEASE_ANCHOR_WIDTH
    kernels = tuple(sorted({max(3, 2 * round((k * blur - 1) / 2) + 1) for k in RELEASE_KERNELS}))
    return Degradation(
        factor=(RELEASE_FACTOR[0] * ratio, RELEASE_FACTOR[1] * ratio),
        kernels=kernels,
        sigma=(RELEASE_SIGMA[0] * blur, RELEASE_SIGMA[1] * blur),
    )


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def blur(frames: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) images, reflect-padded."""
    taps = gaussian_kernel(size, sigma).to(frames)
    channels = frames.shape[1]
    pad = size // 2
    x = F.pad(frames, (pad, pad, 0, 0), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    x = F.pad(x, (0, 0, pad, pad), mode="reflect")
    return F.conv2d(x, taps.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def degrade(
    video: torch.Tensor, anchor_size: tuple[int, int], degradation: Degradation, generator: torch.Generator
) -> torch.Tensor:
    """(B, 3, T, H, W) clips -> (B, 3, T, h, w) anchor-size clips, each with its own random degradation.

    ``anchor_size`` is (width, height). Draws from ``generator`` (CPU), so a seed fixes the result.
    """
    width, height = anchor_size
    out = []
    for clip in video:
        factor = float(torch.empty(1).uniform_(*degradation.factor, generator=generator))
        kernel = degradation.kernels[int(torch.randint(len(degradation.kernels), (1,), generator=generator))]
        sigma = float(torch.empty(1).uniform_(*degradation.sigma, generator=generator))
        frames = clip.transpose(0, 1).float()  # (T, 3, H, W)
        small = (max(1, round(frames.shape[-2] / factor)), max(1, round(frames.shape[-1] / factor)))
        frames = F.interpolate(frames, size=small, mode="area")
        frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)
        out.append(blur(frames, kernel, sigma).transpose(0, 1))
    return torch.stack(out).to(video.dtype)
