"""Weight-free metrics: fidelity formulas and the attribute analysis of synthetic clips."""

import math

import numpy as np
import pytest
import torch

from pixelwizard.decoding import to_uint8_frames
from pixelwizard.metrics.attributes import analyse
from pixelwizard.metrics.clip_bootstrap import bootstrap_interval
from pixelwizard.metrics.detail_distribution import (
    BANDS, ENERGY_FLOOR, FEATURES, detail_features, frechet_distance, hd_fd,
)
from pixelwizard.metrics.fidelity import SSIM_K, hd_mse, psnr, ssim, temporal_flicker
from pixelwizard.training.render import render_scene
from pixelwizard.training.scenes import scene_for


def constant(value: int, frames: int = 3, h: int = 32, w: int = 48) -> torch.Tensor:
    return torch.full((frames, h, w, 3), value, dtype=torch.uint8)


def test_psnr_follows_its_formula():
    assert psnr(constant(100), constant(100)) == math.inf
    assert psnr(constant(100), constant(110)) == pytest.approx(20 * math.log10(255 / 10))


def test_ssim_of_constant_clips_reduces_to_the_luminance_term():
    a, b = 100 / 255, 180 / 255
    c1 = SSIM_K[0] ** 2
    assert ssim(constant(100), constant(100)) == pytest.approx(1.0)
    assert ssim(constant(100), constant(180)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    noisy = (constant(128).float() + torch.randn(3, 32, 48, 3, generator=torch.Generator().manual_seed(0)) * 40)
    assert ssim(noisy.clamp(0, 255).to(torch.uint8), constant(128)) < 0.5


def test_hd_mse_measures_fine_detail_only():
    assert hd_mse(constant(90)) == pytest.approx(0.0, abs=1e-20)
    checks = ((torch.arange(64).view(-1, 1) + torch.arange(64).view(1, -1)) % 2 * 255).to(torch.uint8)
    fine = checks.view(1, 64, 64, 1).expand(2, 64, 64, 3).contiguous()
    assert hd_mse(fine) == pytest.approx(3 * 0.25)  # every level averages to 0.5: error 0.5^2, three levels
    # A smooth ramp several 32-px blocks wide: only the bilinear edge effects remain.
    ramp = torch.linspace(0, 255, 256).round().to(torch.uint8).view(1, 1, 256, 1).expand(2, 64, 256, 3).contiguous()
    assert hd_mse(ramp) < 0.01 * hd_mse(fine)


def test_flicker_is_the_mean_second_temporal_difference():
    assert temporal_flicker(constant(50, frames=5)) == 0.0
    ramp = torch.stack([constant(10 * t, frames=1)[0] for t in range(6)])
    assert temporal_flicker(ramp) == pytest.approx(0.0, abs=1e-12)
    blink = torch.stack([constant(255 * (t % 2), frames=1)[0] for t in range(6)])
    assert temporal_flicker(blink) == pytest.approx(2.0)


def test_attributes_of_ground_truth_clips_are_read_back():
    wanted = ("right", "left", "up", "down", "bounce_h", "bounce_v", "orbit", "grow", "shrink", "spin")
    found = {}
    for i in range(400):
        scene = scene_for(9, i, "any")
        found.setdefault(scene.motion, scene)
        if len(found) == len(wanted):
            break
    for scene in found.values():
        frames = to_uint8_frames(render_scene(scene, 17, 224, 128))
        got = analyse(frames, scene.background)
        assert (got.colour, got.shape, got.motion) == (scene.colour, scene.shape, scene.motion), scene.caption


def test_an_empty_clip_has_no_attributes():
    from pixelwizard.training.scenes import COLOURS

    frames = torch.tensor(COLOURS["blue"], dtype=torch.uint8).view(1, 1, 1, 3).expand(9, 32, 56, 3).contiguous()
    got = analyse(frames, "blue")
    assert (got.colour, got.shape, got.motion) == (None, None, None)


def test_frechet_distance_follows_its_closed_forms():
    a = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.pow(2).sum()))  # same covariance: |mean shift|^2
    # b = 2a: S_b = 4 S_a, so tr S_a + tr S_b - 2 tr (S_a S_b)^1/2 = tr S_a; plus the squared means' difference.
    expected = float(torch.cov(a.T).trace() + a.mean(0).pow(2).sum())
    assert frechet_distance(a, 2 * a) == pytest.approx(expected)
    assert frechet_distance(2 * a, a) == pytest.approx(expected)
    # Covariances that do not commute: tr (S_a S_b)^1/2 from the eigenvalues of the product itself.
    b = a @ torch.tensor([[1.0, 0.8, 0.0], [0.0, 0.5, 0.3], [0.2, 0.0, 2.0]], dtype=torch.float64) + 0.3
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    cross = torch.linalg.eigvals(cov_a @ cov_b).real.sqrt().sum()
    direct = (a.mean(0) - b.mean(0)).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(float(direct))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(a[:1], a)


