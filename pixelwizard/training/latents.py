"""Encoded training data: clips turned once into normalised VAE latents and anchors, with their captions.

The anchor and detail trainers only need latents, so clips are rendered (or decoded) and encoded
once into a ``LatentCache``; training steps then only run the transformer. Captions are embedded
at training time by the bundle being trained (``pixelwizard.training.captions``).
"""

from __future__ import annotations

import os
import time
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from pixelwizard.decoding import latent_stats
from pixelwizard.training.datasets import ClipSource
from pixelwizard.training.degrade import Degradation, degrade


@torch.no_grad()
def encode_clips(vae, video: torch.Tensor) -> torch.Tensor:
    """Normalised latents (posterior mode) of (B, 3, T, H, W) clips in [-1, 1]; what the pipeline decodes."""
    mean, std = latent_stats(vae)
    raw = vae.encode(video.to(vae.device, vae.dtype)).latent_dist.mode().float()
    return (raw - mean.to(raw.device)) / std.to(raw.device)


@torch.no_grad()
def set_latent_stats(vae, videos: torch.Tensor, batch: int = 8) -> None:
    """Measure per-channel latent mean/std on ``videos`` and store them in the VAE's config."""
    raw = torch.cat(
        [vae.encode(v.to(vae.device, vae.dtype)).latent_dist.mode().float() for v in videos.split(batch)]
    )
    mean = raw.mean(dim=(0, 2, 3, 4))
    std = raw.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())


