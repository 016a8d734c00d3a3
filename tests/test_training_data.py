"""Training data: the synthetic world, anchor synthesis, and real captioned clips."""

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelwizard.default_model import TINY_VOCABULARY
from pixelwizard.training.datasets import DatasetError, RealClips, SyntheticClips, open_dataset
from pixelwizard.training.degrade import RELEASE_FACTOR, RELEASE_KERNELS, RELEASE_SIGMA, degrade, scaled_degradation
from pixelwizard.training.latents import latent_grid_mask
from pixelwizard.training.render import GRAIN, grain, object_mask, render_scene
from pixelwizard.training.scenes import (
    COLOURS, MOTION_PHRASES, caption_words, colour_distance, counterfactual, is_held_out, pose, scene_for, shade,
)


def test_clips_are_deterministic_by_seed_and_index():
    a, b = SyntheticClips(5, 10, 5, 64, 32), SyntheticClips(5, 10, 5, 64, 32)
    assert torch.equal(a.clips([3, 7]), b.clips([3, 7])) and a.caption(3) == b.caption(3)
    assert not torch.equal(a.clips([3]), SyntheticClips(6, 10, 5, 64, 32).clips([3]))


def test_captions_state_every_attribute_in_the_tokenizer_vocabulary():
    assert caption_words() <= set(TINY_VOCABULARY)
    for i in range(50):
        scene = scene_for(0, i)
        words = scene.caption.split()
        assert scene.colour in words and scene.shape in words and scene.background in words
        assert scene.pattern in words and scene.motion_phrase in scene.caption
        assert scene.motion_phrase in MOTION_PHRASES[scene.motion]
        assert (scene.size in words) == (scene.size != "medium")
        assert (scene.texture_colour in words) if scene.texture != "solid" else "with" not in words


def test_held_out_combinations_never_reach_training():
    triples = [(c, s, m) for c in COLOURS for s in ("circle", "square", "triangle", "star") for m in MOTION_PHRASES]
    held = [t for t in triples if is_held_out(*t)]
    assert 0 < len(held) < len(triples) / 4
    for i in range(200):
        train, test = scene_for(1, i, "train"), scene_for(1, i, "heldout")
        assert not is_held_out(train.colour, train.shape, train.motion)
        assert is_held_out(test.colour, test.shape, test.motion)


def test_render_draws_the_object_where_its_path_says():
    scene = next(s for s in (scene_for(2, i) for i in range(500)) if s.motion == "right" and s.texture == "solid")
    video = render_scene(scene, 5, 448, 256)
    assert video.shape == (3, 5, 256, 448) and video.min() >= -1 and video.max() <= 1
    for f in (0, 4):
        x, y, _, _ = pose(scene, f / 4)
        centre = ((video[:, f, round(y), round(x)] + 1) * 127.5).round()
        assert torch.allclose(centre, torch.tensor(COLOURS[scene.colour], dtype=torch.float32), atol=1)
    assert pose(scene, 1)[0] - pose(scene, 0)[0] == pytest.approx(scene.travel)


def test_degradation_scales_the_release_numbers_to_the_tiny_preset():
    release = scaled_degradation(2560, 448)
    assert release.factor == pytest.approx(RELEASE_FACTOR) and release.kernels == RELEASE_KERNELS
    assert release.sigma == pytest.approx(RELEASE_SIGMA)
    tiny = scaled_degradation(448, 224)
    assert tiny.factor == pytest.approx((2.8, 5.6)) and tiny.kernels == (3, 5) and tiny.sigma == pytest.approx((1.5, 2.15))
    unscaled = scaled_degradation(448, 224, release_factor=True)  # SPEC.md's factor, the tiny preset's blur
    assert unscaled.factor == pytest.approx(RELEASE_FACTOR) and unscaled.sigma == tiny.sigma
    assert unscaled.kernels == tiny.kernels
    video = SyntheticClips(0, 2, 5, 128, 64).clips([0, 1])
    one = degrade(video, (64, 32), tiny, torch.Generator().manual_seed(0))
    assert one.shape == (2, 3, 5, 32, 64)
    assert torch.equal(one, degrade(video, (64, 32), tiny, torch.Generator().manual_seed(0)))
    # Blurred: much less pixel-to-pixel variation than a plain resize.
    plain = torch.nn.functional.interpolate(video[:, :, 0], size=(32, 64), mode="area")
    assert one[:, :, 0].diff(dim=-1).abs().mean() < 0.5 * plain.diff(dim=-1).abs().mean()
    coarse = degrade(video, (64, 32), unscaled, torch.Generator().manual_seed(0))  # less of the clip survives
    assert (coarse[:, :, 0] - plain).pow(2).mean() > 1.3 * (one[:, :, 0] - plain).pow(2).mean()


