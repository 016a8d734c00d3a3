"""The training run behind the shipped tiny bundle, in one wall-clock budget (docs/training.md).

Runs ``pixelwizard train`` commands as subprocesses, one after the other:

1. ``vae``, from ``--start`` (``random``, or a bundle whose VAE training continues);
2. ``encode`` synthetic clips into a latent cache with that VAE;
3. ``anchor``: plain flow matching, the text encoder trained with it (``--train-text-encoder``);
   continues the start bundle's anchor model and text encoder;
4. the detail model's flow-matching warm start from fresh weights (``detail --sc-prob 0 --reinit``),
   on the text encoder of step 3;
5. from the warm start, in parallel: shortcut training (the shipped model), flow matching only
   (the baseline), and one ablation per technique (uniform k, fixed-grid dt, calibration off);
6. assemble the bundle (float16 weights) and save the other detail models beside it.

``--phases vae`` stops after 1 and leaves the VAE in ``<out>/vae``; ``--phases transformers``
skips 1 and takes the VAE from ``--start`` (so one run can be split over shorter calls);
``--phases anchor`` runs 2 and 3 only and writes ``<out>/anchor-bundle`` (its detail model is still
the start bundle's, trained on the old text encoder: follow with ``--phases detail``);
``--phases detail`` keeps ``--start``'s VAE, text encoder and anchor model and runs 2, 4-6.
``--branches`` picks which branches of 5 to train, ``--branch-steps`` caps their steps (so a branch
trained in a later call can match the others' step count), and ``--warmstart`` takes the warm start
from an earlier call's ``<out>/warmstart`` instead of training it. ``--data`` picks the synthetic
world of the VAE and the latent cache (``synthetic-random-cells``: random background cells);
``--release-factor`` synthesises the anchors with SPEC.md's unscaled downsample factor.
Every command, its exit code, times and step counts go to ``<out>/recipe.json``.

On several GPUs (``gpu_plan``) the VAE, the anchor model and the detail warm start each train
data-parallel on all of them (torchrun), and the branches get one GPU each where there are enough.

    python -m pixelwizard.training.recipe --work /tmp/work --out /tmp/result [--budget 530] [--toy]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pixelwizard.training.config import ConfigError, ShortcutConfig
from pixelwizard.training.datasets import SYNTHETIC_WORLDS

# Detail-model branches trained from the warm start: folder name -> extra `train detail` flags.
BRANCHES: dict[str, list[str]] = {
    "shortcut": [],
    "fm_only": ["--sc-prob", "0"],
    "uniform_k": ["--k-sampling", "uniform"],
    "fixed_dt": ["--dt-grid", "fixed"],
    "no_calibration": ["--no-calibration"],
}
STARTUP_SECONDS = 15.0  # a command's import, load and save time outside its --max-seconds
PHASES = ("all", "vae", "transformers", "anchor", "detail")
# Where each phase ends, as a fraction of the budget: (vae, encode, anchor model, detail warm start).
SPLITS = {"all": (0.30, 0.36, 0.60, 0.72), "vae": (1.0, 1.0, 1.0, 1.0), "transformers": (0.0, 0.10, 0.50, 0.64),
          "anchor": (0.0, 0.16, 1.0, 1.0), "detail": (0.0, 0.13, 0.13, 0.42)}
DECAY = ["--lr-decay", "cosine"]
OBJECT_WEIGHT = 4.0  # anchor model: the object's latent cells count 5x (docs/training.md, run 3)


@dataclass(frozen=True)
class Scale:
    """Data sizes and batch sizes of a run: the real one (GPU) or a toy one (CPU check of the recipe)."""

    vae: list[str]
    encode: list[str]
    anchor_batch: int
    detail_batch: int
    device: str


FULL = Scale(
    vae=["--frames", "9", "--crop", "96x160", "--batch-size", "12"],
    encode=["--clips", "8192", "--batch-size", "32"],  # about 1.3 MB a clip at 4x8x8: 11 GB in all
    anchor_batch=64,
    detail_batch=32,
    device="cuda",
)
TOY = Scale(
    vae=["--frames", "5", "--width", "128", "--height", "64", "--crop", "64x128", "--batch-size", "2", "--stats-clips", "4"],
    encode=["--clips", "24", "--batch-size", "8", "--frames", "5", "--width", "128", "--height", "64",
            "--anchor-width", "64", "--anchor-height", "32"],
    anchor_batch=4,
    detail_batch=4,
    device="cpu",
)


def gpu_plan(count: int, branches: tuple[str, ...] = tuple(BRANCHES)) -> dict[str, list[int]]:
    """GPU indices per command for ``count`` GPUs ([] = the default device, one process).

    One GPU (or none): everything shares it, as processes side by side. Several: ``vae``,
    ``anchor`` and ``detail_warmstart`` on all (data-parallel, one after the other), ``encode`` on
    GPU 0, and ``branches`` in order one GPU each, the ones left over sharing the last (the shipped
    shortcut model and its flow-matching-only baseline come first).
    """
    names = ("vae", "encode", "anchor", "detail_warmstart", *branches)
    if count <= 1:
        return {name: [] for name in names}
    every = list(range(count))
    plan = {"vae": every, "encode": [0], "anchor": every, "detail_warmstart": every}
    return plan | {name: [min(i, count - 1)] for i, name in enumerate(branches)}


class Runner:
    """Starts train commands, logs them, and tells each how long it may run."""

    def __init__(self, work: Path, deadline: float, device: str, gpus: dict[str, list[int]]) -> None:
        self.work, self.deadline, self.device, self.gpus = work, deadline, device, gpus
        self.records: list[dict] = []
        self.started = time.monotonic()

    def seconds_until(self, fraction_of_budget: float | None = None) -> float:
        """Training seconds left before a point of the budget (default: the end), net of startup."""
        end = self.deadline if fraction_of_budget is None else self.started + fraction_of_budget * (self.deadline - self.started)
        return max(5.0, end - time.monotonic() - STARTUP_SECONDS)

    def start(self, name: str, args: list[str], max_seconds: float) -> tuple[subprocess.Popen, dict]:
        """Start ``pixelwizard train ARGS`` on this command's GPUs (under torchrun where it has several)."""
        train_args = [*args, "--device", self.device, "--max-seconds", f"{max_seconds:.0f}",
                      "--report", str(self.work / f"{name}.json")]
        gpus = self.gpus.get(name, [])
        env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
        launcher = [sys.executable, "-m", "cli.train"]
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        if len(gpus) > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc-per-node={len(gpus)}", "-m", "cli.train"]
        record = {"name": name, "command": " ".join(["pixelwizard", "train", *train_args]), "gpus": gpus,
                  "start_s": self.elapsed()}
        log = (self.work / f"{name}.log").open("w")
        process = subprocess.Popen([*launcher, *train_args], stdout=log, stderr=subprocess.STDOUT, env=env)
        print(f"[{record['start_s']:6.1f}s] start {name} on GPUs {gpus or 'default'}: {record['command']}", flush=True)
        return process, record

    def finish(self, process: subprocess.Popen, record: dict) -> bool:
        record["exit_code"] = process.wait()
        record["end_s"] = self.elapsed()
        report = self.work / f"{record['name']}.json"
        if report.is_file():
            body = json.loads(report.read_text())
            record["steps"], record["train_seconds"] = body.get("steps"), body.get("seconds")
            record["last_losses"] = body["history"][-1] if body.get("history") else None
        self.records.append(record)
        print(f"[{record['end_s']:6.1f}s] end {record['name']}: exit {record['exit_code']}, steps {record.get('steps')}", flush=True)
        return record["exit_code"] == 0

    def run(self, name: str, args: list[str], max_seconds: float) -> bool:
        return self.finish(*self.start(name, args, max_seconds))

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)


