"""One uninterrupted render at real size, random weights: the pipeline's own call, then the MP4.

Unlike ``benchmarks.pipeline`` (each stage timed in part and extrapolated), this runs
``PixelWizardPipeline.__call__`` once per preset exactly as ``pixelwizard render`` does under the
preset's execution plan (offload, CFG batching), in a fresh process with nothing warmed up, then
encodes the frames with ``encode_video`` and decodes the file back to check it. Stage boundaries
come from the pipeline's progress callback (the device synchronised there); the time and peak
GPU memory between two boundaries are that stage's. ``--repeat 2`` renders the preset a second
time in the same process (what the second prompt of a batch costs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import environment, log, peak_gb, pick_device, reset_peak, sync, timed, write_json
from benchmarks.pipeline import PROMPT, NEGATIVE, build_pipeline, preset_for
from pixelwizard.presets import execution_plan
from pixelwizard.video import encode_video, probe_video


class StageClock:
    """Progress callback that closes a stage when its last step is reported: seconds and peak GB."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.stages: dict[str, dict[str, Any]] = {}
        self.mark = 0.0

    def start(self) -> None:
        sync(self.device)
        reset_peak(self.device)
        self.mark = time.perf_counter()

    def close(self, stage: str) -> None:
        sync(self.device)
        now = time.perf_counter()
        self.stages[stage] = {"seconds": now - self.mark, "peak_gb": peak_gb(self.device)}
        log(f"  {stage}: {now - self.mark:.1f} s, peak {self.stages[stage]['peak_gb']}")
        reset_peak(self.device)
        self.mark = now

    def __call__(self, stage: str, done: int, total: int) -> None:
        if done == total:
            self.close(stage)


def render_once(pipe, name: str, tiny: bool, device: str, video: Path, index: int) -> dict[str, Any]:
    """Render ``name`` end to end (text, anchor, detail, decode), encode and verify the MP4."""
    preset = preset_for(name, tiny)
    plan = execution_plan(name)
    clock = StageClock(device)
    clock.start()
    began = time.perf_counter()
    output = pipe(PROMPT, prompt_id=f"bench-{index}", seed=0, preset=preset, negative_prompt=NEGATIVE,
                  batch_cfg=plan.batch_cfg, on_progress=clock)
    clock.start()
    encode_video(iter(output.frames.numpy()), video, fps=preset.fps)
    clock.close("encode")
    total = time.perf_counter() - began
    info = probe_video(video)
    expected = (preset.detail_width, preset.detail_height, preset.num_frames)
    got = (info.width, info.height, info.frames)
    if got != expected:
        raise RuntimeError(f"{video}: {got} (width, height, frames), expected {expected}")
    row = {"preset": name, "run": index, "seconds": total, "stages": clock.stages,
           "peak_gb": max((s["peak_gb"] or 0.0) for s in clock.stages.values()) if device.startswith("cuda") else None,
           "batch_cfg": plan.batch_cfg, "frames": list(output.frames.shape), "video_mb": video.stat().st_size / 1e6,
           "video_checked": {"width": info.width, "height": info.height, "frames": info.frames}}
    log(f"{name} run {index}: {total:.1f} s end to end, peak {row['peak_gb']}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/end_to_end.json"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized components and sizes, to test the script")
    parser.add_argument("--presets", default="4k")
    parser.add_argument("--repeat", type=int, default=1, help="renders per preset in the same process")
    args = parser.parse_args()

    device = pick_device(args.device)
    names = args.presets.split(",")
    plans = {execution_plan(name) for name in names}
    if len(plans) != 1:
        raise SystemExit("error: the presets in one run must share an execution plan")
    plan = plans.pop()
    result: dict[str, Any] = {"environment": environment(device), "offload": plan.offload,
                              "attention_backend": plan.attention_backend, "prompt": PROMPT, "renders": []}
    build_seconds, pipe = timed(lambda: build_pipeline(device, args.tiny), device)
    place_seconds, _ = timed(lambda: pipe.place(device, offload=plan.offload,
                                                attention_backend=plan.attention_backend), device)
    result.update(build_seconds=build_seconds, place_seconds=place_seconds)
    log(f"built in {build_seconds:.1f} s, placed ({plan.offload}) in {place_seconds:.1f} s")
    write_json(args.out, result)
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            for index in range(args.repeat):
                result["renders"].append(render_once(pipe, name, args.tiny, device, Path(folder) / f"{name}-{index}.mp4", index))
                write_json(args.out, result)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
