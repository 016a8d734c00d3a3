"""Training loops: VAE reconstruction, anchor flow matching, detail flow matching + shortcut (SPEC.md 7).

Each trainer updates one module in place and returns its loss history; saving is the caller's
job (``pixelwizard.bundle.write_bundle``). Runs one process or several under torch.distributed: the
gradients and the calibration mean are then averaged over all ranks, and the flow-matching /
self-consistency choice is drawn from a generator every rank seeds alike.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from pixelwizard.training.captions import CaptionEmbeddings
from pixelwizard.training.config import TrainConfig, VaeLossConfig
from pixelwizard.training.datasets import ClipSource
from pixelwizard.training.latents import LatentCache, area_resize, resize_latent
from pixelwizard.training.objectives import (
    bell_weight,
    calibration_weights,
    cfg_dropout,
    flow_target,
    mix_anchors,
    noisy,
    object_weights,
    sample_fm_timesteps,
    sample_shortcut_steps,
    teacher_target,
    timestep_grid,
    weighted_mse,
)

Log = Callable[[str], None]
# loss_fn(step) -> (loss, kind); kind names the loss in the history ("fm", "sc", "vae").
LossFn = Callable[[int], tuple[torch.Tensor, str]]
# snapshot(steps): saves the model as it stands (the caller knows where); run_loop calls it every cfg.snapshot_every s.
Snapshot = Callable[[int], None]


@dataclass
class TrainResult:
    """What a run did: steps taken, wall time, and mean losses per kind over each log interval."""

    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def autocast(device: torch.device):
    """bf16 autocast on a GPU (SPEC.md 7), plain float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compiled(module: torch.nn.Module, cfg: TrainConfig) -> Callable[..., object]:
    """The module's forward, through ``torch.compile`` in ``cfg.compile``'s mode unless "off" (same parameters, fused kernels)."""
    return module if cfg.compile == "off" else torch.compile(module, mode=cfg.compile)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class Ema:
    """Exponential moving average of parameters, kept in float32; copied into the model at the end."""

    def __init__(self, params: Iterable[torch.nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.params = list(params)
        self.shadow = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        # One fused kernel per device for all parameters rather than one lerp launch each.
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1 - self.decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for shadow, p in zip(self.shadow, self.params):
            p.copy_(shadow)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the block (a snapshot saves what the run would), then the live ones back."""
        live = [p.detach().clone() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for saved, p in zip(live, self.params):
                    p.copy_(saved)


def _sync_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks (a no-op in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _agreed_elapsed(seconds: float, device: torch.device) -> float:
    """The largest elapsed time over all ranks, so that every rank takes the same learning rate and stops at the same step."""
    if not (dist.is_available() and dist.is_initialized()):
        return seconds
    value = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value)


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over ``warmup_steps``, then constant or cosine to 0 as ``progress`` goes 0 -> 1."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_decay == "cosine":
        warm *= 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * warm


def run_loop(loss_fn: LossFn, params: list[torch.nn.Parameter], cfg: TrainConfig, log: Log,
             snapshot: Snapshot | None = None) -> TrainResult:
    """AdamW (SPEC.md 7 settings from ``cfg``), linear warmup, grad clipping, optional EMA, time limit.

    With ``snapshot`` and ``cfg.snapshot_every``, the weights the run would save (EMA ones if on) are
    handed to ``snapshot`` at that interval, so a run whose machine is lost still leaves its latest state.
    """
    fused = all(p.is_cuda for p in params)  # the fused CUDA AdamW: one launch for all parameters
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused)
    ema = Ema(params, cfg.ema) if cfg.ema > 0 else None
    start = time.monotonic()
    window: dict[str, list[torch.Tensor]] = {}
    history: list[dict[str, float]] = []
    done = 0
    last_snapshot = start
    for step in range(cfg.steps):
        progress = step / cfg.steps
        if cfg.max_seconds is not None:  # a timed run ends at whichever limit comes first
            elapsed = _agreed_elapsed(time.monotonic() - start, params[0].device)
            if elapsed > cfg.max_seconds:
                break
            progress = max(progress, elapsed / cfg.max_seconds)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, progress)
        loss, kind = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _sync_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update()
        window.setdefault(kind, []).append(loss.detach())
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            entry = {"step": float(done), "seconds": round(time.monotonic() - start, 2)}
            entry |= {k: torch.stack(v).mean().item() for k, v in window.items()}
            history.append(entry)
            window = {}
            if rank() == 0:
                log(" ".join(f"{k}={v:.4g}" for k, v in entry.items()))
        due = snapshot is not None and cfg.snapshot_every is not None and time.monotonic() - last_snapshot >= cfg.snapshot_every
        if due and not diverged(history) and bool(torch.isfinite(loss.detach())):  # a NaN run keeps its last good one
            with ema.applied() if ema is not None else contextlib.nullcontext():
                snapshot(done)
            last_snapshot = time.monotonic()
    if ema is not None:
        ema.copy_to_model()
    return TrainResult(steps=done, seconds=time.monotonic() - start, history=history)


def diverged(history: list[dict[str, float]]) -> dict[str, float]:
    """The losses of the latest logged entry that are not finite numbers; empty while training is sound."""
    last = history[-1] if history else {}
    return {name: value for name, value in last.items() if isinstance(value, float) and not math.isfinite(value)}


def _random_crop(video: torch.Tensor, crop: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    height, width = min(crop[0], video.shape[-2]), min(crop[1], video.shape[-1])
    top = int(torch.randint(video.shape[-2] - height + 1, (1,), generator=generator))
    left = int(torch.randint(video.shape[-1] - width + 1, (1,), generator=generator))
    return video[..., top : top + height, left : left + width]


def _edge_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical pixel differences of two videos (keeps edges sharp)."""
    return sum((torch.diff(a, dim=d) - torch.diff(b, dim=d)).abs().mean() for d in (-1, -2))


def _rescaled(video: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 3, T, H, W) clips area-resized by ``scale``, each side kept a multiple of 16 (what the VAE takes)."""
    if scale == 1.0:
        return video
    height, width = (max(16, round(side * scale / 16) * 16) for side in video.shape[-2:])
    return area_resize(video, (width, height))


def train_vae(vae, source: ClipSource, cfg: TrainConfig, loss_cfg: VaeLossConfig, log: Log) -> TrainResult:
    """Reconstruction training of the VAE on random crops: L1 + edge L1 + a small KL, sampled posterior.

    Each step draws one of ``loss_cfg.scales`` and area-resizes its clips by it before the crop.
    """
    device = vae.device
    generator = torch.Generator().manual_seed(cfg.seed + rank())
    noise_generator = torch.Generator(device).manual_seed(cfg.seed + rank())
    vae.train().requires_grad_(True)

    def loss_fn(step: int) -> tuple[torch.Tensor, str]:
        indices = torch.randint(len(source), (cfg.batch_size,), generator=generator).tolist()
        scale = loss_cfg.scales[0]
        if len(loss_cfg.scales) > 1:  # one scale draws nothing, so a run without --scales repeats earlier ones exactly
            scale = loss_cfg.scales[int(torch.randint(len(loss_cfg.scales), (1,), generator=generator))]
        video = _random_crop(_rescaled(source.clips(indices, device), scale), loss_cfg.crop, generator)
        with autocast(device):
            posterior = vae.encode(video).latent_dist
            eps = torch.randn(posterior.mean.shape, generator=noise_generator, device=device, dtype=posterior.mean.dtype)
            z = posterior.mean + posterior.std * eps
            recon = vae.decode(z).sample.float()
        mean, logvar = posterior.mean.float(), posterior.logvar.float()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = (recon - video).abs().mean() + loss_cfg.edge_weight * _edge_l1(recon, video) + loss_cfg.kl_weight * kl
        return loss, "vae"

    result = run_loop(loss_fn, [p for p in vae.parameters()], cfg, log)
    vae.eval().requires_grad_(False)
    return result


def _batch(cache: LatentCache, indices: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    return getattr(cache, name)[indices.to(getattr(cache, name).device)].to(device).float()


def _require_masks(cfg: TrainConfig, cache: LatentCache) -> None:
    """An object or outline weight reads the object masks that only synthetic latent caches have."""
    if cfg.weights_object and cache.anchor_masks is None:
        raise ValueError("an object or outline weight needs object masks, which only synthetic latent caches have")


def train_anchor(transformer, cache: LatentCache, text: CaptionEmbeddings, cfg: TrainConfig, log: Log,
                 snapshot: Snapshot | None = None) -> TrainResult:
    """Plain flow matching of the anchor (base) model on clean anchor-size latents, prompt dropout.

    With ``cfg.object_weight`` or ``cfg.outline_weight`` > 0 each latent cell's error is weighted by the
    object's coverage of it (the cache's ``anchor_masks``; ``object_weights``): the object is a small part of
    the frame, and without the weight a small model learns the background first. A trainable ``text`` trains
    the text encoder with the same loss (the tiny bundle's encoder has no pretraining to keep).
    """
    device = transformer.device
    _require_masks(cfg, cache)
    grid = timestep_grid(cfg.shift)
    generator = torch.Generator().manual_seed(cfg.seed + rank())
    noise_generator = torch.Generator(device).manual_seed(cfg.seed + rank())
    transformer.train().requires_grad_(True)
    text.train()
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()

    forward = compiled(transformer, cfg)

    def loss_fn(step: int) -> tuple[torch.Tensor, str]:
        indices = torch.randint(len(cache), (cfg.batch_size,), generator=generator)
        x0 = _batch(cache, indices, "anchors", device)
        embeds, empty = text(indices)
        embeds, _, _ = cfg_dropout(embeds.to(device), None, empty.to(device), cfg.cfg_dropout, generator)
        t = sample_fm_timesteps(cfg.batch_size, grid, generator)
        noise = torch.randn(x0.shape, generator=noise_generator, device=device)
        with autocast(device):
            pred = forward(noisy(x0, noise, t.to(device)), t.to(device), embeds, return_dict=False)[0]
        element = None
        if cfg.weights_object:
            element = object_weights(_batch(cache, indices, "anchor_masks", device), cfg.object_weight,
                                     cfg.outline_weight)
        return weighted_mse(pred, flow_target(x0, noise), bell_weight(t, grid).to(device), element), "fm"

    result = run_loop(loss_fn, [*transformer.parameters(), *text.parameters()], cfg, log, snapshot)
    transformer.eval().requires_grad_(False)
    text.train(False)
    return result


def detail_parameters(detail, adapter_only: bool, flow_matching_only: bool) -> list[torch.nn.Parameter]:
    """What detail training updates: everything, or only the anchor injector and dt embedding (SPEC.md 7).

    Flow matching only (dt = 0 always) leaves the dt-dependent weights (the dt embedding and the
    injector's dt gate) as they are: trained at dt = 0 alone they would learn a constant that is
    wrong at every dt > 0, and a zero-initialised model would lose its dt-independence, which is
    what shortcut training starts from (docs/training.md, "What did not go well").
    """
    params = list(detail.parameters()) if not adapter_only else (
        list(detail.anchor_injector.parameters()) + list(detail.dt_embedder.parameters()))
    if not flow_matching_only:
        return params
    dt_dependent = {id(p) for p in [*detail.dt_embedder.parameters(), *detail.anchor_injector.gate_dt.parameters()]}
    return [p for p in params if id(p) not in dt_dependent]


def train_detail(detail, cache: LatentCache, text: CaptionEmbeddings, cfg: TrainConfig, log: Log,
                 snapshot: Snapshot | None = None) -> TrainResult:
    """Flow matching (dt = 0) mixed with self-consistency shortcut steps, SPEC.md 7.

    Each iteration is a self-consistency step for the whole batch with probability
    ``cfg.shortcut.sc_prob`` (0 gives plain flow matching, the warm start and the baseline), its
    loss scaled by ``cfg.shortcut.sc_weight`` (the history logs the scaled loss). ``cfg.clean_anchor_prob``
    conditions that share of samples on the clean anchor-size latent instead of the synthesised anchor, then
    ``cfg.counterfactual_anchor_prob`` that share on the cache's counterfactual anchor (the object in another
    shape; the caption and the target unchanged); ``cfg.object_weight`` and ``cfg.outline_weight`` weight the object's latent
    cells as in ``train_anchor``.
    """
    sc = cfg.shortcut
    device = detail.device
    _require_masks(cfg, cache)
    if cfg.counterfactual_anchor_prob > 0 and cache.counterfactual is None:
        raise ValueError("counterfactual anchors need a latent cache made with 'pixelwizard train encode --counterfactual-anchors'")
    grid = timestep_grid(cfg.shift)
    mode_generator = torch.Generator().manual_seed(cfg.seed)  # identical on every rank
    generator = torch.Generator().manual_seed(cfg.seed + 1 + rank())
    noise_generator = torch.Generator(device).manual_seed(cfg.seed + 1 + rank())
    params = detail_parameters(detail, cfg.adapter_only, flow_matching_only=sc.sc_prob == 0)
    detail.train().requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    if cfg.gradient_checkpointing:
        detail.enable_gradient_checkpointing()
    forward = compiled(detail, cfg)

    def loss_fn(step: int) -> tuple[torch.Tensor, str]:
        self_consistency = float(torch.rand(1, generator=mode_generator)) < sc.sc_prob
        indices = torch.randint(len(cache), (cfg.batch_size,), generator=generator)
        x0 = _batch(cache, indices, "latents", device)
        embeds, empty = text(indices)
        anchor = _batch(cache, indices, "degraded", device)
        if cfg.clean_anchor_prob > 0:
            clean = resize_latent(_batch(cache, indices, "anchors", device), tuple(anchor.shape[-2:]))
            anchor = mix_anchors(anchor, clean, cfg.clean_anchor_prob, generator)
        if cfg.counterfactual_anchor_prob > 0:
            other = resize_latent(_batch(cache, indices, "counterfactual", device), tuple(anchor.shape[-2:]))
            anchor = mix_anchors(anchor, other, cfg.counterfactual_anchor_prob, generator)
        embeds, anchor, _ = cfg_dropout(embeds.to(device), anchor, empty.to(device), cfg.cfg_dropout, generator)
        element = None
        if cfg.weights_object:
            mask = torch.nn.functional.interpolate(_batch(cache, indices, "anchor_masks", device), size=x0.shape[2:])
            element = object_weights(mask, cfg.object_weight, cfg.outline_weight)
        noise = torch.randn(x0.shape, generator=noise_generator, device=device)

        def velocity(x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
            with autocast(device):
                return forward(x, t, embeds, dt=dt, anchor=anchor, return_dict=False)[0].float()

        if not self_consistency:
            t = sample_fm_timesteps(cfg.batch_size, grid, generator).to(device)
            pred = velocity(noisy(x0, noise, t), t, torch.zeros_like(t))
            return weighted_mse(pred, flow_target(x0, noise), bell_weight(t, grid.to(device)), element), "fm"
        t, dt = sample_shortcut_steps(
            cfg.batch_size, sc.starts, grid, generator,
            levels=sc.levels, lam=sc.lam, k_sampling=sc.k_sampling, dt_grid_kind=sc.dt_grid,
        )
        t, dt = t.to(device), dt.to(device)
        x_t = noisy(x0, noise, t)
        with torch.no_grad():
            target = teacher_target(velocity, x_t, t, dt)
        pred = velocity(x_t, t, dt)
        weights = calibration_weights(t, dt, sc.calibration_power, sc.calibration_clamp) if sc.calibration else torch.ones_like(t)
        return sc.sc_weight * weighted_mse(pred, target, weights, element), "sc"

    result = run_loop(loss_fn, params, cfg, log, snapshot)
    detail.eval().requires_grad_(False)
    return result
