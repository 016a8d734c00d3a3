"""MP4 output for rendered clips, plus decoding helpers to verify what was written.

Everything runs through the ffmpeg binary bundled with the ``imageio-ffmpeg`` wheel, driven by
``ffmpeg-python``, so no system ffmpeg (or ffprobe) is required.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Literal

import ffmpeg
import imageio_ffmpeg
import numpy as np

from pixelwizard.leftovers import remove_stale

__all__ = [
    "Codec",
    "VideoDecodeError",
    "VideoEncodeError",
    "VideoInfo",
    "encode_video",
    "probe_video",
    "read_video",
]

Codec = Literal["h264", "hevc10"]

# ffmpeg log verbosity for every run: warnings and errors only, so the kept stderr tail is signal.
_LOG_ARGS = ("-hide_banner", "-nostats", "-loglevel", "warning")
# How much of ffmpeg's stderr is kept for error messages, and how many lines of it are shown.
_STDERR_KEEP_BYTES = 8192
_STDERR_SHOW_LINES = 15
# How long to let ffmpeg finish exiting on its own after it closed its end of our pipe.
_EXIT_GRACE_S = 10.0
# Largest CRF accepted by libx264 (8-bit) and libx265; x264 silently clamps larger values.
_MAX_CRF = 51


class VideoEncodeError(RuntimeError):
    """Encoding failed; the message is a one-line summary, then ffmpeg's last stderr lines."""


class VideoDecodeError(RuntimeError):
    """Decoding or probing failed; message layout as for :class:`VideoEncodeError`."""


@dataclass(frozen=True)
class VideoInfo:
    """Basic facts about a video file's first video stream."""

    width: int
    height: int
    frames: int
    fps: float


@dataclass(frozen=True)
class _CodecSettings:
    """How one ``codec`` choice maps onto ffmpeg encoder options."""

    encoder: str
    pix_fmt: str
    default_crf: int
    extra: tuple[tuple[str, str], ...]


_CODECS: dict[str, _CodecSettings] = {
    "h264": _CodecSettings("libx264", "yuv420p", 18, ()),
    # hvc1 tagging is what Apple players require for HEVC in MP4; x265 logs at info by default.
    "hevc10": _CodecSettings(
        "libx265", "yuv420p10le", 20, (("tag:v", "hvc1"), ("x265-params", "log-level=warning"))
    ),
}

# Convert to and tag as BT.709 limited range (the HD/UHD standard), so players don't fall back
# to BT.601 guesses that visibly shift colours at 2K/4K. The tags are set on the frames
# (setparams) because the encoder takes them from there.
_BT709_TAGS = {
    "colorspace": "bt709",
    "color_primaries": "bt709",
    "color_trc": "bt709",
    "range": "tv",
}


@functools.cache
def _ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped with imageio-ffmpeg (looked up once)."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def _file_url(path: Path) -> str:
    """An ffmpeg URL that always means this local file, whatever characters its name holds."""
    return "file:" + os.fspath(path.absolute())


