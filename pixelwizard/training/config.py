"""Training settings, checked up front so a bad value stops a run before it touches anything.

Defaults are SPEC.md section 7's. Each shortcut technique is a switch, for ablations:
``k_sampling="uniform"`` (instead of exponential index-biased), ``dt_grid="fixed"`` (instead of
noise-span aligned), ``calibration=False`` (no adaptive noise-span calibration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from pixelwizard.training.objectives import dt_candidates, snap_to_grid, timestep_grid

MAX_DT_LEVELS = 12  # floor(1000 / 2^k) reaches the smallest step, 2, by k = 9


class ConfigError(ValueError):
    """A training setting out of range; the message is one line."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_finite(config) -> None:
    """Every float of a config (alone or in a tuple) is a finite number: inf passes a "> 0" check and trains NaNs."""
    for item in fields(config):
        value = getattr(config, item.name)
        for number in value if isinstance(value, tuple) else (value,):
            if isinstance(number, float):
                _check(math.isfinite(number), f"{item.name.replace('_', ' ')} must be a finite number, got {number}")


# "off", or a torch.compile mode ("reduce-overhead" adds CUDA graphs).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class ShortcutConfig:
    """Self-consistency (shortcut) training settings, SPEC.md 7."""

    sc_prob: float = 0.3  # share of iterations that are self-consistency steps; 0 = flow matching only
    sc_weight: float = 1.0  # lambda of L_fm + lambda * L_sc (SPEC.md 7: 1.0)
    starts: tuple[float, ...] = (500.0, 600.0, 700.0, 800.0)
    levels: int = 6  # k = 0..levels-1
    lam: float = 0.7
    k_sampling: str = "exponential"  # or "uniform"
    dt_grid: str = "aligned"  # or "fixed"
    calibration: bool = True
    calibration_power: float = 0.5
    calibration_clamp: tuple[float, float] = (0.1, 10.0)

    def validate(self) -> "ShortcutConfig":
        _check_finite(self)
        _check(0.0 <= self.sc_prob <= 1.0, f"self-consistency probability must lie in [0, 1], got {self.sc_prob}")
        _check(self.sc_weight > 0, f"self-consistency loss weight must be > 0, got {self.sc_weight}")
        _check(len(self.starts) > 0, "the dt candidate set is empty: no start timesteps given")
        _check(self.levels >= 1, f"the dt candidate set is empty: levels must be at least 1, got {self.levels}")
        _check(self.levels <= MAX_DT_LEVELS, f"dt levels must be at most {MAX_DT_LEVELS}, got {self.levels}")
        for start in self.starts:
            _check(0 < start <= 1000, f"start timestep {start} must lie in (0, 1000]")
        _check(self.lam >= 0, f"lambda must be >= 0, got {self.lam}")
        _check(self.k_sampling in ("exponential", "uniform"), f"k sampling must be exponential or uniform, got {self.k_sampling!r}")
        _check(self.dt_grid in ("aligned", "fixed"), f"dt grid must be aligned or fixed, got {self.dt_grid!r}")
        for start in self.starts:
            _check(
                bool(dt_candidates(start, self.levels, self.dt_grid)),
                f"the dt candidate set is empty for start timestep {start} on the {self.dt_grid} grid",
            )
        low, high = self.calibration_clamp
        _check(0 < low <= high, f"calibration clamp must satisfy 0 < low <= high, got {self.calibration_clamp}")
        _check(self.calibration_power > 0, f"calibration power must be > 0, got {self.calibration_power}")
        return self

    def check_snapped_starts(self, shift: float) -> None:
        """Training snaps each start onto the shifted grid (SPEC.md 7 step 1): each snapped start needs a dt
        candidate, and no candidate may step past t = 0."""
        grid = timestep_grid(shift)
        for start in self.starts:
            snapped = snap_to_grid(start, grid)
            candidates = [dt for _, dt in dt_candidates(snapped, self.levels, self.dt_grid)]
            _check(bool(candidates), f"the dt candidate set is empty for start timestep {start} (snapped to {snapped:.1f} "
                                     f"on the shift-{shift:g} grid) on the {self.dt_grid} grid")
            _check(max(candidates) <= snapped, f"start timestep {start} (snapped to {snapped:.1f} on the shift-{shift:g} grid) "
                                               f"is smaller than its step {max(candidates)}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and loop settings shared by the VAE, anchor and detail trainers."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.999)  # SPEC.md 7
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 0
    lr_decay: str = "none"  # or "cosine": to 0 over the run (by steps, or by time under max_seconds)
    ema: float = 0.0  # EMA decay of the saved weights, 0 = off (SPEC.md 7: optional, 0.99)
    cfg_dropout: float = 0.1
    shift: float = 5.0  # sigma shift of the training timestep grid
    seed: int = 0
    max_seconds: float | None = None  # stop early when this much wall time has passed
    snapshot_every: float | None = None  # seconds between snapshots of the weights (anchor and detail runs), None = none
    gradient_checkpointing: bool = False
    compile: str = "off"  # torch.compile mode for the transformer, or "off" (GPU throughput; the first steps compile)
    adapter_only: bool = False  # detail model: train only the anchor injector and dt embedding
    object_weight: float = 0.0  # extra loss weight on the object's latent cells (0 = off; synthetic caches)
    outline_weight: float = 0.0  # extra loss weight on the cells the object half covers (0 = off; synthetic caches)
    clean_anchor_prob: float = 0.0  # detail model: share of samples conditioned on the clean anchor, not SPEC.md 7's
    counterfactual_anchor_prob: float = 0.0  # detail model: share conditioned on an anchor whose object has another shape
    log_every: int = 25
    shortcut: ShortcutConfig = field(default_factory=ShortcutConfig)

    def validate(self) -> "TrainConfig":
        _check_finite(self)
        _check(self.steps >= 1, f"steps must be at least 1, got {self.steps}")
        _check(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        _check(self.lr > 0, f"learning rate must be > 0, got {self.lr}")
        _check(all(0 <= b < 1 for b in self.betas), f"betas must lie in [0, 1), got {self.betas}")
        _check(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}")
        _check(self.grad_clip > 0, f"gradient clip must be > 0, got {self.grad_clip}")
        _check(self.warmup_steps >= 0, f"warmup steps must be >= 0, got {self.warmup_steps}")
        _check(self.lr_decay in ("none", "cosine"), f"lr decay must be none or cosine, got {self.lr_decay!r}")
        _check(0 <= self.ema < 1, f"EMA decay must lie in [0, 1), got {self.ema}")
        _check(0 <= self.cfg_dropout <= 1, f"CFG dropout must lie in [0, 1], got {self.cfg_dropout}")
        _check(self.shift > 0, f"shift must be > 0, got {self.shift}")
        _check(self.max_seconds is None or self.max_seconds > 0, f"max seconds must be > 0, got {self.max_seconds}")
        _check(self.snapshot_every is None or self.snapshot_every > 0,
               f"snapshot interval must be > 0 seconds, got {self.snapshot_every}")
        _check(self.object_weight >= 0, f"object weight must be >= 0, got {self.object_weight}")
        _check(self.outline_weight >= 0, f"outline weight must be >= 0, got {self.outline_weight}")
        _check(0 <= self.clean_anchor_prob <= 1, f"clean anchor share must lie in [0, 1], got {self.clean_anchor_prob}")
        _check(0 <= self.counterfactual_anchor_prob <= 1,
               f"counterfactual anchor share must lie in [0, 1], got {self.counterfactual_anchor_prob}")
        _check(self.compile in COMPILE_MODES, f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        _check(self.log_every >= 1, f"log interval must be at least 1, got {self.log_every}")
        self.shortcut.validate()
        self.shortcut.check_snapped_starts(self.shift)
        return self

    @property
    def weights_object(self) -> bool:
        """Whether the loss weights the object's cells (object or outline weight), which needs object masks."""
        return self.object_weight > 0 or self.outline_weight > 0


@dataclass(frozen=True)
class VaeLossConfig:
    """VAE training loss, scales and crop: L1 + edge_weight * L1 of image gradients + kl_weight * KL.

    ``scales``: each step area-resizes its clips by one of these factors before the crop, so that a
    VAE trained on detail-size clips also encodes the anchor-size ones (0.5 in the tiny preset).
    """

    kl_weight: float = 1e-4
    edge_weight: float = 0.5
    crop: tuple[int, int] = (128, 256)  # (height, width) random crop of each training clip
    scales: tuple[float, ...] = (1.0,)

    def validate(self) -> "VaeLossConfig":
        _check_finite(self)
        _check(self.kl_weight >= 0, f"KL weight must be >= 0, got {self.kl_weight}")
        _check(self.edge_weight >= 0, f"edge weight must be >= 0, got {self.edge_weight}")
        _check(all(c > 0 and c % 16 == 0 for c in self.crop), f"crop {self.crop} must be positive multiples of 16")
        _check(len(self.scales) > 0, "the VAE scale list is empty")
        for scale in self.scales:
            _check(0 < scale <= 1, f"VAE training scale {scale} must lie in (0, 1]")
        return self
