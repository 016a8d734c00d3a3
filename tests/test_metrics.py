"""Weight-free metrics: fidelity formulas and the attribute analysis of synthetic clips."""

import math

import pytest
import torch

from pixelwizard.decoding import to_uint8_frames
from pixelwizard.metrics.attributes import analyse
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