def grain(seed: int, frames: int = 3, h: int = 64, w: int = 96) -> torch.Tensor:
    """Grey clips with independent Gaussian grain (sd 30 of 255): one draw per seed of the same random texture."""
    noise = torch.randn(frames, h, w, 1, generator=torch.Generator().manual_seed(seed)) * 30
    return (128 + noise).expand(frames, h, w, 3).round().clamp(0, 255).to(torch.uint8)


def blurred(clip: torch.Tensor) -> torch.Tensor:
    v = clip.permute(0, 3, 1, 2).float()
    v = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(v, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return v.round().to(torch.uint8).permute(0, 2, 3, 1)


def test_hd_fd_ranks_a_fresh_draw_of_random_detail_above_its_blurred_mean():
    """The case HD-FD exists for: against one draw of random grain, PSNR prefers the blur to another correct draw."""
    truth = [grain(seed) for seed in range(4)]
    draws = [grain(seed) for seed in range(10, 14)]
    blurs = [blurred(clip) for clip in draws]
    assert hd_fd(truth, truth) == pytest.approx(0.0, abs=1e-6)
    # A 3x3 mean leaves a ninth of the grain: MSE (1 + 1/9) sd^2 against 2 sd^2 for a fresh draw, about 2.5 dB better.
    assert sum(map(psnr, blurs, truth)) > sum(map(psnr, draws, truth)) + 4 * 2
    assert hd_fd(draws, truth) < 0.05 * hd_fd(blurs, truth)
    louder = [(128 + 2 * (clip.float() - 128)).clamp(0, 255).to(torch.uint8) for clip in draws]  # too much detail
    assert hd_fd(louder, truth) > 20 * hd_fd(draws, truth)


def test_each_band_holds_the_detail_of_its_own_scale():
    """A checkerboard of s-px squares, v = 0.5 +- 0.5, has its energy in the band between s and 2s px."""

    def checkerboard(square: int) -> torch.Tensor:
        cells = (torch.arange(64).view(-1, 1) // square + torch.arange(96).view(1, -1) // square) % 2 * 255
        return cells.to(torch.uint8).view(1, 64, 96, 1).expand(2, 64, 96, 3).contiguous()

    # 1-px squares: every area average over 2 px or more is 0.5, so band 1 holds all 0.25 of the energy, exactly; the
    # other bands and the change between the (equal) frames sit at the floor.
    expected = torch.full((BANDS, 4), math.log(ENERGY_FLOOR), dtype=torch.float64)
    expected[0, :3] = math.log(0.25 + ENERGY_FLOOR)
    features = detail_features(checkerboard(1))
    assert features.shape == (6, FEATURES)
    assert torch.allclose(features, expected.flatten().expand(6, -1), atol=1e-9)
    # 8-px squares: bilinear upsampling leaks some energy into the other bands at the squares' edges, but band 4
    # (8-16 px) holds the most; nested residuals v - level_k would grow with k instead.
    colour = detail_features(checkerboard(8)).view(6, BANDS, 4)[..., :3]
    assert (colour.argmax(dim=1) == 3).all()


def test_detail_features_are_one_row_per_patch_of_each_later_frame():
    features = detail_features(grain(0, frames=4, h=64, w=80))  # 80 px: a partial third column of 32-px patches
    assert features.shape == (3 * 2 * 3, FEATURES)
    assert torch.isfinite(detail_features(constant(90))).all()  # flat patches sit at the energy floor, not at -inf
    with pytest.raises(ValueError, match="at least 2 frames"):
        detail_features(constant(90, frames=1))


def test_bootstrap_interval_of_a_mean_is_about_its_normal_interval():
    values = np.arange(1.0, 11.0)  # mean 5.5; standard error of the mean sd / sqrt(10) = 0.908 (population sd)
    low, high = bootstrap_interval(lambda clips: float(values[clips].mean()), len(values))
    assert low == pytest.approx(5.5 - 1.645 * 0.908, abs=0.25) and high == pytest.approx(5.5 + 1.645 * 0.908, abs=0.25)
    assert bootstrap_interval(lambda clips: 3.0, 5) == (3.0, 3.0)
    # Paired: one index draw serves both sides, so a constant gap between two models has no spread at all.
    other = values + 2.0
    assert bootstrap_interval(lambda clips: float(other[clips].mean() - values[clips].mean()), 10) == pytest.approx((2, 2))
    with pytest.raises(ValueError, match="at least 2 clips"):
        bootstrap_interval(lambda clips: 0.0, 1)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(lambda clips: 0.0, 4, level=1.5)
