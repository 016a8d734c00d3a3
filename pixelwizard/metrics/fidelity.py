"""Fidelity metrics for (T, H, W, 3) uint8 clips: PSNR, SSIM, HD-MSE (SPEC.md 8) and temporal flicker.

All take frames as the pipeline returns them and compute in float64 on values scaled to [0, 1]
(PSNR and SSIM use the usual 8-bit constants on that scale).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)
HD_MSE_LEVELS = (3, 4, 5)  # downsample factors 2^k, SPEC.md 8


def _unit(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float64 in [0, 1]."""
    return frames.permute(0, 3, 1, 2).to(torch.float64) / 255.0


def psnr(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """10 log10(1 / MSE) over the whole clip, values in [0, 1]; inf for identical clips."""
    mse = (_unit(frames) - _unit(reference)).pow(2).mean()
    return float("inf") if mse == 0 else float(10 * torch.log10(1 / mse))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5, K = 0.01, 0.03) over frames and RGB channels.

    SSIM = (2 mu_x mu_y + C1)(2 cov + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2)),
    statistics from the Gaussian window, valid positions only (no padding).
    """
    x, y = _unit(frames), _unit(reference)
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    channels = x.shape[1]
    horizontal = g.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = g.view(1, 1, -1, 1).expand(channels, 1, -1, 1)

    def filt(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(v, horizontal, groups=channels), vertical, groups=channels)

    c1, c2 = SSIM_K[0] ** 2, SSIM_K[1] ** 2
    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def hd_mse(frames: torch.Tensor) -> float:
    """SPEC.md 8: sum over k = 3, 4, 5 of MSE(v, upsample(downsample(v, 2^k))); higher = more fine detail.

    Downsampling is area averaging, upsampling bilinear, per frame, values in [0, 1].
    """
    v = _unit(frames)
    total = 0.0
    for k in HD_MSE_LEVELS:
        factor = 2**k
        small = F.avg_pool2d(v, factor, ceil_mode=True)
        back = F.interpolate(small, size=v.shape[-2:], mode="bilinear", align_corners=False)
        total += float((v - back).pow(2).mean())
    return total


def temporal_flicker(frames: torch.Tensor) -> float:
    """Mean |x_{t+1} - 2 x_t + x_{t-1}| over the clip, values in [0, 1].

    The second temporal difference vanishes for still content and smooth change, and grows with
    frame-to-frame jitter; moving edges add to it too, so compare with the reference clip's value.
    """
    v = _unit(frames)
    if v.shape[0] < 3:
        return 0.0
    return float((v[2:] - 2 * v[1:-1] + v[:-2]).abs().mean())