@pytest.fixture(scope="module")
def real_clips(tmp_path_factory):
    from pixelwizard.video import encode_video

    root = tmp_path_factory.mktemp("real")
    (root / "clips").mkdir()
    for name, colour in (("a", 200), ("b", 60)):
        frames = np.full((6, 48, 80, 3), colour, dtype=np.uint8)
        encode_video(iter(frames), root / "clips" / f"{name}.mp4", fps=8)
    lines = [{"video": "clips/a.mp4", "caption": "a light clip"}, {"video": "clips/b.mp4", "caption": "a dark clip"}]
    (root / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root


def test_real_clips_are_read_cropped_and_resized(real_clips):
    data = open_dataset(str(real_clips / "captions.jsonl"), frames=5, width=64, height=32, size=0, seed=0)
    assert isinstance(data, RealClips) and len(data) == 2 and data.caption(1) == "a dark clip"
    clips = data.clips([0, 1])
    assert clips.shape == (2, 3, 5, 32, 64)
    assert clips[0].mean() > 0.3 > -0.3 > clips[1].mean()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"video": "clips/a.mp4", "caption": "ok"}\n{"video": "clips/a.mp4", "caption": \n', "captions.jsonl:2: not valid JSON"),
        ('{"video": "clips/a.mp4", "caption": "ok"}\n\n{"video": "clips/zz.mp4", "caption": "x"}\n', "captions.jsonl:3: video"),
        ('{"video": "clips/a.mp4"}\n', "captions.jsonl:1: \"caption\""),
        ('["clips/a.mp4"]\n', "captions.jsonl:1: expected an object"),
        ('{"video": "clips/a.mp4", "caption": "ok"}\n{"video": "clips/junk.mp4", "caption": "x"}\n',
         "captions.jsonl:2: video .*junk.mp4 cannot be read"),
        ('{"video": "clips/a.mp4", "caption": "too short for 9 frames"}\n', "captions.jsonl:1: video .* has 6 frames, need at least 9"),
        (b"\xff\xfe not text", "captions.jsonl: not UTF-8 text"),
    ],
)
def test_a_bad_captions_line_is_named_by_file_and_line(real_clips, tmp_path, content, message):
    """Every line, and every clip it names, is checked when the source opens: before any training."""
    bad = real_clips / "captions.jsonl"
    broken = bad.with_name("broken") / "captions.jsonl"
    broken.parent.mkdir(exist_ok=True)
    (broken.parent / "clips").mkdir(exist_ok=True)
    (broken.parent / "clips" / "a.mp4").write_bytes((real_clips / "clips" / "a.mp4").read_bytes())
    (broken.parent / "clips" / "junk.mp4").write_bytes(b"not a video")
    broken.write_bytes(content) if isinstance(content, bytes) else broken.write_text(content)
    frames = 9 if "too short" in str(content) else 5
    with pytest.raises(DatasetError, match=message):
        RealClips(broken, frames=frames, width=64, height=32)


@pytest.fixture
def own_clips(real_clips, tmp_path):
    """A copy of the real clips, whose captions file a test may change."""
    import shutil

    return Path(shutil.copytree(real_clips, tmp_path / "real"))


def test_a_captions_file_reads_as_prompt_files_do_bom_crlf_and_a_line_separator_inside_a_caption(own_clips):
    """A byte order mark had made line 1 "not valid JSON", and U+2028 (valid inside a JSON string) had split a line."""
    captions = own_clips / "captions.jsonl"
    captions.write_bytes(b"\xef\xbb\xbf" + json.dumps({"video": "clips/a.mp4", "caption": "one\u2028two"},
                                                       ensure_ascii=False).encode() + b"\r\n{\"video\": 1}\r\n")
    with pytest.raises(DatasetError, match="captions.jsonl:2: expected an object"):  # numbered as an editor shows it
        RealClips(captions, frames=5, width=64, height=32)
    captions.write_bytes(captions.read_bytes().split(b"\r\n")[0] + b"\r\n")
    assert RealClips(captions, frames=5, width=64, height=32).caption(0) == "one\u2028two"


