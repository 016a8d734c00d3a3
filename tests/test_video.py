"""Tests for MP4 encoding/decoding against the real bundled ffmpeg binary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pixelwizard.leftovers import STALE_SECONDS
from pixelwizard.video import (
    VideoDecodeError,
    VideoEncodeError,
    VideoInfo,
    encode_video,
    probe_video,
    read_video,
)

FRAMES, HEIGHT, WIDTH = 17, 48, 64


def gradient_frame(t: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A smooth RGB gradient that drifts with ``t``, so every frame differs."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 3 + t * 6) % 256
    g = (y * 4 + t * 3) % 256
    b = (x + y + t * 2) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def gradient_clip(n: int = FRAMES) -> np.ndarray:
    """``n`` gradient frames stacked as (T, H, W, 3)."""
    return np.stack([gradient_frame(t) for t in range(n)])


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference between two uint8 arrays."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_h264_round_trip(tmp_path: Path) -> None:
    source = gradient_clip()
    out = tmp_path / "clip.mp4"
    assert encode_video(iter(source), out, crf=12) == out
    decoded = read_video(out)
    assert decoded.shape == (FRAMES, HEIGHT, WIDTH, 3) and decoded.dtype == np.uint8
    assert mean_abs_error(decoded, source) < 6
    assert probe_video(out) == VideoInfo(width=WIDTH, height=HEIGHT, frames=FRAMES, fps=24.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    assert out.read_bytes()[4:8] == b"ftyp"


def test_hevc10_round_trip(tmp_path: Path) -> None:
    source = gradient_clip()
    out = encode_video(list(source), tmp_path / "clip.mp4", codec="hevc10", fps=30)
    decoded = read_video(out)
    assert decoded.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert mean_abs_error(decoded, source) < 8
    info = probe_video(out)
    assert (info.frames, info.fps) == (FRAMES, 30.0)
    assert b"hvc1" in out.read_bytes()


def test_fractional_fps_is_kept(tmp_path: Path) -> None:
    frames = [gradient_frame(t) for t in range(4)]
    out = encode_video(frames, tmp_path / "ntsc.mp4", fps=24000 / 1001)
    assert probe_video(out).fps == pytest.approx(24000 / 1001, rel=1e-6)


def test_array_like_and_non_contiguous_frames(tmp_path: Path) -> None:
    class ArrayLike:
        """Stands in for a CPU tensor: only convertible through ``__array__``."""

        def __init__(self, array: np.ndarray) -> None:
            self.array = array

        def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
            return self.array

    source = gradient_clip(4)
    bgr = np.ascontiguousarray(source[..., ::-1])
    frames = [ArrayLike(source[0]), bgr[1][..., ::-1], source[2], bgr[3][..., ::-1]]
    out = encode_video(frames, tmp_path / "mixed.mp4", crf=12)
    assert mean_abs_error(read_video(out), source) < 6


def test_overwrites_existing_file_on_success(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"old")
    encode_video(gradient_clip(2), out)
    assert read_video(out).shape[0] == 2


def test_generator_is_consumed_lazily(tmp_path: Path) -> None:
    """The encoder must stream: earlier frames are freed before the next one is requested."""
    alive_at_pull: list[int] = []
    refs: list[weakref.ref[np.ndarray]] = []

    def frames() -> Iterator[np.ndarray]:
        for t in range(FRAMES):
            alive_at_pull.append(sum(ref() is not None for ref in refs))
            frame = gradient_frame(t)
            refs.append(weakref.ref(frame))
            yield frame
            del frame  # the generator itself keeps nothing once resumed

    encode_video(frames(), tmp_path / "clip.mp4")
    assert len(alive_at_pull) == FRAMES
    # A collect-then-encode implementation would show t frames alive at pull t.
    assert max(alive_at_pull) <= 1
    assert read_video(tmp_path / "clip.mp4").shape[0] == FRAMES


def test_zero_frames(tmp_path: Path) -> None:
    with pytest.raises(VideoEncodeError, match="no frames"):
        encode_video([], tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


def test_odd_size_rejected_without_output(tmp_path: Path) -> None:
    frames = [np.zeros((48, 63, 3), np.uint8)] * 3
    with pytest.raises(VideoEncodeError, match="63x48.*even"):
        encode_video(frames, tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (np.zeros((48, 64, 3), np.float32), "dtype is float32"),
        (np.zeros((48, 64, 4), np.uint8), r"shape is \(48, 64, 4\)"),
        (np.zeros((48, 64), np.uint8), r"shape is \(48, 64\)"),
        ("not a frame", "frame 0"),
    ],
)
def test_bad_frames_rejected(tmp_path: Path, frame: object, problem: str) -> None:
    with pytest.raises(VideoEncodeError, match=problem):
        encode_video([frame], tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


def test_mismatched_frame_size(tmp_path: Path) -> None:
    frames = [gradient_frame(0), gradient_frame(1), gradient_frame(2, height=32)]
    with pytest.raises(VideoEncodeError, match="frame 2: size 64x32 differs .* 64x48"):
        encode_video(frames, tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


def test_iterator_error_leaves_nothing_and_keeps_old_file(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"previous render")

    def frames() -> Iterator[np.ndarray]:
        for t in range(5):
            yield gradient_frame(t)
        raise RuntimeError("renderer crashed")

    with pytest.raises(VideoEncodeError, match="RuntimeError at frame 5: renderer crashed") as info:
        encode_video(frames(), out)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert list(tmp_path.iterdir()) == [out]
    assert out.read_bytes() == b"previous render"


def test_iterator_error_on_first_frame(tmp_path: Path) -> None:
    def frames() -> Iterator[np.ndarray]:
        raise KeyError("missing latent")
        yield  # pragma: no cover - makes this a generator

    with pytest.raises(VideoEncodeError, match="KeyError at frame 0"):
        encode_video(frames(), tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_carries_its_message(tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / "clip.mp4"
    with pytest.raises(VideoEncodeError) as info:
        encode_video(gradient_clip(2)[:, :16, :16], out)
    summary, _, details = str(info.value).partition("\n")
    assert "ffmpeg" in summary and "No such file or directory" in summary
    assert "ffmpeg output" in details
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_dying_mid_stream_stops_consuming(tmp_path: Path) -> None:
    """Frames larger than the pipe buffer make the write hit a broken pipe, not hang."""
    pulled = 0

    def frames() -> Iterator[np.ndarray]:
        nonlocal pulled
        for _ in range(50):
            pulled += 1
            yield np.zeros((512, 512, 3), np.uint8)

    with pytest.raises(VideoEncodeError, match="No such file or directory"):
        encode_video(frames(), tmp_path / "missing-dir" / "clip.mp4")
    assert pulled < 5
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"crf": 99999}, "crf must be an integer from 0 to 51"),
        ({"crf": -1}, "crf must be"),
        ({"fps": 0}, "fps must be"),
        ({"fps": float("nan")}, "fps must be"),
        ({"codec": "vp9"}, "codec must be one of"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        encode_video(gradient_clip(2), tmp_path / "clip.mp4", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "absent.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video")
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        read_video(junk)
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        probe_video(junk)


STREAMING_CHILD = """
import sys, time
from pathlib import Path
import numpy as np
from cli.main import exit_on_stop_signals
from pixelwizard.video import encode_video
exit_on_stop_signals()
def frames():
    for _ in range(3):
        yield np.zeros((64, 64, 3), dtype=np.uint8)
    Path(sys.argv[2]).touch()
    time.sleep(60)
    yield np.zeros((64, 64, 3), dtype=np.uint8)
