"""Flow-matching samplers: shifted schedules, shortcut step sizes, guidance, Euler and UniPC.

SPEC.md section 2 (schedule: x_s = (1 - s) x_0 + s noise, v = noise - x_0, shift
s' = shift s / (1 + (shift - 1) s), t = 1000 s) and section 5 (detail-stage shortcut sampling).
The schedule and the UniPC solver are diffusers' ``UniPCMultistepScheduler`` in flow mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from diffusers import UniPCMultistepScheduler

NUM_TRAIN_TIMESTEPS = 1000
# SPEC.md 5: the grid the shortcut model was trained on, used by the optional snapping.
SNAP_TIMESTEPS = (600, 700, 800, 900, 1000)
SNAP_LEVELS = 8

Solver = Literal["unipc", "euler"]
# velocity(x_t, timestep, dt) -> v; dt is None for models without step-size conditioning.
Velocity = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def flow_scheduler(shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> UniPCMultistepScheduler:
    """A fresh UniPC scheduler in flow mode with the given sigma shift (Wan's configuration)."""
    return UniPCMultistepScheduler(
        num_train_timesteps=num_train_timesteps,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_order=2,
    )


def shift_sigma(s: float, shift: float) -> float:
    """SPEC.md 2: s' = shift * s / (1 + (shift - 1) * s)."""
    return shift * s / (1 + (shift - 1) * s)


def even_step(delta: float) -> int:
    """SPEC.md 5: a step size on the 0..1000 scale rounded to the nearest even integer, at least 2."""
    return max(2, 2 * round(abs(delta) / 2))


def step_sizes(sigmas: torch.Tensor, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """dt for each step: |t_cur - t_next| on the 0..1000 scale, even, >= 2 (SPEC.md 5)."""
    t = [float(s) * num_train_timesteps for s in sigmas]
    return [even_step(a - b) for a, b in zip(t[:-1], t[1:])]


def snap_timestep(t: float) -> float:
    """The nearest of the trained start timesteps {600, ..., 1000} (SPEC.md 5, optional)."""
    return float(min(SNAP_TIMESTEPS, key=lambda grid: abs(grid - t)))


def dt_grid(start: float, levels: int = SNAP_LEVELS) -> list[int]:
    """Noise-span aligned step sizes floor(T / 2^k), even, >= 2, k = 0..levels-1 (SPEC.md 5 and 7)."""
    return [max(2, (math.floor(start / 2**k) // 2) * 2) for k in range(levels)]


def snap_step(t: float, dt: int) -> tuple[float, int]:
    """Snap (t, dt) onto the training grid: t to the nearest start, dt to the nearest floor(T/2^k)."""
    start = snap_timestep(t)
    return start, min(dt_grid(start), key=lambda grid: abs(grid - dt))


def euler_step(x: torch.Tensor, v: torch.Tensor, s_cur: float, s_next: float) -> torch.Tensor:
    """The plain flow / shortcut update x_next = x_t + (s_next - s_cur) v (SPEC.md 5)."""
    return x + (s_next - s_cur) * v


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + g (cond - uncond)."""
    return uncond + scale * (cond - uncond)


def sample(
    velocity: Velocity,
    noise: torch.Tensor,
    *,
    num_steps: int,
    shift: float,
    solver: Solver = "unipc",
    shortcut: bool = False,
    snap: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Integrate the flow ODE from pure noise (s = 1) to data (s = 0).

    With ``shortcut`` the model also gets the step size dt of each step (SPEC.md 5); ``snap``
    snaps what the model is told (t, dt) onto its training grid, the solver still follows the
    schedule. Returns the final sample in float32.
    """
    if solver not in ("unipc", "euler"):
        raise ValueError(f"unknown solver {solver!r}; choose 'unipc' or 'euler'")
    scheduler = flow_scheduler(shift)
    scheduler.set_timesteps(num_steps, device="cpu")
    # Step i is schedule step i: at many steps the integer timesteps repeat at the start, and a scheduler left to find
    # its place by timestep value would begin one step late.
    scheduler.set_begin_index(0)
    sigmas = scheduler.sigmas
    dts = step_sizes(sigmas) if shortcut else [None] * num_steps
    batch = noise.shape[0]
    x = noise.float()
    for i in range(num_steps):
        # The model gets the exact noise level t = 1000 s (diffusers' timesteps are truncated to ints).
        t = float(sigmas[i]) * NUM_TRAIN_TIMESTEPS
        dt = dts[i]
        if snap and dt is not None:
            t, dt = snap_step(t, dt)
        t_in = torch.full((batch,), t, device=x.device)
        dt_in = None if dt is None else torch.full((batch,), float(dt), device=x.device)
        v = velocity(x, t_in, dt_in).float()
        if solver == "euler":
            x = euler_step(x, v, float(sigmas[i]), float(sigmas[i + 1]))
        else:
            x = scheduler.step(v, scheduler.timesteps[i], x, return_dict=False)[0]
        if on_step is not None:
            on_step(i + 1, num_steps)
    return x
