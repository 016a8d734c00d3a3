"""The whole pipeline at real size with random weights: time and peak memory of every stage.

Components: UMT5-XXL-sized text encoder, Wan2.2 VAE, 5B anchor (stock) and detail (ours)
transformers, built directly on the GPU in bf16 and then placed under a memory plan. Stages run
through ``PixelWizardPipeline``'s own stage calls. Long stages are timed in part and
extrapolated, and every result says how:

- anchor: 2 and 5 steps timed, line fitted, read at 50 steps (the fixed part holds the model move);
- detail: model move timed, then 1 CFG step, times the preset's 4 steps;
- decode: one width chunk, times the chunk count; the chunk is decoded whole (``--decode-full``),
  or over 2 and 4 latent frames with a line read at 31 (peak memory extrapolated the same way);
- encode: a synthetic 121-frame clip of the preset size through ``encode_video`` (CPU, ffmpeg).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from benchmarks.common import (
    TEXT_TOKENS,
    TINY_SIZES,
    allocated_gb,
    build,
    detail_extra_config,
    environment,
    log,
    peak_gb,
    pick_device,
    randomize_,
    reset_peak,
    text_encoder_config,
    timed,
    transformer_config,
    vae_config,
    write_json,
)
from pixelwizard.decoding import DECODE_OVERLAP, chunk_spans
from pixelwizard.default_model import TINY_VOCABULARY
from pixelwizard.models.tokenizer import build_word_tokenizer
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel
from pixelwizard.pipeline import PixelWizardPipeline
from pixelwizard.presets import Preset, get_preset
from pixelwizard.sampling import flow_scheduler

PROMPT = "a red circle moves slowly across a checkered background"
NEGATIVE = "blurry, low quality"
ANCHOR_FIT = (2, 5)
DECODE_FIT = (2, 4)


def build_pipeline(device: str, tiny: bool) -> PixelWizardPipeline:
    """Every component at its real size (or tiny), random weights, on ``device`` in bf16."""
    tokenizer = build_word_tokenizer(TINY_VOCABULARY, TEXT_TOKENS)
    dtype = torch.bfloat16
    text = build(lambda: UMT5EncoderModel(UMT5Config(**text_encoder_config(tiny, len(tokenizer)))), device, dtype)
    vae = build(lambda: AutoencoderKLWan(**vae_config(tiny)), device, dtype)
    config = transformer_config(tiny)
    anchor = build(lambda: WanTransformer3DModel(**config), device, dtype)
    detail = build(lambda: PixelWizardTransformer3DModel(**config, **detail_extra_config(tiny)), device, dtype)
    for module in (detail.dt_embedder, detail.anchor_injector):
        randomize_(module)
    return PixelWizardPipeline(tokenizer=tokenizer, text_encoder=text, vae=vae, transformer=anchor,
                               detail_transformer=detail, scheduler=flow_scheduler(5.0))


def preset_for(name: str, tiny: bool) -> Preset:
    if not tiny:
        return get_preset(name)
    size, anchor = TINY_SIZES[name], TINY_SIZES["anchor"]
    return get_preset(name).with_overrides(num_frames=size.frames, anchor_width=anchor.width,
                                           anchor_height=anchor.height, detail_width=size.width,
                                           detail_height=size.height)


def line_fit(x: tuple[int, int], y: tuple[float, float], at: float) -> tuple[float, float, float]:
    """(fixed, per unit, value at ``at``) of the line through two points."""
    slope = (y[1] - y[0]) / (x[1] - x[0])
    fixed = y[0] - slope * x[0]
    return fixed, slope, fixed + slope * at


def stage(device: str, fn) -> tuple[float, Any, float | None, float | None]:
    """(seconds, result, peak GB, GB allocated before): one stage call, peak reset first."""
    before = allocated_gb(device)
    reset_peak(device)
    seconds, result = timed(fn, device)
    return seconds, result, peak_gb(device), before


def text_stage(pipe: PixelWizardPipeline, device: str) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    pipe.encode_prompt(PROMPT, NEGATIVE)  # warm-up: kernels and tokenizer
    seconds, embeddings, peak, before = stage(device, lambda: pipe.encode_prompt(PROMPT, NEGATIVE))
    log(f"text: {seconds:.2f} s, peak {peak}")
    return {"seconds": seconds, "peak_gb": peak, "allocated_before_gb": before}, embeddings


def anchor_stage(pipe, preset: Preset, embeddings, device: str, batch_cfg: bool) -> tuple[dict, torch.Tensor]:
    """Time 2 and 5 steps (after a 1-step warm-up), read the line at the preset's step count."""
    pipe.generate_anchor(PROMPT, 1, preset.with_overrides(anchor_steps=1), batch_cfg=batch_cfg, embeddings=embeddings)
    times, peaks, latent = [], [], None
    for steps in ANCHOR_FIT:
        run = preset.with_overrides(anchor_steps=steps)
        seconds, latent, peak, before = stage(
            device, lambda: pipe.generate_anchor(PROMPT, 1, run, batch_cfg=batch_cfg, embeddings=embeddings)
        )
        times.append(seconds)
        peaks.append(peak)
    fixed, per_step, total = line_fit(ANCHOR_FIT, tuple(times), preset.anchor_steps)
    row = {"batch_cfg": batch_cfg, "timed_steps": list(ANCHOR_FIT), "timed_seconds": times,
           "fixed_seconds": fixed, "seconds_per_step": per_step, "steps": preset.anchor_steps,
           "seconds": total, "extrapolated": True, "peak_gb": max(peaks) if peaks[0] is not None else None,
           "allocated_before_gb": before}
    log(f"anchor batch_cfg={batch_cfg}: {per_step:.3f} s/step, {total:.1f} s for {preset.anchor_steps}")
    return row, latent


