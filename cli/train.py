"""``pixelwizard train vae|encode|anchor|detail``: the tiny models' trainers (docs/training.md).

Every command starts from a bundle (or ``random``) and writes a complete bundle to ``--out``,
atomically: a run that fails leaves whatever was at ``--out`` untouched. Settings are checked
before any work; bad input is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.errors import EXIT_FAILURE, check_makeable, fail, first_line

train_app = typer.Typer(help="Train the tiny VAE, anchor model and shortcut detail model.", no_args_is_help=True)

Model = Annotated[str, typer.Option(help="Bundle folder to start from, or 'random' (trained-size, fresh weights).")]
Out = Annotated[Path, typer.Option(help="Bundle folder to write (replaced atomically on success).")]
Data = Annotated[str, typer.Option(
    help="'synthetic', 'synthetic-random-cells' (random background cells), 'synthetic-grain' (background grain), "
    "or a captions JSON Lines file of real clips.")]
Latents = Annotated[Path, typer.Option(help="Latent cache written by 'pixelwizard train encode'.")]
Steps = Annotated[int, typer.Option(help="Optimiser steps.")]
Batch = Annotated[int, typer.Option(help="Clips per step.")]
Lr = Annotated[float, typer.Option(help="AdamW learning rate.")]
Beta1 = Annotated[float, typer.Option(help="AdamW beta1 (SPEC.md 7: 0).")]
Warmup = Annotated[int, typer.Option(help="Linear learning-rate warmup steps.")]
LrDecay = Annotated[str, typer.Option(help="none, or cosine to 0 over the run (steps or --max-seconds).")]
Ema = Annotated[float, typer.Option(help="EMA decay of the saved weights; 0 = off (SPEC.md 7: 0.99).")]
Seed = Annotated[int, typer.Option(help="Seed of data order, noise and initial weights.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
MaxSeconds = Annotated[Optional[float], typer.Option(help="Stop after this much wall time.")]
SnapshotEvery = Annotated[Optional[float], typer.Option(
    help="Every this many seconds, write the weights so far (EMA ones if on) as a bundle at OUT.snapshot, "
         "so that a run cut short still leaves its latest state.")]
Report = Annotated[Optional[Path], typer.Option(help="Write the loss history and settings here (JSON).")]
Shift = Annotated[float, typer.Option(help="Sigma shift of the training timestep grid.")]
Dropout = Annotated[float, typer.Option(help="CFG dropout probability (empty prompt and zero anchor).")]
Checkpointing = Annotated[bool, typer.Option(help="Gradient checkpointing in the transformer blocks.")]
Compile = Annotated[str, typer.Option(
    help="torch.compile the transformer: off, default, reduce-overhead (CUDA graphs) or max-autotune-no-cudagraphs.")]


def _setup(device: str):
    """Checked device, quiet libraries, and torch.distributed when launched by torchrun."""
    from cli.progress import quiet_libraries
    from pixelwizard.devices import DeviceError, allow_tf32, resolve_device

    try:
        target = resolve_device(device)
    except DeviceError as exc:
        fail(str(exc))
    quiet_libraries()
    import torch

    if target.startswith("cuda"):
        allow_tf32()
        torch.backends.cudnn.benchmark = True
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if target.startswith("cuda"):
            target = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(target)
        dist.init_process_group("nccl" if target.startswith("cuda") else "gloo")
    return target


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _config(**values):
    from pixelwizard.training.config import ConfigError, ShortcutConfig, TrainConfig

    shortcut = values.pop("shortcut", None)
    try:
        return TrainConfig(**values, shortcut=shortcut or ShortcutConfig()).validate()
    except ConfigError as exc:
        fail(str(exc))


def _open(model: str, device: str, seed: int):
    from pixelwizard.bundle import ModelFolderError
    from pixelwizard.training.checkpoints import open_training_pipeline

    try:
        return open_training_pipeline(model, device, seed)
    except ModelFolderError as exc:
        fail(str(exc))


def _cache(path: Path, device: str, weights_object: bool = False, counterfactual: bool = False):
    """The latent cache at ``path``; an object or outline weight needs the object masks only synthetic caches
    carry, and counterfactual anchors a cache encoded with them."""
    from pixelwizard.training.latents import LatentCache

    if not path.is_file():
        fail(f"latent cache {path} does not exist (make one with 'pixelwizard train encode')")
    try:
        cache = LatentCache.load(path).to(device)
    except ValueError as exc:
        fail(str(exc))
    if weights_object and cache.anchor_masks is None:
        fail(f"an object or outline weight needs object masks, and {path} has none (only synthetic data has them)")
    if counterfactual and cache.counterfactual is None:
        fail(f"--counterfactual-anchor-prob needs counterfactual anchors, and {path} has none "
             "(encode synthetic data with --counterfactual-anchors)")
    return cache


def _check_out(out: Path, report: Optional[Path], snapshots: bool = False, latents: Optional[Path] = None) -> None:
    """Before any work: ``--out`` (and ``OUT.snapshot``) must be free or a bundle, in a folder it can be written to,
    and must not hold the input; ``--report`` must be writable too."""
    from pixelwizard.bundle import ModelFolderError, check_replaceable

    try:
        check_replaceable(out)
        if snapshots:
            check_replaceable(out.with_name(out.name + ".snapshot"))
    except ModelFolderError as exc:
        fail(f"--out: {exc}")
    check_makeable(out, "--out")
    _check_report(report)
    if latents is not None and latents.resolve().is_relative_to(out.resolve()):
        fail(f"--latents {latents} lies inside --out {out}, which the run replaces")


def _check_report(report: Optional[Path]) -> None:
    """``--report``, written at the end of the run, must be a file that can be written (checked before any work)."""
    if report is not None:
        if report.is_dir():
            fail(f"--report {report} is a folder; a report is one JSON file")
        check_makeable(report, "--report")


def _write_report(report: Path, body: dict) -> None:
    """The run's JSON report, written whole (temporary file, then rename)."""
    report.parent.mkdir(parents=True, exist_ok=True)
    staged = report.with_name(f".{report.name}.tmp")
    try:
        staged.write_text(json.dumps(body, indent=1, default=str))
        os.replace(staged, report)
    finally:
        staged.unlink(missing_ok=True)  # gone once renamed; left by a failed write otherwise