def assemble(components: Path, work: Path, out: Path, branches_done: list[str]) -> None:
    """The shipped bundle (``components``' other models + shortcut detail model, float16) and the other detail models."""
    import torch

    from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel

    if "shortcut" in branches_done:
        _write_float16(components, out / "pixelwizard-tiny", detail=work / "shortcut" / "detail_transformer")
    for name in branches_done:
        if name == "shortcut":
            continue
        model = PixelWizardTransformer3DModel.from_pretrained(work / name / "detail_transformer", torch_dtype=torch.float16)
        model.save_pretrained(out / "variants" / name, safe_serialization=True)


@dataclass(frozen=True)
class DetailPlan:
    """Which detail branches to train, how many steps at most, an earlier call's warm start (None = train it),
    and the self-consistency start timesteps (None = the trainer's default, SPEC.md 7's)."""

    branches: tuple[str, ...] = tuple(BRANCHES)
    steps: int = 1_000_000
    warmstart: Path | None = None
    sc_starts: str | None = None


def run_recipe(
    work: Path, out: Path, budget: float, scale: Scale, start: str = "random", phases: str = "all", gpus: int = 1,
    detail: DetailPlan = DetailPlan(), data: str = "synthetic", release_factor: bool = False,
) -> dict:
    """Run the phases on ``gpus`` GPUs; write and return the summary (ok is False when their result could not be made)."""
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(work, time.monotonic() + budget, scale.device, gpu_plan(gpus, detail.branches))
    summary = {"ok": False, "branches": [], "start": start, "phases": phases, "gpus": gpus,
               "requested_branches": list(detail.branches), "branch_steps": detail.steps,
               "warmstart": str(detail.warmstart) if detail.warmstart else None, "sc_starts": detail.sc_starts,
               "data": data, "release_factor": release_factor}
    try:
        summary |= _phases(runner, work, out, scale, start, phases, detail, data, release_factor)
    finally:
        summary |= {"records": runner.records, "total_s": runner.elapsed()}
        (out / "recipe.json").write_text(json.dumps(summary, indent=1))
    return summary


