"""The shortcut objective of SPEC.md 7, piece by piece, against its formulas; the training loop's settings and snapshots."""

import dataclasses
import math

import pytest
import torch

from pixelwizard.training import objectives as obj
from pixelwizard.training.config import ConfigError, ShortcutConfig, TrainConfig


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (500, [500, 250, 124, 62, 30, 14]),
        (600, [600, 300, 150, 74, 36, 18]),
        (700, [700, 350, 174, 86, 42, 20]),
        (800, [800, 400, 200, 100, 50, 24]),
    ],
)
def test_noise_span_aligned_candidates_are_floor_t_over_2k_made_even(start, expected):
    pairs = obj.dt_candidates(start, 6)
    assert [k for k, _ in pairs] == list(range(6))
    assert [dt for _, dt in pairs] == expected
    for k, dt in pairs:
        assert dt % 2 == 0 and dt >= 2 and dt in (math.floor(start / 2**k), math.floor(start / 2**k) - 1)


def test_fixed_grid_ablation_keeps_the_1000_over_2k_steps_that_fit_under_t():
    assert obj.dt_candidates(500.0, 6, "fixed") == [(1, 500), (2, 250), (3, 124), (4, 62), (5, 30)]
    assert obj.dt_candidates(499.7, 6, "fixed")[0] == (2, 250)
    assert obj.dt_candidates(10.0, 6, "fixed") == []


def test_exponential_index_biased_probabilities_match_the_spec():
    probs = obj.dt_probabilities(range(6), 0.7)
    assert probs == pytest.approx([math.exp(-0.7 * k) / sum(math.exp(-0.7 * j) for j in range(6)) for k in range(6)])
    assert [round(p, 2) for p in probs[:5]] == [0.51, 0.25, 0.13, 0.06, 0.03]
    assert round(probs[5], 3) == 0.015
    assert obj.dt_probabilities(range(6), 0.7, "uniform") == pytest.approx([1 / 6] * 6)
    assert obj.dt_probabilities([2, 3], 0.0) == pytest.approx([0.5, 0.5])


def test_sampled_steps_start_on_the_snapped_grid_and_follow_the_k_probabilities():
    grid = obj.timestep_grid(5.0)
    starts = (500.0, 600.0, 700.0, 800.0)
    t, dt = obj.sample_shortcut_steps(6000, starts, grid, torch.Generator().manual_seed(0), levels=6, lam=0.7)
    drawn = sorted(set(t.tolist()))
    # The grid is about 2 units apart near t = 500..800 (shift 5), so each start moves by less than 1 to a grid entry.
    assert len(drawn) == len(starts) and set(drawn) <= set(grid.tolist())
    assert all(abs(snapped - start) < 1 for snapped, start in zip(drawn, starts))
    ks = [next(k for k, d in obj.dt_candidates(T, 6) if d == step) for T, step in zip(t.tolist(), dt.tolist())]
    freq = torch.bincount(torch.tensor(ks), minlength=6).float() / len(ks)
    assert torch.allclose(freq, torch.tensor(obj.dt_probabilities(range(6), 0.7)), atol=0.02)


def test_teacher_takes_two_half_steps_of_the_model():
    def model(x, t, dt):  # closed form, depends on all three inputs
        return x * (t / 1000).view(-1, 1) + dt.view(-1, 1)

    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    t, dt = torch.tensor([800.0, 500.0]), torch.tensor([400.0, 62.0])
    target = obj.teacher_target(model, x, t, dt)
    for i in range(2):
        T, d = float(t[i]), float(dt[i])
        v1 = x[i] * T / 1000 + d / 2
        x_mid = x[i] + ((T - d / 2) / 1000 - T / 1000) * v1
        v2 = x_mid * (T - d / 2) / 1000 + d / 2
        assert torch.allclose(target[i], (v1 + v2) / 2)


def test_teacher_of_the_exact_flow_of_a_point_mass_returns_that_flow():
    """Data at c: the exact velocity (x - c) / s is constant along straight paths, so two half steps agree."""
    c = torch.tensor([0.3, -0.7])

    def exact(x, t, dt):
        return (x - c) / (t / 1000).view(-1, 1)

    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500.0, 700.0, 800.0])
    x_t = obj.noisy(c.expand(3, 2), noise, t)
    target = obj.teacher_target(exact, x_t, t, torch.tensor([500.0, 174.0, 24.0]))
    assert torch.allclose(target, obj.flow_target(c.expand(3, 2), noise), atol=1e-5)