def _save_errors() -> tuple[type[Exception], ...]:
    """What writing a result raises when its disk or folder fails it: OSError, and the writers' own errors (torch's
    RuntimeError for a file it cannot open, safetensors' SafetensorError)."""
    from safetensors import SafetensorError

    return OSError, RuntimeError, SafetensorError


def _finish(pipe, out: Path, result, report: Optional[Path], settings: dict) -> None:
    """Rank 0 writes the bundle and the report; then every rank leaves the process group together.
    A run whose last logged loss is not a finite number writes nothing and exits 1."""
    from pixelwizard.bundle import write_bundle
    from pixelwizard.training.trainer import diverged

    if bad := diverged(result.history):
        _leave_process_group()
        fail(f"training diverged ({', '.join(f'{k}={v}' for k, v in bad.items())} after {result.steps} steps); "
             f"{out} not written", EXIT_FAILURE)
    if _is_main():
        try:
            write_bundle(pipe, out)
            typer.echo(f"wrote {out} after {result.steps} steps in {result.seconds:.1f} s")
            if report is not None:
                _write_report(report, {"steps": result.steps, "seconds": round(result.seconds, 2),
                                       "settings": settings, "history": result.history})
        except _save_errors() as exc:  # checked before the run; a disk that filled up or a folder locked since
            _leave_process_group()
            fail(f"{out} not written: {first_line(exc)}", EXIT_FAILURE)
    _leave_process_group()


def _snapshot_writer(pipe, out: Path):
    """Rank 0's snapshot callback for the trainers: the whole bundle at OUT.snapshot, atomically; None elsewhere."""
    from pixelwizard.bundle import write_bundle

    if not _is_main():
        return None
    folder = out.with_name(out.name + ".snapshot")

    def write(steps: int) -> None:
        write_bundle(pipe, folder)
        typer.echo(f"snapshot after {steps} steps: {folder}")

    return write