def _phases(
    runner: Runner, work: Path, out: Path, scale: Scale, start: str, phases: str, detail: DetailPlan, data: str,
    release_factor: bool,
) -> dict:
    cache = str(work / "cache.pt")
    vae_end, encode_end, anchor_end, warm_end = SPLITS[phases]
    base = start
    if phases in ("all", "vae"):
        base = str(work / "vae")
        if not runner.run("vae", ["vae", "--model", start, "--out", base, "--data", data, "--lr", "5e-4", "--warmup", "100",
                                  *DECAY, "--steps", "1000000", "--seed", "0", *scale.vae],
                          runner.seconds_until(vae_end)):
            return {}
        if phases == "vae":
            shutil.copytree(Path(base) / "vae", out / "vae", dirs_exist_ok=True)
            return {"ok": True}
    world = ["--data", data, *(["--release-factor"] if release_factor else [])]
    if not runner.run("encode", ["encode", "--model", base, "--out", cache, *world, "--seed", "1", *scale.encode],
                      runner.seconds_until(encode_end)):
        return {}
    if phases != "detail":  # the anchor model and text encoder; the detail models then train on that encoder
        trained_from, base = base, str(work / "anchor")
        if not runner.run(
            "anchor",
            ["anchor", "--model", trained_from, "--latents", cache, "--out", base, "--train-text-encoder",
             "--batch-size", str(scale.anchor_batch), "--lr", "3e-4", "--warmup", "200", *DECAY, "--ema", "0.99",
             "--object-weight", str(OBJECT_WEIGHT), "--steps", "1000000", "--seed", "2"],
            runner.seconds_until(anchor_end),
        ):
            return {}
        if phases == "anchor":
            _write_float16(Path(base), out / "anchor-bundle")
            return {"ok": True}
    warm = work / "detail_warmstart"
    if detail.warmstart is None:
        warm_ok = runner.run(
            "detail_warmstart",
            ["detail", "--model", base, "--reinit", "--latents", cache, "--out", str(warm),
             "--sc-prob", "0", "--batch-size", str(scale.detail_batch), "--lr", "3e-4", "--beta1", "0.9",
             "--warmup", "200", "--ema", "0.99", "--steps", "1000000", "--seed", "3"],
            runner.seconds_until(warm_end),
        )
        if warm_ok:  # kept, so that a later call can train more branches from the same warm start
            shutil.copytree(warm / "detail_transformer", out / "warmstart", dirs_exist_ok=True)
    else:  # the start bundle with the earlier call's warm-start detail model in it
        shutil.copytree(base, warm, dirs_exist_ok=True, ignore=shutil.ignore_patterns("detail_transformer"))
        shutil.copytree(detail.warmstart, warm / "detail_transformer", dirs_exist_ok=True)
        warm_ok = True
    branches_done = []
    if warm_ok:
        seconds = runner.seconds_until()
        started = {
            name: runner.start(
                name,
                ["detail", "--model", str(warm), "--latents", cache, "--out", str(work / name),
                 "--batch-size", str(scale.detail_batch), "--lr", "1e-4", *DECAY, "--ema", "0.99",
                 "--steps", str(detail.steps), "--seed", "4", *BRANCHES[name],
                 *(["--sc-starts", detail.sc_starts] if detail.sc_starts else [])],
                seconds,
            )
            for name in detail.branches
        }
        branches_done = [name for name, (process, record) in started.items() if runner.finish(process, record)]
    if branches_done:
        assemble(Path(base), work, out, branches_done)
    return {"ok": branches_done == list(detail.branches), "branches": branches_done}


