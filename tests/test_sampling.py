"""Samplers on cases with a known exact answer, and the shortcut step sizes (SPEC.md 2 and 5)."""

import math

import pytest
import torch

from pixelwizard.presets import get_preset
from pixelwizard.sampling import (
    NUM_TRAIN_TIMESTEPS,
    dt_grid,
    even_step,
    flow_scheduler,
    sample,
    shift_sigma,
    snap_step,
    step_sizes,
)


def gaussian_velocity(mu: torch.Tensor, sigma0: float):
    """Exact flow-matching velocity E[noise - x0 | x_s] for data x0 ~ N(mu, sigma0^2 I)."""

    def velocity(x, t, dt):
        s = (t / NUM_TRAIN_TIMESTEPS).view(-1, *[1] * (x.dim() - 1))
        mean = (1 - s) * mu
        var = (1 - s) ** 2 * sigma0**2 + s**2
        return (s - (1 - s) * sigma0**2) / var * (x - mean) - mu

    return velocity


def exact_sigma_velocity(velocity_of_s):
    """Adapts v(x, s) to the sampler's (x, t, dt) signature using t = 1000 s."""
    return lambda x, t, dt: velocity_of_s(x, t / NUM_TRAIN_TIMESTEPS)


def test_schedule_is_the_shifted_flow_schedule():
    scheduler = flow_scheduler(shift=5.5)
    scheduler.set_timesteps(4)
    base = torch.linspace(1, 1 / NUM_TRAIN_TIMESTEPS, 5)[:-1]
    expected = [shift_sigma(float(s), 5.5) for s in base] + [0.0]
    assert torch.allclose(scheduler.sigmas, torch.tensor(expected), atol=2e-6)


def test_2k_preset_four_steps_timesteps_and_step_sizes():
    preset = get_preset("2k")
    scheduler = flow_scheduler(preset.detail_shift)
    scheduler.set_timesteps(preset.detail_steps)
    t = [float(s) * NUM_TRAIN_TIMESTEPS for s in scheduler.sigmas]
    # SPEC.md 5: roughly t = 999, 943, 846, 647, then 0.
    assert [round(v) for v in t] == [1000, 943, 846, 648, 0]
    # |dt| = 57.07, 96.51, 198.44, 647.97 -> nearest even integers.
    assert step_sizes(scheduler.sigmas) == [58, 96, 198, 648]


def test_even_step_rounds_to_even_and_is_at_least_two():
    assert [even_step(x) for x in (0.2, 1.0, 2.9, 3.1, 57.07, 647.97)] == [2, 2, 2, 4, 58, 648]


def test_snapping_moves_t_and_dt_onto_the_training_grid():
    assert dt_grid(900.0) == [900, 450, 224, 112, 56, 28, 14, 6]
    assert snap_step(943.0, 58) == (900.0, 56)
    assert snap_step(646.0, 648) == (600.0, 600)
    assert snap_step(999.9, 100) == (1000.0, 124)  # floor(1000/8)=125 -> even 124


@pytest.mark.parametrize(("solver", "steps"), [("euler", 1), ("euler", 4), ("unipc", 4), ("unipc", 7), ("unipc", 400)])
def test_single_data_point_is_reached_exactly(solver, steps):
    """For one data point c the velocity is (x - c)/s: the straight path, exact for any step count. (At 400 steps the
    schedule's first two integer timesteps are equal, and UniPC, left to find its place by timestep, began a step late
    and failed on the last.)"""
    c = torch.tensor([[1.5, -2.0, 0.25]])
    noise = torch.randn(1, 3, generator=torch.Generator().manual_seed(0))
    velocity = exact_sigma_velocity(lambda x, s: (x - c) / s.view(-1, 1))
    out = sample(velocity, noise, num_steps=steps, shift=5.0, solver=solver)
    assert torch.allclose(out, c, atol=1e-5)


def gaussian_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(1, 256, generator=g)
    z = torch.randn(64, 256, generator=g)
    sigma0 = 0.5
    return mu, sigma0, z, mu + sigma0 * z  # the exact ODE map sends noise z to mu + sigma0 z


def gaussian_error(solver, steps, shift=1.0):
    mu, sigma0, z, exact = gaussian_case()
    out = sample(gaussian_velocity(mu, sigma0), z, num_steps=steps, shift=shift, solver=solver)
    return (out - exact).abs().max().item()


def test_gaussian_data_unipc_converges_to_the_exact_map():
    assert gaussian_error("unipc", 80) < 2e-3


def test_gaussian_data_euler_converges_at_first_order():
    errors = [gaussian_error("euler", n) for n in (20, 40, 80)]
    assert errors[-1] < 0.05
    for coarse, fine in zip(errors, errors[1:]):
        assert 1.8 < coarse / fine < 2.2  # halving the step halves the error


def test_unipc_is_far_more_accurate_than_euler_at_equal_steps():
    assert gaussian_error("unipc", 40) < 0.1 * gaussian_error("euler", 40)


def test_shortcut_sampling_tells_the_model_each_step_size():
    seen = []

    def velocity(x, t, dt):
        seen.append((float(t[0]), None if dt is None else float(dt[0])))
        return torch.zeros_like(x)

    sample(velocity, torch.zeros(2, 3), num_steps=4, shift=5.5, solver="euler", shortcut=True)
    assert [dt for _, dt in seen] == [58.0, 96.0, 198.0, 648.0]
    seen.clear()
    sample(velocity, torch.zeros(2, 3), num_steps=4, shift=5.5, solver="euler", shortcut=True, snap=True)
    assert seen == [(1000.0, 62.0), (900.0, 112.0), (800.0, 200.0), (600.0, 600.0)]
    seen.clear()
    sample(velocity, torch.zeros(2, 3), num_steps=3, shift=5.0, solver="unipc")
    assert all(dt is None for _, dt in seen) and len(seen) == 3


def test_unknown_solver_is_rejected():
    with pytest.raises(ValueError, match="solver"):
        sample(lambda x, t, dt: x, torch.zeros(1, 2), num_steps=2, shift=1.0, solver="heun")


def test_shift_formula():
    assert shift_sigma(0.5, 5.5) == pytest.approx(2.75 / 3.25)
    assert shift_sigma(1.0, 7.0) == 1.0 and shift_sigma(0.0, 7.0) == 0.0
    assert math.isclose(shift_sigma(0.25, 1.0), 0.25)
