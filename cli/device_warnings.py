"""A warning before work that a CPU cannot finish in reasonable time: the 2k and 4k presets without a GPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli.errors import err_console

if TYPE_CHECKING:
    from pixelwizard.presets import Preset

SLOW_FACTOR = 8  # detail tokens, relative to the tiny preset's, above which a CPU run is worth a warning


def detail_tokens_over_tiny(preset: Preset) -> float:
    """How many times the tiny preset's detail-stage tokens ``preset`` has: latent frames (the VAE's 4x temporal
    compression, SPEC.md 2) times detail pixels. The same for any bundle, since both sides use its compression."""
    from pixelwizard.presets import get_preset

    tiny = get_preset("tiny")

    def tokens(p: Preset) -> float:
        return ((p.num_frames - 1) // 4 + 1) * p.detail_width * p.detail_height

    return tokens(preset) / tokens(tiny)


def warn_if_slow_on_cpu(preset: Preset, device: str) -> None:
    """One ``warning:`` line when ``preset`` renders on the CPU with many times the tiny preset's detail tokens:
    attention work grows with their square (2k: 199 times the tokens, about 40,000 times the work of a tiny video,
    which takes seconds here), so such a video takes hours."""
    ratio = detail_tokens_over_tiny(preset)
    if device == "cpu" and ratio > SLOW_FACTOR:
        err_console.print(
            f"warning: preset {preset.name} on the CPU: {ratio:.0f} times the tiny preset's detail tokens "
            f"({ratio * ratio:.0f} times its attention work), hours a video; use a GPU (--device cuda) or "
            "--preset tiny", markup=False, highlight=False)
