"""Detail-training throughput at the shipped tiny size: optimiser steps per second of ``train_detail``.

Runs the real trainer (SPEC.md 7's objective, bf16 autocast, AdamW, EMA) on a latent cache of
random values with the shipped bundle's shapes, once per torch.compile mode, flow-matching and
self-consistency steps timed apart (a self-consistency step runs the model three times). A
profiler table of the eager mixed step shows where the time goes (docs/training.md, run 14's
open question). Results: JSON + Markdown under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import traceback
from pathlib import Path

import torch

from benchmarks.common import environment, log, pick_device, write_json
from pixelwizard.default_model import build_tiny_pipeline, default_model_path
from pixelwizard.devices import allow_tf32
from pixelwizard.training.captions import CaptionEmbeddings
from pixelwizard.training.config import ShortcutConfig, TrainConfig
from pixelwizard.training.latents import LatentCache
from pixelwizard.training.trainer import train_detail

CLIPS = 64  # random clips in the cache; the step's cost does not depend on their values


def random_cache(pipe, frames: int, width: int, height: int, device: str) -> LatentCache:
    """A cache with the shapes ``train encode`` writes for ``frames`` x ``height`` x ``width`` clips."""
    vae, patch = pipe.vae.config, pipe.detail_transformer.config.patch_size
    channels, spatial = vae.z_dim, vae.scale_factor_spatial
    latent_frames = (frames - 1) // vae.scale_factor_temporal + 1
    shape = (CLIPS, channels, latent_frames, height // spatial, width // spatial)
    grid = (CLIPS, channels, latent_frames, shape[3] // patch[1], shape[4] // patch[2])
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(shape, generator=generator).half()
    degraded = torch.randn(grid, generator=generator).half()
    captions = [f"a red circle moving right over a blue background {i}" for i in range(CLIPS)]
    # The detail trainer never reads the clean anchors; the synthesised ones stand in for them.
    return LatentCache(latents=latents, anchors=degraded, degraded=degraded, captions=captions).to(device)


def steps_per_second(pipe, cache, text, cfg: TrainConfig, warmup: int, steps: int) -> float:
    """Time ``steps`` optimiser steps after ``warmup`` untimed ones (compilation happens there)."""
    train_detail(pipe.detail_transformer, cache, text, dataclasses.replace(cfg, steps=warmup), lambda _: None)
    result = train_detail(pipe.detail_transformer, cache, text, dataclasses.replace(cfg, steps=steps), lambda _: None)
    return steps / result.seconds


def profile_table(pipe, cache, text, cfg: TrainConfig, steps: int) -> str:
    """The profiler's top GPU (or CPU) operators over ``steps`` mixed steps, as text."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        train_detail(pipe.detail_transformer, cache, text, dataclasses.replace(cfg, steps=steps), lambda _: None)
    key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=None, help="cpu, cuda; default: cuda if there is one")
    parser.add_argument("--tiny", action="store_true", help="CPU check: the small random model, few steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--modes", default="off,default,max-autotune-no-cudagraphs,reduce-overhead")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.startswith("cuda"):
        allow_tf32()  # as `pixelwizard train` does; it also sets cudnn.benchmark, which this does not
    if args.tiny:
        pipe = build_tiny_pipeline(seed=0, size="small").to(device)
        frames, width, height, warmup, steps, batch = 9, 64, 32, 2, 3, 2
    else:
        from pixelwizard.bundle import load_bundle

        pipe = load_bundle(default_model_path(), device=device, dtype=torch.float32)
        frames, width, height, warmup, steps, batch = 17, 448, 256, 15, 60, args.batch_size
    cache = random_cache(pipe, frames, width, height, device)
    text = CaptionEmbeddings(pipe, cache.captions)
    base = TrainConfig(batch_size=batch, lr=1e-5, ema=0.99, log_every=10_000).validate()
    rows = []
    for mode in args.modes.split(","):
        for kind, sc_prob in (("fm", 0.0), ("sc", 1.0)):
            cfg = dataclasses.replace(base, compile=mode, shortcut=ShortcutConfig(sc_prob=sc_prob)).validate()
            row = {"compile": mode, "step": kind, "batch": batch}
            try:
                row["steps_per_s"] = round(steps_per_second(pipe, cache, text, cfg, warmup, steps), 2)
            except Exception as exc:  # a mode that fails is reported, the others still run
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log(traceback.format_exc())
            rows.append(row)
            log(str(row))
        torch._dynamo.reset()
    table = profile_table(pipe, cache, text, dataclasses.replace(base, compile="off"), steps=10 if not args.tiny else 2)
    name = "training_step_tiny" if args.tiny else "training_step"
    write_json(args.out / f"{name}.json", {"environment": environment(device), "rows": rows, "profile_eager": table})
    lines = ["| compile | step | batch | steps/s |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['compile']} | {r['step']} | {r['batch']} | {r.get('steps_per_s', r.get('error'))} |" for r in rows]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n\n```\n" + table + "\n```\n")
    print("\n".join(lines))
    print(table)


if __name__ == "__main__":
    main()