class _StderrTail:
    """Drains a subprocess's stderr on a daemon thread, keeping only the last few KB.

    Draining continuously means ffmpeg can never block on a full stderr pipe while we are busy
    writing to its stdin or reading its stdout.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._truncated = False
        self._thread = threading.Thread(target=self._drain, name="ffmpeg-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        """Read until EOF, trimming the buffer to the newest bytes."""
        with self._stream:
            while chunk := self._stream.read1(65536):
                self._buf += chunk
                if len(self._buf) > _STDERR_KEEP_BYTES:
                    del self._buf[: len(self._buf) - _STDERR_KEEP_BYTES]
                    self._truncated = True

    def lines(self) -> list[str]:
        """The last stderr lines, once the process has exited (waits for the pipe's EOF)."""
        self._thread.join(timeout=_EXIT_GRACE_S)
        lines = bytes(self._buf).decode("utf-8", "replace").splitlines()
        if self._truncated and lines:
            lines = lines[1:]  # the first kept line was cut mid-way
        return [line for line in lines if line.strip()][-_STDERR_SHOW_LINES:]


def _error_message(summary: str, stderr_lines: list[str]) -> str:
    """One-line summary, followed by ffmpeg's output when there is any."""
    if not stderr_lines:
        return summary
    return summary + "\nffmpeg output (last lines):\n" + "\n".join(stderr_lines)


def _last_line_suffix(stderr_lines: list[str]) -> str:
    """``": <last ffmpeg line>"`` for one-line summaries, or empty."""
    return f": {stderr_lines[-1].strip()}" if stderr_lines else ""


class _FrameSourceError(Exception):
    """The caller's frame iterator raised; wraps the original exception."""

    def __init__(self, index: int, cause: Exception) -> None:
        super().__init__(
            f"frame iterator raised {type(cause).__name__} at frame {index}: {cause}"
        )


def _next_frame(
    frames: Iterator[Any], index: int, shape: tuple[int, ...] | None
) -> np.ndarray | None:
    """Pull, convert and validate frame ``index``; ``None`` when the iterator is exhausted."""
    try:
        obj = next(frames)
    except StopIteration:
        return None
    except Exception as exc:
        raise _FrameSourceError(index, exc) from exc
    try:
        arr = np.asarray(obj)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise VideoEncodeError(
            f"frame {index}: cannot convert {type(obj).__name__} to a numpy array "
            f"(GPU tensors must be moved to the CPU first): {exc}"
        ) from exc
    if arr.dtype != np.uint8:
        raise VideoEncodeError(f"frame {index}: dtype is {arr.dtype}, expected uint8")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise VideoEncodeError(
            f"frame {index}: shape is {arr.shape}, expected (height, width, 3) RGB"
        )
    if shape is not None and arr.shape != shape:
        raise VideoEncodeError(
            f"frame {index}: size {arr.shape[1]}x{arr.shape[0]} differs from the first "
            f"frame's {shape[1]}x{shape[0]}"
        )
    return np.ascontiguousarray(arr)


def _check_encode_args(fps: float, codec: str, crf: int | None) -> tuple[_CodecSettings, int]:
    """Validate the encoder arguments; returns the codec settings and the effective CRF."""
    if codec not in _CODECS:
        raise ValueError(f"codec must be one of {sorted(_CODECS)}, got {codec!r}")
    settings = _CODECS[codec]
    if (
        isinstance(fps, bool)
        or not isinstance(fps, numbers.Real)
        or not math.isfinite(fps)
        or fps <= 0
    ):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if crf is None:
        return settings, settings.default_crf
    if isinstance(crf, bool) or not isinstance(crf, numbers.Integral) or not 0 <= crf <= _MAX_CRF:
        raise ValueError(f"crf must be an integer from 0 to {_MAX_CRF}, got {crf!r}")
    return settings, int(crf)


def _spawn_encoder(
    width: int, height: int, fps: float, settings: _CodecSettings, crf: int, out: Path
) -> subprocess.Popen[bytes]:
    """Start ffmpeg reading raw RGB frames on stdin and writing an MP4 to ``out``."""
    rate = Fraction(float(fps)).limit_denominator(100_000)  # 24000/1001 stays exact
    stream = ffmpeg.input(
        "pipe:", f="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=str(rate)
    )
    stream = stream.filter("scale", out_color_matrix="bt709", out_range="tv").filter(
        "setparams", **_BT709_TAGS
    )
    output = ffmpeg.output(
        stream,
        _file_url(out),
        f="mp4",
        vcodec=settings.encoder,
        pix_fmt=settings.pix_fmt,
        crf=crf,
        movflags="+faststart",
        **dict(settings.extra),
    ).global_args(*_LOG_ARGS)
    return ffmpeg.run_async(
        output, cmd=_ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True, overwrite_output=True
    )


def _fsync_file(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _discard_encoder(proc: subprocess.Popen[bytes], tmp: Path) -> None:
    """Stop ffmpeg (if still running) and remove its partial output."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.stdin.close()  # type: ignore[union-attr]
    except OSError:
        pass  # flushing into a dead ffmpeg fails; the pipe is closed regardless
    proc.wait()
    tmp.unlink(missing_ok=True)


def encode_video(
    frames: Iterable[Any],
    path: str | os.PathLike[str],
    *,
    fps: float = 24,
    codec: Codec = "h264",
    crf: int | None = None,
) -> Path:
    """Encode uint8 HxWx3 RGB frames into an MP4 at ``path`` and return that path.

    Frames (numpy arrays, or anything ``np.asarray`` accepts such as CPU torch tensors) are
    streamed to ffmpeg one at a time, so memory stays at about one frame. ``codec`` is
    ``"h264"`` (libx264, yuv420p, CRF 18 by default) or ``"hevc10"`` (libx265, yuv420p10le,
    tagged hvc1, CRF 20 by default). The file appears atomically: ffmpeg writes a hidden temp
    file next to ``path`` that replaces ``path`` only on success. Any failure, including an
    exception from ``frames``, raises :class:`VideoEncodeError` and leaves nothing behind; a
    temp file a killed process left for ``path`` goes once it is a day old.
    """
    settings, crf = _check_encode_args(fps, codec, crf)
    path = Path(path)
    source = iter(frames)
    try:
        frame = _next_frame(source, 0, None)
    except _FrameSourceError as exc:
        raise VideoEncodeError(str(exc)) from exc.__cause__
    if frame is None:
        raise VideoEncodeError(f"no frames to encode into {path}")
    height, width = frame.shape[:2]
    if width == 0 or height == 0 or width % 2 or height % 2:
        raise VideoEncodeError(
            f"frame size {width}x{height} is not supported: {settings.pix_fmt} needs a "
            "non-zero, even width and height (crop or pad the frames)"
        )
    shape = frame.shape

    remove_stale(path.parent, f".{path.name}.", rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp\.mp4")  # killed encodes
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp.mp4")
    proc = _spawn_encoder(width, height, fps, settings, crf, tmp)
    stderr = _StderrTail(proc.stderr)  # type: ignore[arg-type]
    index = 0
    try:
        while frame is not None:
            proc.stdin.write(frame)  # type: ignore[union-attr]
            frame = None  # drop our reference before pulling the next frame
            index += 1
            frame = _next_frame(source, index, shape)
        proc.stdin.close()  # type: ignore[union-attr]
        returncode = proc.wait()
        if returncode != 0:
            lines = stderr.lines()
            raise VideoEncodeError(
                _error_message(
                    f"ffmpeg failed with exit code {returncode} writing {path}"
                    + _last_line_suffix(lines),
                    lines,
                )
            )
        _fsync_file(tmp)  # the frames on disk before the name says the video is finished
        os.replace(tmp, path)
        _fsync_file(path.parent)
    except VideoEncodeError:
        _discard_encoder(proc, tmp)
        raise
    except BrokenPipeError as exc:
        # ffmpeg closed its stdin: it is exiting on an error. Let it finish so its code and
        # message are the real ones rather than our kill.
        try:
            proc.wait(timeout=_EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        _discard_encoder(proc, tmp)
        lines = stderr.lines()
        summary = (
            f"ffmpeg exited (code {proc.returncode}) while frame {index} was being sent for {path}"
            + _last_line_suffix(lines)
        )
        raise VideoEncodeError(_error_message(summary, lines)) from exc
    except _FrameSourceError as exc:
        _discard_encoder(proc, tmp)
        raise VideoEncodeError(_error_message(str(exc), stderr.lines())) from exc.__cause__
    except Exception as exc:
        _discard_encoder(proc, tmp)
        summary = f"encoding {path} failed: {type(exc).__name__}: {exc}"
        raise VideoEncodeError(_error_message(summary, stderr.lines())) from exc
    except BaseException:
        _discard_encoder(proc, tmp)
        raise
    return path


def _run_capture(stream: Any, what: str, path: Path) -> bytes:
    """Run a bounded-output ffmpeg command and return its stdout, raising VideoDecodeError."""
    try:
        out, _ = ffmpeg.run(
            stream.global_args("-nostdin", *_LOG_ARGS),
            cmd=_ffmpeg_exe(),
            capture_stdout=True,
            capture_stderr=True,
        )
    except ffmpeg.Error as exc:
        lines = [ln for ln in exc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        lines = lines[-_STDERR_SHOW_LINES:]
        raise VideoDecodeError(
            _error_message(f"ffmpeg could not {what} {path}" + _last_line_suffix(lines), lines)
        ) from None
    return out


def _existing(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, raising FileNotFoundError early with a plain message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    return path


_PPM_HEADER = re.compile(rb"P6\s+(\d+)\s+(\d+)\s+255\s")


def _decoded_size(path: Path) -> tuple[int, int]:
    """(width, height) of decoded frames, found by decoding the first frame as a PPM image.

    The PPM header states the size exactly, which is sturdier than parsing ffmpeg's log text.
    """
    stream = ffmpeg.input(_file_url(path)).output(
        "pipe:", map="0:v:0", f="image2pipe", vcodec="ppm", pix_fmt="rgb24", **{"frames:v": 1}
    )
    data = _run_capture(stream, "decode the first frame of", path)
    match = _PPM_HEADER.match(data)
    if match is None:
        raise VideoDecodeError(f"no decodable video frame in {path}")
    return int(match[1]), int(match[2])


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, frame count and average frame rate of the first video stream of ``path``.

    Frames are counted from the stream's packets (one per frame in MP4) without decoding them;
    fps is frames divided by the summed packet durations (0.0 if the file gives none).
    """
    path = _existing(path)
    width, height = _decoded_size(path)
    stream = ffmpeg.input(_file_url(path)).output("pipe:", map="0:v:0", c="copy", f="framecrc")
    listing = _run_capture(stream, "read the packets of", path).decode("ascii", "replace")
    time_base = Fraction(0)
    frames = 0
    duration = 0
    for line in listing.splitlines():
        if line.startswith("#tb 0:"):
            time_base = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            frames += 1
            duration += int(line.split(",")[3])  # stream, dts, pts, duration, size, hash
    seconds = duration * time_base
    fps = float(frames / seconds) if seconds > 0 else 0.0
    return VideoInfo(width=width, height=height, frames=frames, fps=fps)


def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode every frame of ``path``'s first video stream into a (T, H, W, 3) uint8 RGB array.

    Meant for verification and tests: the whole clip is held in memory.
    """
    path = _existing(path)
    width, height = _decoded_size(path)
    stream = (
        ffmpeg.input(_file_url(path))
        .output("pipe:", map="0:v:0", f="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
        .global_args("-nostdin", *_LOG_ARGS)
    )
    proc = ffmpeg.run_async(stream, cmd=_ffmpeg_exe(), pipe_stdout=True, pipe_stderr=True)
    stderr = _StderrTail(proc.stderr)  # type: ignore[arg-type]
    data = bytearray()
    with proc.stdout:  # type: ignore[union-attr]
        while chunk := proc.stdout.read1(1 << 20):  # type: ignore[union-attr]
            data += chunk
    returncode = proc.wait()
    frame_bytes = width * height * 3
    if returncode != 0 or len(data) % frame_bytes:
        lines = stderr.lines()
        problem = (
            f"exit code {returncode}"
            if returncode
            else f"{len(data)} bytes is not a whole number of {width}x{height} frames"
        )
        raise VideoDecodeError(
            _error_message(f"decoding {path} failed ({problem})" + _last_line_suffix(lines), lines)
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, height, width, 3)