def _leave_process_group() -> None:
    """Wait for every rank, then tear the group down: a rank that exits while another is still
    writing or holding the group can be aborted by gloo (seen as SIGABRT in the two-process test)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _parse_floats(text: str, what: str) -> tuple[float, ...]:
    """A comma-separated list of numbers; anything else is a one-line exit-2 error naming ``what``."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"bad {what} {text!r}; use comma-separated numbers, e.g. 1,0.5")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        fail(f"bad size {text!r}; use HEIGHTxWIDTH, e.g. 128x256")
    return height, width


def _dataset(data: str, frames: int, width: int, height: int, size: int, seed: int):
    from pixelwizard.training.datasets import DatasetError, open_dataset

    try:
        return open_dataset(data, frames=frames, width=width, height=height, size=size, seed=seed)
    except DatasetError as exc:
        fail(str(exc))


@train_app.command("vae")
def train_vae_command(
    out: Out,
    model: Model = "random",
    data: Data = "synthetic",
    clips: Annotated[int, typer.Option(help="Distinct synthetic clips.")] = 100_000,
    frames: Annotated[int, typer.Option(help="Frames per training clip (4k+1).")] = 9,
    width: Annotated[int, typer.Option(help="Clip width before cropping.")] = 448,
    height: Annotated[int, typer.Option(help="Clip height before cropping.")] = 256,
    crop: Annotated[str, typer.Option(help="Random crop HEIGHTxWIDTH.")] = "128x256",
    scales: Annotated[str, typer.Option(
        help="Comma-separated resize factors in (0, 1], one drawn per step (e.g. 1,0.5: detail and anchor size).")] = "1",
    kl_weight: Annotated[float, typer.Option(help="KL weight.")] = 1e-4,
    edge_weight: Annotated[float, typer.Option(help="Weight of the image-gradient L1.")] = 0.5,
    stats_clips: Annotated[int, typer.Option(help="Clips used to measure the latent mean/std.")] = 32,
    steps: Steps = 1000,
    batch_size: Batch = 8,
    lr: Lr = 3e-4,
    beta1: Beta1 = 0.9,
    warmup: Warmup = 100,
    lr_decay: LrDecay = "none",
    seed: Seed = 0,
    device: Device = "auto",
    max_seconds: MaxSeconds = None,
    report: Report = None,
) -> None:
    """Train the VAE to reconstruct clips, then store its latent mean/std in its config."""
    settings = dict(locals())  # the command's options, for the report (before any local name exists)
    from pixelwizard.training.config import ConfigError, VaeLossConfig

    _check_out(out, report)
    target = _setup(device)
    cfg = _config(steps=steps, batch_size=batch_size, lr=lr, betas=(beta1, 0.999), warmup_steps=warmup,
                  lr_decay=lr_decay, seed=seed,
                  max_seconds=max_seconds)
    try:
        loss_cfg = VaeLossConfig(kl_weight=kl_weight, edge_weight=edge_weight, crop=_parse_size(crop),
                                 scales=_parse_floats(scales, "VAE scales")).validate()
    except ConfigError as exc:
        fail(str(exc))
    if stats_clips < 1:
        fail(f"stats clips must be at least 1, got {stats_clips}")
    if clips < 1:
        fail(f"clips must be at least 1, got {clips}")
    if frames < 1 or (frames - 1) % 4:
        fail(f"frame count {frames} is not of the form 4k+1 (e.g. 9, 17)")
    for label, value in (("width", width), ("height", height)):
        if value <= 0 or value % 16:
            fail(f"{label} {value} is not a positive multiple of 16")
    source = _dataset(data, frames, width, height, clips, seed)
    pipe = _open(model, target, seed)

    from pixelwizard.training.datasets import DatasetError
    from pixelwizard.training.latents import set_latent_stats
    from pixelwizard.training.trainer import train_vae

    try:
        result = train_vae(pipe.vae, source, cfg, loss_cfg, typer.echo)
        set_latent_stats(pipe.vae, source.clips(list(range(min(stats_clips, len(source)))), target))
    except DatasetError as exc:  # a real clip that decodes short of the frames its header counts (checked at opening)
        fail(f"{exc}; {out} not written")
    _finish(pipe, out, result, report, settings)