encode_video(frames(), Path(sys.argv[1]) / "clip.mp4", fps=8)
"""


def _streaming_encode(out: Path, marker: Path) -> "subprocess.Popen[bytes]":
    """A real process encoding ``out/clip.mp4``, returned once it streams and ffmpeg has opened its temp file."""
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-c", STREAMING_CHILD, str(out), str(marker)],
                               cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 60
    while not (marker.exists() and list(out.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return process


def test_the_temp_file_of_an_encode_killed_with_sigkill_goes_with_a_later_encode_a_day_after(tmp_path: Path) -> None:
    import psutil

    out = tmp_path / "out"
    process = _streaming_encode(out, tmp_path / "streaming")
    encoders = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    psutil.wait_procs(encoders, timeout=30)  # the orphaned ffmpeg finishes its file when its input closes
    [left] = list(out.iterdir())
    assert left.name.startswith(".clip.mp4.") and left.name.endswith(".tmp.mp4")

    encode_video(gradient_clip(3), out / "clip.mp4", fps=8)
    assert left.exists()  # a day has not passed: it could be a live encode's
    a_day_ago = time.time() - STALE_SECONDS - 60
    os.utime(left, (a_day_ago, a_day_ago))
    encode_video(gradient_clip(3), out / "clip.mp4", fps=8)
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]
    assert read_video(out / "clip.mp4").shape == (3, HEIGHT, WIDTH, 3)


def test_sigterm_mid_encode_leaves_no_file_and_no_encoder(tmp_path: Path) -> None:
    """A real process gets SIGTERM while ffmpeg is mid-stream; the CLI's handler lets the cleanup run."""
    import psutil

    out = tmp_path / "out"
    process = _streaming_encode(out, tmp_path / "streaming")
    encoders = psutil.Process(process.pid).children(recursive=True)
    assert encoders
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(out.iterdir()) == []
    gone, alive = psutil.wait_procs(encoders, timeout=10)
    assert alive == []