def _write_float16(bundle: Path, out: Path, detail: Path | None = None) -> None:
    """Copy a float32 training bundle as the float16 bundle that ships, with ``detail``'s detail model if given."""
    import torch

    from pixelwizard.bundle import load_bundle, write_bundle
    from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel

    pipe = load_bundle(bundle, device="cpu", dtype=torch.float32)
    if detail is not None:
        pipe.register_modules(
            detail_transformer=PixelWizardTransformer3DModel.from_pretrained(detail, torch_dtype=torch.float32))
    write_bundle(pipe, out, dtype=torch.float16)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the tiny PixelWizard bundle in one time budget.")
    parser.add_argument("--work", type=Path, required=True, help="folder for intermediate bundles and logs")
    parser.add_argument("--out", type=Path, required=True, help="folder for the bundle, the variants and recipe.json")
    parser.add_argument("--budget", type=float, default=530.0, help="wall-clock seconds for the whole run")
    parser.add_argument("--toy", action="store_true", help="toy sizes on the CPU, to check the recipe end to end")
    parser.add_argument("--start", default="random", help="'random', or the bundle the VAE phase continues from")
    parser.add_argument("--phases", default="all", choices=PHASES,
                        help="all; vae (stop after the VAE); transformers (VAE taken from --start); anchor (the "
                             "anchor model and text encoder only); detail (the rest taken from --start)")
    parser.add_argument("--branches", default=",".join(BRANCHES),
                        help=f"comma-separated detail branches to train (of {', '.join(BRANCHES)})")
    parser.add_argument("--branch-steps", type=int, default=1_000_000, help="at most this many steps per branch")
    parser.add_argument("--sc-starts", default=None,
                        help="self-consistency start timesteps of the branches, e.g. 600,700,800,900,1000")
    parser.add_argument("--warmstart", type=Path, default=None,
                        help="an earlier call's <out>/warmstart folder: train the branches from it")
    parser.add_argument("--data", default="synthetic", choices=list(SYNTHETIC_WORLDS),
                        help="synthetic world of the VAE and the latent cache")
    parser.add_argument("--release-factor", action="store_true",
                        help="synthesise anchors with SPEC.md's downsample factor [8, 16], not scaled to the preset")
    parser.add_argument("--gpus", type=int, default=None,
                        help="GPUs to spread the commands over (default: all visible ones; 1 = share one)")
    args = parser.parse_args(argv)
    if args.start != "random" and not (Path(args.start) / "model_index.json").is_file():
        parser.error(f"--start {args.start} is not a bundle folder (no model_index.json)")
    if args.phases in ("transformers", "anchor", "detail") and args.start == "random":
        parser.error(f"--phases {args.phases} needs --start: a bundle whose VAE (and anchor model) it keeps")
    branches = tuple(name for name in args.branches.split(",") if name)
    unknown = [name for name in branches if name not in BRANCHES]
    if unknown or not branches or len(set(branches)) != len(branches):
        parser.error(f"--branches {args.branches!r}: give distinct names of {', '.join(BRANCHES)}")
    if args.branch_steps < 1:
        parser.error(f"--branch-steps must be at least 1, got {args.branch_steps}")
    if not (math.isfinite(args.budget) and args.budget > 0):
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
    if args.sc_starts is not None:
        try:
            ShortcutConfig(starts=tuple(float(s) for s in args.sc_starts.split(",") if s.strip())).validate()
        except (ValueError, ConfigError) as exc:  # a word where a number belongs, or a start out of range
            parser.error(f"--sc-starts {args.sc_starts!r}: {exc}")
    if args.warmstart is not None and not (args.warmstart / "config.json").is_file():
        parser.error(f"--warmstart {args.warmstart} is not a detail model folder (no config.json)")
    if args.warmstart is not None and args.phases in ("vae", "anchor"):
        parser.error(f"--warmstart has no use with --phases {args.phases}")
    detail = DetailPlan(branches, args.branch_steps, args.warmstart, args.sc_starts)
    scale = TOY if args.toy else FULL
    gpus = args.gpus
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if scale.device == "cuda" else 1
    if gpus < 1:
        parser.error(f"--gpus must be at least 1, got {gpus}")
    summary = run_recipe(args.work, args.out, args.budget, scale, args.start, args.phases, gpus, detail, args.data,
                         args.release_factor)
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