@train_app.command("encode")
def encode_command(
    model: Annotated[str, typer.Option(help="Bundle whose VAE and text encoder encode the clips.")],
    out: Annotated[Path, typer.Option(help="Latent cache file to write.")],
    data: Data = "synthetic",
    clips: Annotated[int, typer.Option(help="Clips to encode (synthetic: how many; real: all if larger).")] = 4096,
    preset: Annotated[str, typer.Option(help="Preset fixing frames, anchor and detail sizes.")] = "tiny",
    frames: Annotated[Optional[int], typer.Option(help="Frame count, 4k+1 (preset default).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Detail width (preset default).")] = None,
    height: Annotated[Optional[int], typer.Option(help="Detail height (preset default).")] = None,
    anchor_width: Annotated[Optional[int], typer.Option(help="Anchor width (preset default).")] = None,
    anchor_height: Annotated[Optional[int], typer.Option(help="Anchor height (preset default).")] = None,
    seed: Seed = 0,
    batch_size: Batch = 16,
    release_factor: Annotated[bool, typer.Option(
        help="Anchor synthesis keeps SPEC.md's downsample factor [8, 16] instead of scaling it to the preset.")] = False,
    counterfactual_anchors: Annotated[bool, typer.Option(
        help="Also encode each clip's anchor with the object in another shape (synthetic data; see train detail).")] = False,
    device: Device = "auto",
    max_seconds: MaxSeconds = None,
    report: Report = None,
) -> None:
    """Encode clips once into detail latents, anchor latents and synthesised anchors, with their captions."""
    from pixelwizard.presets import PresetError, get_preset

    try:
        chosen = get_preset(preset).with_overrides(
            num_frames=frames, detail_width=width, detail_height=height, anchor_width=anchor_width,
            anchor_height=anchor_height,
        )
    except PresetError as exc:
        fail(str(exc))
    if clips < 1 or batch_size < 1:
        fail("clips and batch size must be at least 1")
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        fail(f"max seconds must be > 0, got {max_seconds}")
    if out.is_dir():
        fail(f"--out {out} is a folder; a latent cache is one file")
    check_makeable(out, "--out")
    _check_report(report)
    from pixelwizard.training.latents import LatentCache

    try:
        LatentCache.check_replaceable(out)
    except ValueError as exc:
        fail(f"--out: {exc}")
    target = _setup(device)
    source = _dataset(data, chosen.num_frames, chosen.detail_width, chosen.detail_height, clips, seed)
    pipe = _open(model, target, seed)

    from pixelwizard.training.degrade import scaled_degradation
    from pixelwizard.training.latents import build_latent_cache

    count = min(clips, len(source))  # a synthetic source holds exactly ``clips``
    started = time.monotonic()
    try:
        cache = build_latent_cache(
            pipe, source, count=count, anchor_size=(chosen.anchor_width, chosen.anchor_height),
            degradation=scaled_degradation(chosen.detail_width, chosen.anchor_width, release_factor), seed=seed,
            batch=batch_size, max_seconds=max_seconds, counterfactual=counterfactual_anchors,
        )
    except ValueError as exc:  # options the data cannot serve (counterfactual anchors of real clips)
        fail(str(exc))
    seconds = time.monotonic() - started
    try:
        cache.save(out)
        typer.echo(f"wrote {out}: {len(cache)} clips in {seconds:.1f} s")
        if report is not None:
            _write_report(report, {"clips": len(cache), "seconds": round(seconds, 2)})
    except _save_errors() as exc:  # as in _finish
        fail(f"{out} not written: {first_line(exc)}", EXIT_FAILURE)