def detail_stage(pipe, preset: Preset, anchor: torch.Tensor, embeddings, device: str, batch_cfg: bool) -> dict:
    """Model move timed alone, then one CFG step; the stage is the move plus ``detail_steps`` steps."""
    offloader = pipe._offloader
    before = allocated_gb(device)
    move = timed(lambda: offloader.load(pipe.detail_transformer), device)[0] if offloader else 0.0
    run = preset.with_overrides(detail_steps=1)
    try:
        seconds, _, peak, _ = stage(
            device, lambda: pipe.render_detail(anchor, PROMPT, 2, run, batch_cfg=batch_cfg, embeddings=embeddings)
        )
    except torch.cuda.OutOfMemoryError as exc:
        row = {"batch_cfg": batch_cfg, "error": f"out of memory: {str(exc).splitlines()[0][:200]}"}
        log(f"detail {preset.name} batch_cfg={batch_cfg}: {row['error']}")
        return row
    finally:
        if offloader:
            offloader.unload(pipe.detail_transformer)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    row = {"batch_cfg": batch_cfg, "move_seconds": move, "seconds_per_step": seconds, "steps": preset.detail_steps,
           "seconds": move + preset.detail_steps * seconds, "timed_steps": 1, "extrapolated": True,
           "peak_gb": peak, "allocated_before_gb": before}
    log(f"detail {preset.name} batch_cfg={batch_cfg}: {seconds:.1f} s/step, {row['seconds']:.1f} s, peak {peak}")
    return row


def decode_stage(pipe, preset: Preset, device: str, cudnn_benchmark: bool, full: bool) -> dict:
    """One width chunk, times the chunk count: over all latent frames (``full``), or over 2 and 4
    latent frames with a line read at the full count."""
    torch.backends.cudnn.benchmark = cudnn_benchmark
    shape = pipe.latent_shape(preset.detail_width, preset.detail_height, preset.num_frames)
    start, end = chunk_spans(shape[-1], preset.decode_chunks, DECODE_OVERLAP)[0]
    counts = (shape[2],) if full else DECODE_FIT
    latent = torch.randn(shape[:2] + (max(counts),) + shape[3:4] + (end - start,))
    offloader = pipe._offloader
    move = timed(lambda: offloader.load(pipe.vae), device)[0] if offloader else 0.0
    times, peaks = [], []
    try:
        pipe.decode(latent[:, :, :1])  # warm-up (and cuDNN autotuning when enabled)
        for frames in counts:
            seconds, _, peak, _ = stage(device, lambda: pipe.decode(latent[:, :, :frames]))
            times.append(seconds)
            peaks.append(peak)
    finally:
        if offloader:
            offloader.unload(pipe.vae)
        torch.backends.cudnn.benchmark = False
    if full:
        chunk, peak, per_frame = times[0], peaks[0], times[0] / shape[2]
    else:
        _, per_frame, chunk = line_fit(DECODE_FIT, tuple(times), shape[2])
        peak = line_fit(DECODE_FIT, tuple(peaks), shape[2])[2] if peaks[0] is not None else None
    row = {"cudnn_benchmark": cudnn_benchmark, "chunks": preset.decode_chunks, "chunk_latent_width": end - start,
           "timed_latent_frames": list(counts), "timed_seconds": times, "seconds_per_latent_frame": per_frame,
           "chunk_seconds": chunk, "move_seconds": move, "seconds": move + preset.decode_chunks * chunk,
           "extrapolated": not full, "peak_gb_timed": peaks, "peak_gb": peak}
    log(f"decode {preset.name} full={full} cudnn_benchmark={cudnn_benchmark}: {row['seconds']:.1f} s, peak {peak}")
    return row


