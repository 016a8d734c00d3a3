"""Clip sources for training: the synthetic world (generated on the fly) and real captioned clips.

Both hand out (B, 3, frames, height, width) videos in [-1, 1] with their captions, so one trainer
trains from scratch on synthetic data and fine-tunes on real data.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Protocol

import torch
import torch.nn.functional as F

from pixelwizard.training.render import object_mask, render_scenes
from pixelwizard.training.scenes import Split, counterfactual, scene_for

PROBE_THREADS = 8  # ffmpeg processes probing a real-clip list at once


@dataclass(frozen=True)
class SyntheticWorld:
    """A --data name that is not a file: the SyntheticClips options that draw it, and how tables name its clips."""

    options: dict
    description: str


SYNTHETIC_WORLDS = {
    "synthetic": SyntheticWorld({}, ""),
    "synthetic-random-cells": SyntheticWorld({"random_cells": True}, " of the world with random background cells"),
    "synthetic-grain": SyntheticWorld({"grain": True}, " of the world with background grain"),
}


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one line (file:line where it applies)."""


class ClipSource(Protocol):
    """Indexed captioned clips of a fixed shape."""

    frames: int
    width: int
    height: int

    def __len__(self) -> int: ...

    def caption(self, index: int) -> str: ...

    def clips(self, indices: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor: ...


@dataclass
class SyntheticClips:
    """``size`` synthetic clips from the dataset ``seed`` (clip i is the same scene everywhere).

    ``random_cells``: backgrounds with random cells (render.py), fine detail the anchor cannot carry;
    ``grain``: background grain, fine detail that the noise hides until late in sampling.
    """

    seed: int
    size: int
    frames: int
    width: int
    height: int
    split: Split = "train"
    random_cells: bool = False
    grain: bool = False

    def __len__(self) -> int:
        return self.size

    def scene(self, index: int):
        return scene_for(self.seed, index, self.split)

    def caption(self, index: int) -> str:
        return self.scene(index).caption

    def clips(self, indices: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        return self._render([self.scene(i) for i in indices], indices, device)

    def counterfactual_clips(self, indices: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """Each clip with its object in another shape (and half the time colour), ``scenes.counterfactual``; same grain."""
        scenes = [counterfactual(self.scene(i), random.Random(f"pixelwizard-counterfactual:{self.seed}:{i}")) for i in indices]
        return self._render(scenes, indices, device)

    def _render(self, scenes: list, indices: Sequence[int], device: torch.device | str) -> torch.Tensor:
        """Clips of ``scenes``, with clip ``indices``' background cells and grain (fixed by dataset seed and index)."""
        seeds = [self.seed * 1_000_003 + i for i in indices]
        return render_scenes(scenes, self.frames, self.width, self.height, device,
                             seeds if self.random_cells else None, seeds if self.grain else None)

    def object_masks(self, indices: Sequence[int], width: int, height: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Object coverage of each clip at ``width`` x ``height``, (B, frames, height, width) in [0, 1]."""
        return torch.stack([object_mask(self.scene(i), self.frames, width, height, device) for i in indices])


def fit_clip(video: torch.Tensor, frames: int, width: int, height: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, frames, height, width) in [-1, 1]: first frames, centre crop, resize."""
    clip = video[:frames].permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    _, _, h, w = clip.shape
    if w * height > h * width:  # too wide: crop the width
        crop = round(h * width / height)
        clip = clip[..., (w - crop) // 2 : (w - crop) // 2 + crop]
    else:
        crop = round(w * height / width)
        clip = clip[..., (h - crop) // 2 : (h - crop) // 2 + crop, :]
    clip = F.interpolate(clip, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return (clip / 127.5 - 1).clamp(-1, 1).permute(1, 0, 2, 3)


class RealClips:
    """Video files listed with captions in a JSON Lines file: ``{"video": "a.mp4", "caption": "..."}``.

    Video paths are relative to the captions file's folder. Every line is checked when the
    source is opened, so a bad line stops a run before any training (``<file>:<line>: <problem>``).
    """

    def __init__(self, captions_file: str | Path, frames: int, width: int, height: int) -> None:
        self.path = Path(captions_file)
        self.frames, self.width, self.height = frames, width, height
        if self.path.is_dir():
            raise DatasetError(f"dataset {self.path} is a folder; give its captions JSON Lines file")
        if not self.path.is_file():
            raise DatasetError(f"dataset {self.path} does not exist")
        listed = self._read()
        self.lines = [where for where, _, _ in listed]  # "<file>:<line>" of each clip, for errors found when read
        self.items = [(video, caption) for _, video, caption in listed]
        if not self.items:
            raise DatasetError(f"{self.path}: no clips listed")

    def _read(self) -> list[tuple[str, Path, str]]:
        """The listed clips as (``<file>:<line>``, video, caption), every line and video checked."""
        listed: list[tuple[str, Path, str]] = []
        try:
            text = self.path.read_bytes().decode("utf-8-sig")  # a byte order mark, as some editors write, is fine
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{self.path}: not UTF-8 text (byte {exc.start})") from None
        # Newlines only, as pixelwizard.prompts does: str.splitlines would also split at U+2028 inside a caption.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            where = f"{self.path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("video"), str):
                raise DatasetError(f'{where}: expected an object with a "video" path and a "caption"')
            caption = record.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                raise DatasetError(f'{where}: "caption" must be a non-empty string')
            video = self.path.parent / record["video"]
            if not video.is_file():
                raise DatasetError(f"{where}: video {video} " + ("is not a file" if video.exists() else "does not exist"))
            listed.append((where, video, caption.strip()))
        self._check_videos(listed)
        return listed

    def _check_videos(self, listed: list[tuple[str, Path, str]]) -> None:
        """Every listed video decodes and has enough frames; probed a few at a time (one ffmpeg each, so that
        a long list opens in a fraction of the time), problems raised for the first bad line."""
        from pixelwizard.video import VideoDecodeError  # here: synthetic data needs no ffmpeg (nor a GPU image's lack)

        with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
            probes = pool.map(_frame_count, [video for _, video, _ in listed])
            for (where, video, _), frames in zip(listed, probes):
                if isinstance(frames, VideoDecodeError):
                    raise DatasetError(f"{where}: video {video} cannot be read ({str(frames).splitlines()[0]})")
                if frames < self.frames:
                    raise DatasetError(f"{where}: video {video} has {frames} frames, need at least {self.frames}")

    def __len__(self) -> int:
        return len(self.items)

    def caption(self, index: int) -> str:
        return self.items[index][1]

    def clips(self, indices: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        from pixelwizard.video import read_video

        batch = []
        for i in indices:
            video = torch.from_numpy(read_video(self.items[i][0]).copy())
            if video.shape[0] < self.frames:  # its header counted enough (checked at opening), but not all decode
                raise DatasetError(f"{self.lines[i]}: video {self.items[i][0]} decodes to {video.shape[0]} frames, "
                                   f"need at least {self.frames} (damaged?)")
            batch.append(fit_clip(video, self.frames, self.width, self.height))
        return torch.stack(batch).to(device)


def _frame_count(video: Path):
    """The video's frame count, or the VideoDecodeError that reading it raised (returned, to be reported in line
    order)."""
    from pixelwizard.video import VideoDecodeError, probe_video

    try:
        return probe_video(video).frames
    except VideoDecodeError as exc:
        return exc


def open_dataset(data: str, *, frames: int, width: int, height: int, size: int, seed: int) -> ClipSource:
    """'synthetic' (``size`` clips of dataset ``seed``), 'synthetic-random-cells' or 'synthetic-grain' (the
    same scenes with random background cells or background grain) or the path of a captions JSON Lines file."""
    if data in SYNTHETIC_WORLDS:
        return SyntheticClips(seed=seed, size=size, frames=frames, width=width, height=height, **SYNTHETIC_WORLDS[data].options)
    if data.startswith("synthetic") and "/" not in data and PurePath(data).suffix == "" and not Path(data).exists():
        raise DatasetError(f"unknown synthetic world {data!r}; choose {', '.join(SYNTHETIC_WORLDS)}")
    return RealClips(data, frames=frames, width=width, height=height)
