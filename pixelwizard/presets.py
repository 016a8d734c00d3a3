"""Render presets: the anchor and detail stage settings of SPEC.md section 3, plus a CPU-sized one."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pixelwizard.decode_chunks import DECODE_OVERLAP, chunk_spans

COARSEST_VAE_STRIDE = 16  # pixels per latent column of the Wan2.2 VAE; the tiny VAE's 8 gives more columns
# Upper bounds, so that a typo is a one-line error rather than an allocation that fails (or swaps) minutes later.
MAX_SIDE = 8192  # pixels: 8K
MAX_FRAMES = 1025  # 4k+1 frames, about 43 s at 24 fps (Wan2.2 is trained on 121)
MAX_STEPS = 1000  # a sampler step per training timestep at most (NUM_TRAIN_TIMESTEPS of pixelwizard.sampling)
MAX_FPS = 1000


class PresetError(ValueError):
    """A preset name or a size that the method cannot render."""


@dataclass(frozen=True)
class Preset:
    """Everything that fixes the shape and the sampler of a two-stage render."""

    name: str
    num_frames: int
    anchor_width: int
    anchor_height: int
    anchor_steps: int
    anchor_shift: float
    anchor_guidance: float
    detail_width: int
    detail_height: int
    detail_steps: int
    detail_shift: float
    detail_guidance: float
    decode_chunks: int
    fps: int = 24

    def validate(self) -> "Preset":
        """Raise PresetError naming the first value the model cannot take."""
        for label, value in (
            ("anchor width", self.anchor_width),
            ("anchor height", self.anchor_height),
            ("width", self.detail_width),
            ("height", self.detail_height),
        ):
            if value <= 0 or value % 32:
                raise PresetError(f"{label} {value} is not a positive multiple of 32")
            if value > MAX_SIDE:
                raise PresetError(f"{label} {value} is larger than {MAX_SIDE} pixels (8K)")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise PresetError(f"frame count {self.num_frames} is not of the form 4k+1 (e.g. 17, 121)")
        if self.num_frames > MAX_FRAMES:
            raise PresetError(f"frame count {self.num_frames} is more than {MAX_FRAMES}")
        for label, value in (("anchor steps", self.anchor_steps), ("detail steps", self.detail_steps)):
            if not 1 <= value <= MAX_STEPS:
                raise PresetError(f"{label} must lie in [1, {MAX_STEPS}] (the model's training timesteps), got {value}")
        for label, value in (("anchor shift", self.anchor_shift), ("detail shift", self.detail_shift)):
            if not math.isfinite(value) or value <= 0:
                raise PresetError(f"{label} must be a positive number, got {value}")
        for label, value in (("anchor guidance", self.anchor_guidance), ("detail guidance", self.detail_guidance)):
            if not math.isfinite(value) or value < 0:
                raise PresetError(f"{label} must be a number >= 0, got {value}")
        if not 1 <= self.fps <= MAX_FPS:
            raise PresetError(f"fps must lie in [1, {MAX_FPS}], got {self.fps}")
        try:  # checked on the coarsest latent grid, the release VAE's 16 pixels a column (SPEC.md 6)
            chunk_spans(self.detail_width // COARSEST_VAE_STRIDE, self.decode_chunks, DECODE_OVERLAP)
        except ValueError as exc:
            raise PresetError(f"decode chunks {self.decode_chunks} do not fit width {self.detail_width}: {exc}") from None
        return self

    def with_overrides(self, **overrides: object) -> "Preset":
        """A copy with the given fields replaced (None values are ignored), validated."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None}).validate()


_ANCHOR = dict(
    num_frames=121, anchor_width=448, anchor_height=256, anchor_steps=50, anchor_shift=5.0, anchor_guidance=5.0
)

PRESETS: dict[str, Preset] = {
    "2k": Preset(
        name="2k", **_ANCHOR, detail_width=2560, detail_height=1440, detail_steps=4, detail_shift=5.5,
        detail_guidance=5.0, decode_chunks=3,
    ),
    "4k": Preset(
        name="4k", **_ANCHOR, detail_width=3840, detail_height=2144, detail_steps=4, detail_shift=5.8,
        detail_guidance=5.0, decode_chunks=4,
    ),
    # Sized for a laptop CPU and the bundled tiny model: 5 latent frames, 16x28 detail latent.
    # Detail CFG 1: the tiny detail model never saw the release's unconditional branch (empty
    # prompt, real anchor; SPEC.md 5 and 7), and at CFG 5 its colours drift (docs/quality.md).
    "tiny": Preset(
        name="tiny", num_frames=17, anchor_width=224, anchor_height=128, anchor_steps=20, anchor_shift=5.0,
        anchor_guidance=5.0, detail_width=448, detail_height=256, detail_steps=4, detail_shift=5.5,
        detail_guidance=1.0, decode_chunks=1,
    ),
}


@dataclass(frozen=True)
class ExecutionPlan:
    """How a render uses the GPU; the defaults per preset are the measured best (docs/performance.md)."""

    offload: str = "none"  # "none": every component stays on the GPU; "model": one component at a time
    batch_cfg: bool = True  # both CFG branches in one forward (no faster on an H100, 1.5x the memory at 2K)
    attention_backend: str | None = None  # a diffusers backend name; None = PyTorch's pick (cuDNN on H100)
    compile: bool = False  # regional torch.compile: 7% faster detail steps, about 20 s to compile


_LARGE = ExecutionPlan(offload="model", batch_cfg=False)
PLANS: dict[str, ExecutionPlan] = {"2k": _LARGE, "4k": _LARGE, "tiny": ExecutionPlan()}


def execution_plan(name: str) -> ExecutionPlan:
    """The preset's GPU plan (the default plan for a preset without one)."""
    return PLANS.get(name, ExecutionPlan())


def get_preset(name: str) -> Preset:
    """The named preset, or PresetError listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