def compiled_stages(pipe, preset: Preset, anchor: torch.Tensor, embeddings, device: str) -> dict:
    """Regional torch.compile of both transformers: the anchor stage, and one detail step twice
    (the first call pays for compilation)."""
    for model in (pipe.transformer, pipe.detail_transformer):
        model.compile_repeated_blocks(fullgraph=True)
    first = timed(lambda: pipe.generate_anchor(PROMPT, 1, preset.with_overrides(anchor_steps=1),
                                                embeddings=embeddings), device)[0]
    anchor_row, _ = anchor_stage(pipe, preset, embeddings, device, batch_cfg=True)
    run = preset.with_overrides(detail_steps=1)
    calls = [timed(lambda: pipe.render_detail(anchor, PROMPT, 2, run, embeddings=embeddings), device)[0]
             for _ in range(2)]
    row = {"anchor_first_call_seconds": first, "anchor": anchor_row, "detail_first_call_seconds": calls[0],
           "detail_seconds_per_step": calls[1], "detail_batch_cfg": True}
    log(f"compiled: {row}")
    return row


def synthetic_frames(preset: Preset) -> np.ndarray:
    """A colour pattern with mild noise panning sideways: compresses like footage, not like static."""
    h, w, n = preset.detail_height, preset.detail_width, preset.num_frames
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 4, (h, w)).astype(np.float32)
    base = np.stack([np.sin(x / w * 6 + y / h * 3 + c) for c in range(3)], axis=-1) * 100 + 127
    base = np.clip(base + noise[..., None], 0, 255).astype(np.uint8)
    return np.stack([np.roll(base, 8 * t, axis=1) for t in range(n)])


def encode_stage(preset: Preset) -> dict:
    from pixelwizard.video import encode_video

    frames = synthetic_frames(preset)
    with tempfile.TemporaryDirectory() as folder:
        seconds, path = timed(lambda: encode_video(iter(frames), Path(folder) / "clip.mp4", fps=preset.fps), "cpu")
        size_mb = path.stat().st_size / 1e6
    log(f"encode {preset.name}: {seconds:.1f} s, {size_mb:.1f} MB")
    return {"seconds": seconds, "frames": len(frames), "file_mb": size_mb, "codec": "h264", "synthetic": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline.json"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized components and sizes, to test the script")
    parser.add_argument("--presets", default="2k,4k")
    parser.add_argument("--offload", default="model", choices=["none", "model"])
    parser.add_argument("--attention-backend", default=None)
    parser.add_argument("--detail-cfg", default="batched,sequential",
                        help="comma list of batched/sequential; 'preset=mode' pins one preset's (mode 'skip' skips it)")
    parser.add_argument("--decode-full", action="store_true",
                        help="decode a whole chunk (all latent frames) instead of fitting 2 and 4 frames")
    parser.add_argument("--decode-cudnn-benchmark", action="store_true",
                        help="also decode with torch.backends.cudnn.benchmark on (first preset)")
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="last: regional torch.compile, anchor stage and one detail step of the first preset")
    args = parser.parse_args()

    device = pick_device(args.device)
    result: dict[str, Any] = {"environment": environment(device), "offload": args.offload,
                              "attention_backend": args.attention_backend, "presets": {}}
    build_seconds, pipe = timed(lambda: build_pipeline(device, args.tiny), device)
    place_seconds, _ = timed(lambda: pipe.place(device, offload=args.offload,
                                                 attention_backend=args.attention_backend), device)
    result.update(build_seconds=build_seconds, place_seconds=place_seconds, resident_gb=allocated_gb(device))
    log(f"built in {build_seconds:.1f} s, placed in {place_seconds:.1f} s, resident {allocated_gb(device)}")

    result["text"], embeddings = text_stage(pipe, device)
    names = args.presets.split(",")
    first = preset_for(names[0], args.tiny)
    anchors = [anchor_stage(pipe, first, embeddings, device, batch) for batch in (True, False)]
    result["anchor"] = [row for row, _ in anchors]
    anchor_latent = anchors[0][1]
    write_json(args.out, result)

    pinned = dict(item.split("=") for item in args.detail_cfg.split(",") if "=" in item)
    modes = [m for m in args.detail_cfg.split(",") if "=" not in m]
    for index, name in enumerate(names):
        preset = preset_for(name, args.tiny)
        rows: dict[str, Any] = {"preset": name}
        wanted = [pinned[name]] if name in pinned else modes
        rows["detail"] = [detail_stage(pipe, preset, anchor_latent, embeddings, device, m == "batched")
                          for m in wanted if m != "skip"]
        result["presets"][name] = rows
        write_json(args.out, result)
        rows["decode"] = [decode_stage(pipe, preset, device, cudnn_benchmark=False, full=args.decode_full)]
        if args.decode_cudnn_benchmark and index == 0:
            rows["decode"].append(decode_stage(pipe, preset, device, cudnn_benchmark=True, full=args.decode_full))
        write_json(args.out, result)
        if not args.skip_encode:
            rows["encode"] = encode_stage(preset)
            write_json(args.out, result)
    if args.compile:
        try:
            result["compiled"] = compiled_stages(pipe, first, anchor_latent, embeddings, device)
        except Exception as exc:  # a compiler failure is a finding, not a reason to lose the run
            result["compiled"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        write_json(args.out, result)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
