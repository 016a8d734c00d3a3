"""The training objective of SPEC.md section 7, as small functions checkable against its formulas.

Conventions (SPEC.md 2 and 5): x_t = (1 - s) x_0 + s * noise with s = t / 1000, the model predicts
v = noise - x_0, and the timestep t and the step size dt that the model sees are on the same
0..1000 scale the sampler uses, so what is trained is what is sampled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from pixelwizard.sampling import NUM_TRAIN_TIMESTEPS, dt_grid, shift_sigma

# velocity(x, t, dt) -> v, with t and dt of shape (B,) on the 0..1000 scale.
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sigma_of(t: torch.Tensor | float) -> torch.Tensor | float:
    """The noise level s of timestep t (SPEC.md 2: t = 1000 s)."""
    return t / NUM_TRAIN_TIMESTEPS


def timestep_grid(shift: float, steps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The shifted schedule's timesteps t_i = 1000 shift_sigma(i / steps), i = 1..steps (SPEC.md 7)."""
    return torch.tensor([NUM_TRAIN_TIMESTEPS * shift_sigma(i / steps, shift) for i in range(1, steps + 1)])


def sample_fm_timesteps(batch: int, grid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """t uniform over the grid's entries (SPEC.md 7, flow-matching steps)."""
    return grid[torch.randint(len(grid), (batch,), generator=generator)]


def bell_weight(t: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bell-shaped loss weight over t: exp(-2 ((t - 500) / 1000)^2), scaled to mean 1 over the grid.

    SPEC.md 7 asks for a bell over t without fixing it; this is the Gaussian that Wan-style
    trainers use, without their subtraction of the minimum (which gives t = 1000 a zero weight,
    and a model trained from scratch must learn the pure-noise end too).
    """

    def bell(x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-2 * ((x - NUM_TRAIN_TIMESTEPS / 2) / NUM_TRAIN_TIMESTEPS) ** 2)

    return bell(t) / bell(grid).mean()


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like)


def noisy(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - s) x_0 + s noise (SPEC.md 2)."""
    s = _per_sample(sigma_of(t), x0)
    return (1 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching velocity target v = noise - x_0 (SPEC.md 2)."""
    return noise - x0


def weighted_mse(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, element_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """mean_i w_i * sum(e_i (pred_i - target_i)^2) / sum(e_i): per-sample weights w, optional element weights e.

    ``element_weights`` broadcasts against ``pred`` (e.g. (B, 1, F, h, w) over channels); without it
    e = 1 and this is mean_i w_i * mean((pred_i - target_i)^2).
    """
    squared = (pred.float() - target.float()).pow(2)
    if element_weights is None:
        per_sample = squared.flatten(1).mean(1)
    else:
        e = element_weights.float().expand_as(squared)
        per_sample = (e * squared).flatten(1).sum(1) / e.flatten(1).sum(1)
    return (weights.to(per_sample) * per_sample).mean()


def object_weights(mask: torch.Tensor, object_weight: float, outline_weight: float = 0.0) -> torch.Tensor:
    """1 + object_weight * c + outline_weight * 4c(1 - c) for each cell's object coverage c.

    The first term weights where the object is (synthetic data knows its mask); the second peaks at
    1 on cells the object half covers, its outline, which is what tells a star from a circle a few
    latent cells wide and what a plain object weight leaves to the least-weighted cells.
    """
    c = mask.float()
    return 1.0 + object_weight * c + outline_weight * 4 * c * (1 - c)


def dt_candidates(start: float, levels: int, grid: str = "aligned") -> list[tuple[int, int]]:
    """(k, dt_k) pairs a self-consistency step from ``start`` may take (SPEC.md 7, step 2).

    "aligned" (noise-span aligned): dt_k = floor(T / 2^k), even, >= 2, k = 0..levels-1, so k = 0
    jumps from T to 0. "fixed" (the ablation): dt_k = floor(1000 / 2^k), even, kept where dt_k <= T.
    """
    if grid == "aligned":
        return list(enumerate(dt_grid(start, levels)))
    if grid == "fixed":
        return [(k, dt) for k, dt in enumerate(dt_grid(NUM_TRAIN_TIMESTEPS, levels)) if dt <= start]
    raise ValueError(f"unknown dt grid {grid!r}; choose aligned or fixed")


def dt_probabilities(ks: Sequence[int], lam: float, sampling: str = "exponential") -> list[float]:
    """P(k) proportional to exp(-lam k) (exponential index-biased sampling, SPEC.md 7 step 3) or uniform."""
    if sampling == "exponential":
        raw = [math.exp(-lam * k) for k in ks]
    elif sampling == "uniform":
        raw = [1.0 for _ in ks]
    else:
        raise ValueError(f"unknown k sampling {sampling!r}; choose exponential or uniform")
    total = sum(raw)
    return [r / total for r in raw]


def snap_to_grid(value: float, grid: torch.Tensor) -> float:
    """The grid entry nearest ``value`` (SPEC.md 7 step 1: starts are snapped to the schedule)."""
    return float(grid[(grid - value).abs().argmin()])


def sample_shortcut_steps(
    batch: int,
    starts: Sequence[float],
    grid: torch.Tensor,
    generator: torch.Generator,
    *,
    levels: int,
    lam: float,
    k_sampling: str = "exponential",
    dt_grid_kind: str = "aligned",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample start T and step dt for a self-consistency step (SPEC.md 7 steps 1 to 3)."""
    t_out, dt_out = [], []
    for _ in range(batch):
        start = snap_to_grid(starts[int(torch.randint(len(starts), (1,), generator=generator))], grid)
        pairs = dt_candidates(start, levels, dt_grid_kind)
        probs = torch.tensor(dt_probabilities([k for k, _ in pairs], lam, k_sampling))
        choice = int(torch.multinomial(probs, 1, generator=generator))
        t_out.append(start)
        dt_out.append(float(pairs[choice][1]))
    return torch.tensor(t_out), torch.tensor(dt_out)


def teacher_target(velocity: VelocityFn, x_t: torch.Tensor, t: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """Two half steps of the model itself (SPEC.md 7 step 4): the self-consistency target.

    v1 = f(x_T, T, dt/2); x_mid = x_T + (s(T - dt/2) - s(T)) v1; v2 = f(x_mid, T - dt/2, dt/2);
    target = (v1 + v2) / 2. Call it under ``torch.no_grad()``.
    """
    half = dt / 2
    v1 = velocity(x_t, t, half)
    x_mid = x_t + _per_sample(sigma_of(t - half) - sigma_of(t), x_t) * v1
    v2 = velocity(x_mid, t - half, half)
    return (v1 + v2) / 2


def global_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over the global batch: summed over all ranks when torch.distributed is initialised."""
    import torch.distributed as dist

    total = torch.stack([values.sum(), torch.tensor(float(values.numel()), device=values.device)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    return total[0] / total[1]


def calibration_weights(
    t: torch.Tensor, dt: torch.Tensor, power: float = 0.5, clamp: tuple[float, float] = (0.1, 10.0)
) -> torch.Tensor:
    """Adaptive noise-span calibration (SPEC.md 7 step 6).

    w = clamp((|s(T - dt) - s(T)| / mean over the global batch)^power, lo, hi).
    """
    span = (sigma_of(t - dt) - sigma_of(t)).abs().float()
    return (span / global_mean(span)).pow(power).clamp(*clamp)


def cfg_dropout(
    embeds: torch.Tensor,
    anchor: torch.Tensor | None,
    empty: torch.Tensor,
    p: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Classifier-free-guidance dropout (SPEC.md 7): with probability p per sample, the prompt
    becomes the empty prompt's embedding and the anchor becomes zeros. Returns the dropped mask too."""
    dropped = torch.rand(embeds.shape[0], generator=generator) < p
    keep = ~dropped.to(embeds.device)
    embeds = torch.where(keep.view(-1, *[1] * (embeds.ndim - 1)), embeds, empty.to(embeds).expand_as(embeds))
    if anchor is not None:
        anchor = anchor * keep.view(-1, *[1] * (anchor.ndim - 1)).to(anchor.dtype)
    return embeds, anchor, dropped


def mix_anchors(base: torch.Tensor, other: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Per sample, with probability p, the ``other`` anchor in place of ``base``.

    Not in SPEC.md 7 (which always degrades the ground truth). Two uses at the tiny scale: the clean
    anchor-size latent, because the anchor model's own renders are sharper than SPEC.md's degradation
    leaves the ground truth and a detail model that never saw such anchors ignores the object's outline
    in them (docs/training.md, run 19); and a counterfactual anchor whose object has another shape, so
    that the caption, not the anchor, decides it (run 28). ``p`` = 0 is SPEC.md's training.
    """
    if p <= 0:
        return base
    use_other = (torch.rand(base.shape[0], generator=generator) < p).to(base.device)
    return torch.where(use_other.view(-1, *[1] * (base.ndim - 1)), other.to(base), base)