@pytest.fixture
def damaged_clip(own_clips):
    """A captions file whose one clip, on line 2, has its second half zeroed: its header counts 48 frames, which the
    check at opening reads, and fewer than the 33 the tests ask for decode (24 with the ffmpeg seen here); returned
    with that count."""
    from pixelwizard.video import encode_video, probe_video, read_video

    clip = own_clips / "clips" / "damaged.mp4"
    encode_video(iter(np.random.default_rng(0).integers(0, 255, (48, 32, 64, 3), dtype=np.uint8)), clip, fps=8)
    data = bytearray(clip.read_bytes())
    start = data.index(b"mdat") + (len(data) - data.index(b"mdat")) // 2
    clip.write_bytes(bytes(data[:start]) + bytes(len(data) - start))
    decoded = read_video(clip).shape[0]
    assert probe_video(clip).frames == 48 and decoded < 33
    captions = own_clips / "damaged.jsonl"  # after a blank line
    captions.write_text("\n" + json.dumps({"video": "clips/damaged.mp4", "caption": "a damaged clip"}) + "\n")
    return captions, decoded


def test_a_clip_that_decodes_short_of_its_header_is_named_by_file_and_line_when_read(damaged_clip):
    captions, decoded = damaged_clip
    data = RealClips(captions, frames=33, width=64, height=32)  # the header's count passes the opening check
    with pytest.raises(DatasetError, match=rf"damaged.jsonl:2: video .*damaged.mp4 decodes to {decoded} frames, need "
                                           r"at least 33 \(damaged\?\)"):
        data.clips([0])


