"""HD-FD: how far the distribution of a set of clips' local fine detail lies from the ground truth's.

SPEC.md 8's release ranks detail with HD-FVD, a Frechet distance of video-network features over
patches. No video network can be loaded here, so HD-FD takes weight-free features instead: for each
32x32 patch of each frame after the first, the log energy of five band-pass layers (detail at 1-2, 2-4,
... 16-32 px, built with SPEC.md 8's downsample-upsample pair) per colour channel, and the log energy of
each band's change in luma from the previous frame. A render that blurs the detail and one that draws too much both move
these features away from the truth's, while an independent draw of the same random texture does not.
That is what PSNR against one ground-truth clip cannot see: for detail that the anchor and caption do
not fix, it rewards the blurred mean over a correct draw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BANDS = 5  # band k holds the detail between 2^(k-1) and 2^k px
PATCH = 32  # px, the coarsest band's scale
ENERGY_FLOOR = 1e-6  # about 8-bit quantisation noise's variance ((1/255)^2 / 12), so flat patches stay finite
FEATURES = BANDS * 4  # per band: three colour channels, one temporal


def detail_features(frames: torch.Tensor) -> torch.Tensor:
    """(N, 20) float64 features of a (T, H, W, 3) uint8 clip: one row per 32x32 patch of frames 1..T-1."""
    if frames.shape[0] < 2:
        raise ValueError(f"HD-FD needs at least 2 frames, got {frames.shape[0]}")
    v = frames.permute(0, 3, 1, 2).to(torch.float64) / 255.0
    levels = [v] + [
        F.interpolate(F.avg_pool2d(v, 2**k, ceil_mode=True), size=v.shape[-2:], mode="bilinear", align_corners=False)
        for k in range(1, BANDS + 1)
    ]
    energies = []
    for fine, coarse in zip(levels, levels[1:]):
        band = fine - coarse
        luma = band.mean(1, keepdim=True)
        energies += [band[1:].pow(2), (luma[1:] - luma[:-1]).pow(2)]
    pooled = F.avg_pool2d(torch.cat(energies, 1), PATCH, ceil_mode=True)
    return torch.log(pooled + ENERGY_FLOOR).permute(0, 2, 3, 1).reshape(-1, FEATURES)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance of Gaussians fitted to the rows of ``a`` and ``b`` (N, D):

    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), the last term equal to
    tr((S_a S_b)^1/2) and computed through symmetric eigendecompositions.
    """
    if min(a.shape[0], b.shape[0]) < 2 or a.shape[1] < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"Frechet distance needs two sets of at least 2 rows of the same width >= 2, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.to(torch.float64), b.to(torch.float64)
    mean = (a.mean(0) - b.mean(0)).pow(2).sum()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root = _sqrt_psd(cov_a)
    cross = torch.linalg.eigvalsh(root @ cov_b @ root).clamp(min=0).sqrt().sum()
    return max(float(mean + cov_a.trace() + cov_b.trace() - 2 * cross), 0.0)  # rounding can dip below 0


def hd_fd(clips: list[torch.Tensor], references: list[torch.Tensor]) -> float:
    """HD-FD of a set of (T, H, W, 3) uint8 clips against reference clips; 0 for the same distribution."""
    return frechet_distance(torch.cat([detail_features(c) for c in clips]),
                            torch.cat([detail_features(c) for c in references]))