@train_app.command("anchor")
def train_anchor_command(
    model: Model,
    latents: Latents,
    out: Out,
    steps: Steps = 1000,
    batch_size: Batch = 32,
    lr: Lr = 3e-4,
    beta1: Beta1 = 0.9,
    warmup: Warmup = 100,
    lr_decay: LrDecay = "none",
    ema: Ema = 0.0,
    shift: Shift = 5.0,
    cfg_dropout: Dropout = 0.1,
    object_weight: Annotated[float, typer.Option(
        help="Extra loss weight on the object's latent cells (synthetic caches carry its mask); 0 = off.")] = 0.0,
    outline_weight: Annotated[float, typer.Option(
        help="Extra loss weight on the cells the object half covers, its outline (synthetic caches); 0 = off.")] = 0.0,
    train_text_encoder: Annotated[bool, typer.Option(
        help="Train the bundle's text encoder jointly with the anchor model (the detail model must then be "
             "trained on it too).")] = False,
    reinit: Annotated[bool, typer.Option(help="Start the anchor model from fresh weights (seed), keep the rest.")] = False,
    layers: Annotated[Optional[int], typer.Option(help="With --reinit: transformer blocks of the new anchor model.")] = None,
    heads: Annotated[Optional[int], typer.Option(help="With --reinit: attention heads.")] = None,
    head_dim: Annotated[Optional[int], typer.Option(help="With --reinit: width of a head (even).")] = None,
    ffn_dim: Annotated[Optional[int], typer.Option(help="With --reinit: feed-forward width.")] = None,
    gradient_checkpointing: Checkpointing = False,
    compile: Compile = "off",
    seed: Seed = 0,
    device: Device = "auto",
    max_seconds: MaxSeconds = None,
    snapshot_every: SnapshotEvery = None,
    report: Report = None,
) -> None:
    """Train the anchor (base) model with plain flow matching on anchor-size latents."""
    settings = dict(locals())
    from pixelwizard.training.checkpoints import SIZE_KEYS, fresh_copy, size_problem

    sizes = {k: v for k, v in dict(layers=layers, heads=heads, head_dim=head_dim, ffn_dim=ffn_dim).items() if v is not None}
    if sizes and not reinit:
        fail("--layers, --heads, --head-dim and --ffn-dim set a new size, which starts from fresh weights: add --reinit")
    if (problem := size_problem(sizes)) is not None:
        fail(problem)
    _check_out(out, report, snapshot_every is not None, latents)
    target = _setup(device)
    cfg = _config(steps=steps, batch_size=batch_size, lr=lr, betas=(beta1, 0.999), warmup_steps=warmup,
                  lr_decay=lr_decay, ema=ema,
                  shift=shift, cfg_dropout=cfg_dropout, gradient_checkpointing=gradient_checkpointing, seed=seed,
                  max_seconds=max_seconds, snapshot_every=snapshot_every, object_weight=object_weight,
                  outline_weight=outline_weight, compile=compile)
    cache = _cache(latents, target, cfg.weights_object)
    pipe = _open(model, target, seed)
    if reinit:
        pipe.register_modules(transformer=fresh_copy(pipe.transformer, seed, **{SIZE_KEYS[k]: v for k, v in sizes.items()}))

    from pixelwizard.training.captions import CaptionEmbeddings
    from pixelwizard.training.trainer import train_anchor

    text = CaptionEmbeddings(pipe, cache.captions, trainable=train_text_encoder)
    result = train_anchor(pipe.transformer, cache, text, cfg, typer.echo, _snapshot_writer(pipe, out))
    _finish(pipe, out, result, report, settings)