def test_train_vae_stopped_by_such_a_clip_is_one_line_exit_2_and_writes_nothing(damaged_clip, tmp_path):
    """It had ended in a traceback, exit 1, at whatever step first drew the clip."""
    from typer.testing import CliRunner

    from cli.main import app

    (captions, decoded), out = damaged_clip, tmp_path / "vae"
    result = CliRunner().invoke(app, ["train", "vae", "--data", str(captions), "--out", str(out), "--frames", "33",
                                      "--width", "64", "--height", "32", "--crop", "32x64", "--steps", "3",
                                      "--batch-size", "3", "--stats-clips", "1", "--device", "cpu"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and lines[0].endswith(
        f"decodes to {decoded} frames, need at least 33 (damaged?); {out} not written"), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real"]  # no bundle, nothing staged beside it


def test_a_missing_dataset_is_named(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(str(tmp_path / "nope.jsonl"), frames=5, width=64, height=32, size=0, seed=0)
    with pytest.raises(DatasetError, match="is a folder; give its captions JSON Lines file"):  # had: "does not exist"
        open_dataset(str(tmp_path), frames=5, width=64, height=32, size=0, seed=0)
    with pytest.raises(DatasetError, match="unknown synthetic world 'synthetic-foo'; choose synthetic, "):
        open_dataset("synthetic-foo", frames=5, width=64, height=32, size=0, seed=0)


def test_object_mask_covers_exactly_the_pixels_drawn_in_the_object_colour():
    scene = next(s for s in (scene_for(3, i) for i in range(500)) if s.texture == "solid" and s.pattern == "plain")
    video = render_scene(scene, 5, 224, 128)
    mask = object_mask(scene, 5, 224, 128)
    assert mask.shape == (5, 128, 224) and 0 < mask.mean() < 0.5
    colour = torch.tensor(COLOURS[scene.colour], dtype=torch.float32).view(3, 1, 1, 1) / 127.5 - 1
    background = torch.tensor(COLOURS[scene.background], dtype=torch.float32).view(3, 1, 1, 1) / 127.5 - 1
    assert torch.allclose(video, background + (colour - background) * mask.unsqueeze(0), atol=1e-5)


def test_latent_grid_mask_follows_the_causal_vae_frame_groups():
    mask = torch.zeros(1, 9, 4, 4)
    mask[0, 0, 0, 0] = 1.0  # frame 0 -> latent frame 0
    mask[0, 3, :2, :2] = 0.5  # frames 1..4 -> latent frame 1
    mask[0, 8, 2:, 2:] = 1.0  # frames 5..8 -> latent frame 2
    grid = latent_grid_mask(mask, (3, 2, 2), temporal=4)
    assert grid.shape == (1, 1, 3, 2, 2)
    assert grid[0, 0, 0, 0, 0] == pytest.approx(0.25) and grid[0, 0, 0].sum() == pytest.approx(0.25)
    assert grid[0, 0, 1, 0, 0] == pytest.approx(0.5) and grid[0, 0, 1].sum() == pytest.approx(0.5)
    assert grid[0, 0, 2, 1, 1] == pytest.approx(1.0) and grid[0, 0, 2].sum() == pytest.approx(1.0)


def _first_index(source: SyntheticClips, pattern: str) -> int:
    return next(i for i in range(len(source)) if source.scene(i).pattern == pattern)


def test_random_cells_redraw_only_the_background_pattern_and_follow_their_seed():
    regular = SyntheticClips(3, 60, 5, 448, 256)
    random_cells = open_dataset("synthetic-random-cells", frames=5, width=448, height=256, size=60, seed=3)
    assert isinstance(random_cells, SyntheticClips) and random_cells.random_cells
    for pattern in ("plain", "checkered", "striped", "dotted"):
        i = _first_index(regular, pattern)
        before, after = regular.clips([i])[0], random_cells.clips([i])[0]
        assert torch.equal(after, random_cells.clips([i])[0])  # fixed by (seed, index)
        cover = regular.object_masks([i], 448, 256)[0]
        assert torch.allclose(before[:, cover == 1], after[:, cover == 1], atol=1e-5)  # the object is untouched
        changed = (before - after).abs().amax(dim=0)[cover == 0].gt(0.05).float().mean()
        assert changed == 0 if pattern == "plain" else changed > 0.05, pattern


def test_random_checks_are_coin_flips_and_random_dots_keep_their_size():
    regular = SyntheticClips(4, 60, 1, 448, 256)
    random_cells = SyntheticClips(4, 60, 1, 448, 256, random_cells=True)
    i = _first_index(regular, "checkered")
    base = torch.tensor(COLOURS[regular.scene(i).background]) / 127.5 - 1
    centres = random_cells.clips([i])[0, :, 0, 6::12, 6::12]  # one pixel per check, (3, rows, cols)
    shaded = (centres - base.view(3, 1, 1)).abs().amax(dim=0) > 0.05
    regular_shaded = (regular.clips([i])[0, :, 0, 6::12, 6::12] - base.view(3, 1, 1)).abs().amax(dim=0) > 0.05
    assert 0.3 < shaded.float().mean() < 0.7  # about half the checks are shaded ...
    assert 0.3 < (shaded == regular_shaded).float().mean() < 0.7  # ... and not in the regular alternation
    j = _first_index(regular, "dotted")
    background = torch.tensor(COLOURS[regular.scene(j).background]) / 127.5 - 1
    outside = regular.object_masks([j], 448, 256)[0, 0] == 0

    def dot_area(video):
        return ((video[0, :, 0] - background.view(3, 1, 1)).abs().amax(dim=0) > 0.05)[outside].float().sum()

    assert torch.isclose(dot_area(random_cells.clips([j])), dot_area(regular.clips([j])), rtol=0.1)
    assert not torch.equal(random_cells.clips([j]), regular.clips([j]))


def test_random_cells_are_the_same_at_every_output_size():
    """The anchor synthesis renders at the detail size; other sizes must show the same random cells."""
    large = SyntheticClips(5, 60, 1, 448, 256, random_cells=True)
    small = SyntheticClips(5, 60, 1, 224, 128, random_cells=True)
    for pattern in ("checkered", "striped", "dotted"):
        i = _first_index(large, pattern)
        shrunk = torch.nn.functional.interpolate(large.clips([i])[0].transpose(0, 1), size=(128, 224), mode="area")
        shrunk = shrunk.transpose(0, 1)
        regular = SyntheticClips(5, 60, 1, 224, 128).clips([i])[0]  # the same scene with regular cells
        assert (shrunk - small.clips([i])[0]).abs().mean() < 0.02 < (shrunk - regular).abs().mean(), pattern


def test_grain_offsets_each_background_cell_by_a_random_uniform_amount_and_leaves_the_object():
    regular = SyntheticClips(6, 60, 3, 448, 256)
    grainy = open_dataset("synthetic-grain", frames=3, width=448, height=256, size=60, seed=6)
    assert isinstance(grainy, SyntheticClips) and grainy.grain and not grainy.random_cells
    i = next(i for i in range(60) if regular.scene(i).pattern == "plain" and max(COLOURS[regular.scene(i).background]) < 200
             and min(COLOURS[regular.scene(i).background]) > 55)  # no clamping at black or white
    before, after = regular.clips([i])[0], grainy.clips([i])[0]
    assert torch.equal(after, grainy.clips([i])[0])  # fixed by (seed, index)
    cover = regular.object_masks([i], 448, 256)[0]
    assert torch.allclose(before[:, cover == 1], after[:, cover == 1], atol=1e-5)  # the object is untouched
    offset = (after - before) * 127.5  # 8-bit values
    assert torch.allclose(offset[0], offset[1], atol=1e-3) and torch.allclose(offset[0], offset[2], atol=1e-3)  # grey
    uncovered = (cover[0] == 0) & (cover[2] == 0)
    assert torch.allclose(offset[:, 0][:, uncovered], offset[:, 2][:, uncovered], atol=1e-3)  # static: every frame alike
    side, amplitude = GRAIN
    cells = offset[0, 0, int(side) // 2 :: int(side), int(side) // 2 :: int(side)]  # one pixel per cell
    visible = cover[0, int(side) // 2 :: int(side), int(side) // 2 :: int(side)] == 0
    values = cells[visible]
    assert values.abs().max() <= amplitude + 1e-3
    assert values.mean().abs() < 2 and abs(values.std().item() - amplitude / 3**0.5) < 2  # uniform in +-amplitude
    assert not cover[0, : int(side), : int(side)].any()
    inside = offset[0, 0, : int(side), : int(side)]  # the first cell is one value throughout
    assert torch.allclose(inside, inside[0, 0].expand_as(inside), atol=1e-3)
    x, y = torch.arange(448.0).view(1, 448) + 0.5, torch.arange(256.0).view(256, 1) + 0.5
    first, second = grain(x, y, 1), grain(x, y, 2)  # other seeds, unrelated grain
    assert abs(torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1]) < 0.1


def test_a_counterfactual_scene_changes_the_shape_and_sometimes_the_colour_and_nothing_else():
    changed_colour = 0
    for index in range(200):
        scene = scene_for(3, index)
        other = counterfactual(scene, random.Random(index))
        assert other.shape != scene.shape
        assert other == dataclasses.replace(scene, shape=other.shape, colour=other.colour)  # place, motion, texture kept
        background = COLOURS[other.background]
        assert min(colour_distance(COLOURS[other.colour], c) for c in (background, shade(background))) >= 90
        if other.texture_colour is not None:
            assert colour_distance(COLOURS[other.colour], COLOURS[other.texture_colour]) >= 90
        changed_colour += other.colour != scene.colour
    assert 70 < changed_colour < 130  # about half


def test_counterfactual_clips_redraw_only_the_object_and_follow_seed_and_index():
    source = SyntheticClips(4, 20, 5, 128, 64)
    same, other = source.clips([2, 5]), source.counterfactual_clips([2, 5])
    assert torch.equal(other, source.counterfactual_clips([2, 5])) and other.shape == same.shape
    for k, i in enumerate([2, 5]):
        scene = source.scene(i)
        redrawn = counterfactual(scene, random.Random(f"pixelwizard-counterfactual:4:{i}"))
        assert torch.equal(other[k], render_scene(redrawn, 5, 128, 64))
        outside = (source.object_masks([i], 128, 64)[0] == 0) & (object_mask(redrawn, 5, 128, 64) == 0)
        assert torch.equal(same[k][:, outside], other[k][:, outside])  # the background is untouched
        assert not torch.equal(same[k], other[k])