def test_calibration_weight_is_the_clamped_root_of_the_span_over_its_batch_mean():
    t = torch.tensor([500.0, 500.0, 500.0])
    dt = torch.tensor([500.0, 250.0, 14.0])
    spans = dt / 1000
    expected = (spans / spans.mean()).sqrt().clamp(0.1, 10)
    assert torch.allclose(obj.calibration_weights(t, dt), expected)
    tiny = obj.calibration_weights(torch.tensor([800.0] * 4), torch.tensor([800.0, 800.0, 800.0, 2.0]))
    assert tiny[-1] == pytest.approx(0.1)  # sqrt(0.0025 / 0.6) = 0.065, clamped


def test_calibration_mean_is_taken_over_every_rank(monkeypatch):
    """Under torch.distributed the batch mean covers all ranks: simulate a second rank's spans."""
    import torch.distributed as dist

    other_rank = torch.tensor([0.1 * 3, 3.0])  # three spans of 0.1 elsewhere

    def all_reduce(tensor):
        tensor += other_rank

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    w = obj.calibration_weights(torch.tensor([500.0]), torch.tensor([500.0]))
    assert w.item() == pytest.approx(math.sqrt(0.5 / ((0.5 + 0.3) / 4)))


def test_cfg_dropout_drops_prompt_and_anchor_together():
    embeds, anchor = torch.randn(400, 4, 3), torch.randn(400, 2, 5)
    empty = torch.full((4, 3), 7.0)
    out, out_anchor, dropped = obj.cfg_dropout(embeds, anchor, empty, 0.1, torch.Generator().manual_seed(0))
    assert 20 < int(dropped.sum()) < 60
    assert torch.all(out[dropped] == 7.0) and torch.all(out_anchor[dropped] == 0)
    assert torch.equal(out[~dropped], embeds[~dropped]) and torch.equal(out_anchor[~dropped], anchor[~dropped])
    none = obj.cfg_dropout(embeds, anchor, empty, 0.0, torch.Generator())
    assert torch.equal(none[0], embeds) and torch.equal(none[1], anchor)


def test_anchor_mix_swaps_whole_samples_with_its_probability():
    synthesised, clean = torch.zeros(400, 2, 1, 2, 3), torch.ones(400, 2, 1, 2, 3)
    assert obj.mix_anchors(synthesised, clean, 0.0, torch.Generator()) is synthesised
    assert torch.equal(obj.mix_anchors(synthesised, clean, 1.0, torch.Generator()), clean)
    mixed = obj.mix_anchors(synthesised, clean, 0.25, torch.Generator().manual_seed(0))
    per_sample = mixed.flatten(1)
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)  # each sample is one or the other
    assert 0.18 < float(per_sample[:, 0].mean()) < 0.32
    again = obj.mix_anchors(synthesised, clean, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(mixed, again)


def test_flow_matching_pieces():
    grid = obj.timestep_grid(5.0)
    assert len(grid) == 1000 and grid[-1] == 1000 and torch.all(grid[1:] > grid[:-1])
    assert grid[0] == pytest.approx(1000 * 5 * 0.001 / (1 + 4 * 0.001))
    assert torch.allclose(obj.timestep_grid(1.0), torch.arange(1, 1001, dtype=torch.float32))
    t = obj.sample_fm_timesteps(256, grid, torch.Generator().manual_seed(0))
    assert all(v in set(grid.tolist()) for v in t.tolist())
    w = obj.bell_weight(grid, grid)
    assert w.mean() == pytest.approx(1.0) and obj.bell_weight(torch.tensor([500.0]), grid) > w.max() - 1e-6
    assert obj.bell_weight(torch.tensor([300.0]), grid) == pytest.approx(obj.bell_weight(torch.tensor([700.0]), grid))
    x0, noise = torch.ones(2, 3), torch.zeros(2, 3)
    assert torch.allclose(obj.noisy(x0, noise, torch.tensor([250.0, 1000.0])), torch.tensor([[0.75] * 3, [0.0] * 3]))
    assert torch.equal(obj.flow_target(x0, noise), -x0)
    assert obj.weighted_mse(torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([1.0, 3.0])) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(starts=()), "dt candidate set is empty"),
        (dict(levels=0), "dt candidate set is empty"),
        (dict(starts=(10.0,), dt_grid="fixed"), "dt candidate set is empty"),
        (dict(lam=-0.5), "lambda must be >= 0"),
        (dict(sc_prob=1.5), "probability"),
        (dict(sc_weight=0.0), "loss weight must be > 0"),
        (dict(k_sampling="linear"), "k sampling"),
        (dict(starts=(0.0,)), "start timestep"),
    ],
)
def test_out_of_range_shortcut_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        ShortcutConfig(**settings).validate()


def test_training_settings_default_to_the_spec_and_are_checked():
    cfg = TrainConfig().validate()
    assert cfg.betas == (0.0, 0.999) and cfg.weight_decay == 0.01 and cfg.grad_clip == 1.0 and cfg.cfg_dropout == 0.1
    sc = cfg.shortcut
    assert (sc.sc_prob, sc.sc_weight, sc.starts, sc.levels, sc.lam, sc.calibration_clamp) == (
        0.3, 1.0, (500.0, 600.0, 700.0, 800.0), 6, 0.7, (0.1, 10.0))
    with pytest.raises(ConfigError, match="EMA"):
        TrainConfig(ema=1.0).validate()