def resize_latent(latent: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a (B, C, F, h, w) latent, frame by frame, to (height, width) = ``size``."""
    if tuple(latent.shape[-2:]) == tuple(size):
        return latent
    batch, channels, frames = latent.shape[:3]
    flat = latent.permute(0, 2, 1, 3, 4).flatten(0, 1)
    flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return flat.unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4)


def latent_grid_mask(mask: torch.Tensor, grid: tuple[int, int, int], temporal: int) -> torch.Tensor:
    """(B, frames, H, W) pixel coverage -> (B, 1, F, h, w) on a causal VAE's latent grid.

    Latent frame 0 holds pixel frame 0 and latent frame j the ``temporal`` frames ending at
    ``temporal * j`` (the Wan VAE's causal grouping); a latent cell takes the largest coverage
    over its frames and the mean over its pixels.
    """
    frames, height, width = grid
    groups = [mask[:, :1]] + [mask[:, temporal * j - temporal + 1 : temporal * j + 1] for j in range(1, frames)]
    pooled = torch.stack([g.amax(dim=1) for g in groups], dim=1)  # (B, F, H, W)
    return F.adaptive_avg_pool2d(pooled, (height, width)).unsqueeze(1)


def area_resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, T, H, W) clips area-resized to (width, height) = ``size``: the clean anchor-size clip."""
    batch, frames = video.shape[0], video.shape[2]
    flat = F.interpolate(video.transpose(1, 2).flatten(0, 1), size=size[::-1], mode="area")
    return flat.unflatten(0, (batch, frames)).transpose(1, 2)


@dataclass
class LatentCache:
    """Encoded clips: detail latents, clean anchor latents, synthesised anchors and captions."""

    latents: torch.Tensor  # (N, C, F, h, w) detail-size latents
    anchors: torch.Tensor  # (N, C, F, ha, wa) latents of the clean anchor-size clip (anchor model data)
    degraded: torch.Tensor  # (N, C, F, gh, gw) synthesised anchors on the detail token grid (SPEC.md 7)
    captions: list[str]
    anchor_masks: torch.Tensor | None = None  # (N, 1, F, ha, wa) object coverage on the anchor latent grid (synthetic data)
    counterfactual: torch.Tensor | None = None  # like ``anchors``, the object in another shape (synthetic data, on request)

    def __len__(self) -> int:
        return len(self.captions)

    def to(self, device: torch.device | str) -> "LatentCache":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return LatentCache(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            torch.save({f.name: getattr(self, f.name) for f in fields(self)}, tmp)
            os.replace(tmp, path)
        except BaseException:  # a full disk or a stop: no partial file is left beside the cache
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatentCache":
        """Read a cache; an unreadable file or one written with other fields (an older version) is a ``ValueError``."""
        return cls(**_read_fields(path, mmap=False))

    @classmethod
    def check_replaceable(cls, path: str | os.PathLike) -> None:
        """A ``ValueError`` unless a cache may be written at ``path``: nothing there yet, or a latent cache (its
        tensors mapped, not read), so that writing a cache never replaces any other file."""
        if not os.path.lexists(path):
            return
        if not os.path.isfile(path):  # a FIFO or a device would block the read, or be consumed by it
            raise ValueError(f"{path} exists and is not a latent cache; refusing to replace it")
        try:
            _read_fields(path, mmap=True)
        except ValueError:
            raise ValueError(f"{path} exists and is not a latent cache; refusing to replace it") from None


def _read_fields(path: str | os.PathLike, *, mmap: bool) -> dict:
    """A cache file's fields; a ``ValueError`` for a file that is not a cache of this version."""
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # unpickling arbitrary bytes fails in many ways (KeyError, UnpicklingError, ...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason.startswith("Weights only load failed"):  # torch's advice to load it unsafely is not ours to give
            reason = "it holds objects other than tensors and plain values, which are never loaded"
        raise ValueError(f"{path} is not a readable latent cache ({reason})") from None
    required = {f.name for f in fields(LatentCache) if f.default is MISSING}
    if not isinstance(stored, dict) or not required <= set(stored) <= {f.name for f in fields(LatentCache)}:
        raise ValueError(f"{path} is not a latent cache of this version; make it again with 'pixelwizard train encode'")
    return stored


@torch.no_grad()
def build_latent_cache(
    pipe,
    source: ClipSource,
    *,
    count: int,
    anchor_size: tuple[int, int],
    degradation: Degradation,
    seed: int,
    batch: int = 16,
    max_seconds: float | None = None,
    counterfactual: bool = False,
) -> LatentCache:
    """Encode the first ``count`` clips of ``source`` (wrapping round) for anchor and detail training.

    ``anchor_size`` is (width, height). The synthesised anchor follows SPEC.md 7: degrade, encode
    at the anchor size, resize in latent space to the detail model's token grid. With
    ``max_seconds``, encoding stops after the batch that crosses that time (fewer clips).
    ``counterfactual`` also encodes each clip's counterfactual anchor (``SyntheticClips.counterfactual_clips``).
    """
    started = time.monotonic()
    vae = pipe.vae
    patch = pipe.detail_transformer.config.patch_size
    generator = torch.Generator().manual_seed(seed)
    latents, anchors, degraded, masks, others, captions = [], [], [], [], [], []
    object_masks = getattr(source, "object_masks", None)
    if counterfactual and not hasattr(source, "counterfactual_clips"):
        raise ValueError("encoding counterfactual anchors needs synthetic data (it redraws the scene), "
                         f"not {type(source).__name__}")
    indices = [i % len(source) for i in range(count)]
    for start in range(0, count, batch):
        chunk = indices[start : start + batch]
        video = source.clips(chunk, vae.device).float()
        detail = encode_clips(vae, video)
        grid = (detail.shape[-2] // patch[1], detail.shape[-1] // patch[2])
        synthetic = encode_clips(vae, degrade(video, anchor_size, degradation, generator))
        latents.append(detail.half().cpu())
        anchors.append(encode_clips(vae, area_resize(video, anchor_size)).half().cpu())
        if object_masks is not None:
            cover = object_masks(chunk, *anchor_size, vae.device)
            masks.append(latent_grid_mask(cover, anchors[-1].shape[2:], vae.config.scale_factor_temporal).half().cpu())
        degraded.append(resize_latent(synthetic, grid).half().cpu())
        if counterfactual:
            other = area_resize(source.counterfactual_clips(chunk, vae.device).float(), anchor_size)
            others.append(encode_clips(vae, other).half().cpu())
        captions += [source.caption(i) for i in chunk]
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            break
    return LatentCache(
        latents=torch.cat(latents),
        anchors=torch.cat(anchors),
        degraded=torch.cat(degraded),
        captions=captions,
        anchor_masks=torch.cat(masks) if masks else None,
        counterfactual=torch.cat(others) if others else None,
    )