@train_app.command("detail")
def train_detail_command(
    model: Model,
    latents: Latents,
    out: Out,
    sc_prob: Annotated[float, typer.Option(help="Share of self-consistency iterations; 0 = flow matching only.")] = 0.3,
    sc_starts: Annotated[str, typer.Option(help="Start timesteps T of self-consistency steps.")] = "500,600,700,800",
    sc_weight: Annotated[float, typer.Option(help="Weight of the self-consistency loss: L_fm + w L_sc.")] = 1.0,
    dt_levels: Annotated[int, typer.Option(help="Step-size candidates k = 0..levels-1.")] = 6,
    lam: Annotated[float, typer.Option(help="Lambda of P(k) ~ exp(-lambda k).")] = 0.7,
    k_sampling: Annotated[str, typer.Option(help="exponential or uniform (ablation).")] = "exponential",
    dt_grid: Annotated[str, typer.Option(help="aligned (noise-span) or fixed (ablation).")] = "aligned",
    calibration: Annotated[bool, typer.Option(help="Adaptive noise-span calibration weight.")] = True,
    adapter_only: Annotated[bool, typer.Option(help="Train only the anchor injector and dt embedding.")] = False,
    clean_anchor_prob: Annotated[float, typer.Option(
        help="Share of samples conditioned on the clean anchor-size latent instead of SPEC.md 7's degraded one.")] = 0.0,
    counterfactual_anchor_prob: Annotated[float, typer.Option(
        help="Share of samples (after the clean-anchor choice) conditioned on the anchor with the object in another "
             "shape, so that the caption decides it; needs a cache encoded with --counterfactual-anchors.")] = 0.0,
    object_weight: Annotated[float, typer.Option(
        help="Extra loss weight on the object's latent cells (synthetic caches carry its mask); 0 = off.")] = 0.0,
    outline_weight: Annotated[float, typer.Option(
        help="Extra loss weight on the cells the object half covers, its outline (synthetic caches); 0 = off.")] = 0.0,
    reinit: Annotated[bool, typer.Option(help="Start the detail model from fresh weights (seed), keep the rest.")] = False,
    steps: Steps = 1000,
    batch_size: Batch = 16,
    lr: Lr = 2e-4,
    beta1: Beta1 = 0.0,
    warmup: Warmup = 0,
    lr_decay: LrDecay = "none",
    ema: Ema = 0.0,
    shift: Shift = 5.0,
    cfg_dropout: Dropout = 0.1,
    gradient_checkpointing: Checkpointing = False,
    compile: Compile = "off",
    seed: Seed = 0,
    device: Device = "auto",
    max_seconds: MaxSeconds = None,
    snapshot_every: SnapshotEvery = None,
    report: Report = None,
) -> None:
    """Train the detail model: flow matching mixed with shortcut self-consistency (SPEC.md 7)."""
    settings = dict(locals())  # the command's options, for the report (before any local name exists)
    from pixelwizard.training.config import ShortcutConfig

    _check_out(out, report, snapshot_every is not None, latents)
    target = _setup(device)
    shortcut = ShortcutConfig(sc_prob=sc_prob, sc_weight=sc_weight, starts=_parse_floats(sc_starts, "start timesteps"), levels=dt_levels, lam=lam,
                              k_sampling=k_sampling, dt_grid=dt_grid, calibration=calibration)
    cfg = _config(steps=steps, batch_size=batch_size, lr=lr, betas=(beta1, 0.999), warmup_steps=warmup,
                  lr_decay=lr_decay, ema=ema,
                  shift=shift, cfg_dropout=cfg_dropout, gradient_checkpointing=gradient_checkpointing,
                  adapter_only=adapter_only, seed=seed, max_seconds=max_seconds, snapshot_every=snapshot_every,
                  shortcut=shortcut, compile=compile,
                  clean_anchor_prob=clean_anchor_prob, counterfactual_anchor_prob=counterfactual_anchor_prob,
                  object_weight=object_weight, outline_weight=outline_weight)
    cache = _cache(latents, target, cfg.weights_object, counterfactual_anchor_prob > 0)
    pipe = _open(model, target, seed)
    if reinit:
        from pixelwizard.training.checkpoints import fresh_copy

        pipe.register_modules(detail_transformer=fresh_copy(pipe.detail_transformer, seed))

    from pixelwizard.training.captions import CaptionEmbeddings
    from pixelwizard.training.trainer import train_detail

    result = train_detail(pipe.detail_transformer, cache, CaptionEmbeddings(pipe, cache.captions), cfg, typer.echo,
                          _snapshot_writer(pipe, out))
    _finish(pipe, out, result, report, settings)


if __name__ == "__main__":
    train_app(prog_name="pixelwizard train")