def test_learning_rate_warms_up_linearly_then_follows_a_cosine_to_zero():
    from pixelwizard.training.trainer import learning_rate

    flat = TrainConfig(lr=1e-3, warmup_steps=10).validate()
    assert learning_rate(flat, 4, 0.5) == pytest.approx(5e-4) and learning_rate(flat, 500, 0.9) == pytest.approx(1e-3)
    cosine = TrainConfig(lr=1e-3, warmup_steps=10, lr_decay="cosine").validate()
    assert learning_rate(cosine, 4, 0.0) == pytest.approx(5e-4)
    assert learning_rate(cosine, 100, 0.5) == pytest.approx(5e-4)  # cos(pi / 2) = 0: half way down
    assert learning_rate(cosine, 100, 0.25) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(cosine, 100, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(cosine, 100, 1.7) == pytest.approx(0.0, abs=1e-12)  # a time limit overshot by the last step
    with pytest.raises(ConfigError, match="lr decay"):
        TrainConfig(lr_decay="linear").validate()


def test_element_weights_give_a_weighted_mean_per_sample_and_object_weights_add_to_one():
    pred, target = torch.zeros(1, 2, 1, 1, 2), torch.tensor([[[[[1.0, 3.0]]], [[[1.0, 3.0]]]]])  # errors 1 and 9
    mask = torch.tensor([[[[[0.0, 1.0]]]]])  # (B, 1, F, h, w): the object covers the second cell
    e = obj.object_weights(mask, 3.0)
    assert torch.equal(e, torch.tensor([[[[[1.0, 4.0]]]]]))
    # (1 * 1 + 4 * 9) / (1 + 4) over both channels
    assert obj.weighted_mse(pred, target, torch.ones(1), e) == pytest.approx(37 / 5)
    assert obj.weighted_mse(pred, target, torch.ones(1), obj.object_weights(mask, 0.0)) == pytest.approx(5.0)


def test_outline_weights_peak_on_half_covered_cells_and_vanish_off_and_inside_the_object():
    mask = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    # 1 + 2c + 8 * 4c(1 - c)
    expected = torch.tensor([1.0, 1.5 + 6.0, 2.0 + 8.0, 2.5 + 6.0, 3.0])
    assert torch.allclose(obj.object_weights(mask, 2.0, outline_weight=8.0), expected)
    assert torch.equal(obj.object_weights(mask, 2.0), 1.0 + 2.0 * mask)  # off by default


def _fit_line(cfg: TrainConfig, snapshots: list | None):
    """run_loop on a two-parameter regression; returns the final weights (and fills ``snapshots`` if given)."""
    from pixelwizard.training.trainer import run_loop

    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(2))
    data = torch.randn(64, 2)
    target = data @ torch.tensor([1.5, -0.5])

    def loss_fn(step):
        rows = data[step % 8 * 8:(step % 8 + 1) * 8]
        return ((rows @ weight - target[step % 8 * 8:(step % 8 + 1) * 8]) ** 2).mean(), "fm"

    def snapshot(steps):
        snapshots.append((steps, weight.detach().clone()))

    run_loop(loss_fn, [weight], cfg, lambda _: None, snapshot if snapshots is not None else None)
    return weight.detach().clone()


def test_snapshots_hold_the_weights_the_run_would_save_and_leave_the_training_unchanged():
    cfg = TrainConfig(steps=6, lr=0.1, betas=(0.9, 0.999), ema=0.5, snapshot_every=1e-9).validate()
    snapshots = []
    final = _fit_line(cfg, snapshots)
    assert [steps for steps, _ in snapshots] == [1, 2, 3, 4, 5, 6]
    # the last snapshot is what the run saves: the EMA weights, not the live ones
    assert torch.equal(snapshots[-1][1], final)
    assert not torch.equal(snapshots[0][1], snapshots[-1][1])
    # putting the EMA weights in for a snapshot and taking them out again changes nothing the run does
    assert torch.equal(_fit_line(dataclasses.replace(cfg, snapshot_every=None), None), final)
    assert torch.equal(_fit_line(cfg, None), final)
    # without EMA, the last snapshot is the live weights
    plain = []
    plain_final = _fit_line(dataclasses.replace(cfg, ema=0.0), plain)
    assert torch.equal(plain_final, plain[-1][1])
    assert not torch.equal(plain_final, final)


def test_snapshot_interval_must_be_positive():
    with pytest.raises(ConfigError, match="snapshot interval must be > 0 seconds"):
        TrainConfig(snapshot_every=0).validate()
