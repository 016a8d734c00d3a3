"""The quality table of the tiny models (docs/quality.md), measured on held-out synthetic prompts.

1. Detail stage from ground-truth anchors (SPEC.md 7's synthesis): each detail model variant x
   step count, PSNR / SSIM against the ground-truth clip, HD-MSE (SPEC.md 8), temporal flicker, and
   HD-FD, the distance of the renders' fine-detail distribution from the ground truth's; then the
   shortcut model minus flow matching only on the same clips, with bootstrap intervals over the clips.
2. The full two-stage pipeline from text alone: how often the rendered object has the prompted
   colour, shape and motion (pixelwizard.metrics.attributes).
3. The README sample prompts: wall time on this machine and contact sheets (PNG).
4. With ``--also``: detail tables that earlier runs of this script measured on other worlds.

    python -m pixelwizard.training.quality --variants DIR --out docs/quality.md

``--detail-only`` makes table 1 alone (``--data synthetic-random-cells`` or ``synthetic-grain``: on the
world with random background cells or background grain, for models trained on it). ``--detail-from docs/quality.json`` copies table 1
from an earlier run instead of measuring it again, for a change that leaves its inputs (VAE, text
encoder, detail models) as they were, such as a new anchor model.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pixelwizard.decoding import to_uint8_frames
from pixelwizard.guidance import guided_velocity
from pixelwizard.metrics.attributes import analyse
from pixelwizard.metrics.clip_bootstrap import LEVEL, RESAMPLES, bootstrap_interval
from pixelwizard.metrics.detail_distribution import detail_features, frechet_distance
from pixelwizard.metrics.fidelity import hd_mse, psnr, ssim, temporal_flicker
from pixelwizard.presets import Preset, get_preset
from pixelwizard.sampling import sample
from pixelwizard.training.datasets import SYNTHETIC_WORLDS, SyntheticClips
from pixelwizard.training.degrade import degrade, scaled_degradation
from pixelwizard.training.latents import encode_clips, resize_latent

EVAL_SEED = 2024  # dataset seed of the held-out evaluation clips (training used other seeds)


@dataclass(frozen=True)
class Variant:
    """A detail model to evaluate: its label, folder under --variants (None = the bundle's), dt use."""

    label: str
    folder: str | None
    flow_matching: bool  # called with dt = 0, as it was trained


VARIANTS = (
    Variant("shortcut (shipped)", None, False),  # "shortcut (--model)" when --model names another bundle
    Variant("flow matching only", "fm_only", True),
    Variant("ablation: uniform k", "uniform_k", False),
    Variant("ablation: fixed-grid dt", "fixed_dt", False),
    Variant("ablation: calibration off", "no_calibration", False),
)


def load_variant(pipe, variant: Variant, variants_dir: Path):
    """The detail transformer of a variant, float32 on the CPU."""
    from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel

    if variant.folder is None:
        return pipe.detail_transformer
    model = PixelWizardTransformer3DModel.from_pretrained(variants_dir / variant.folder, torch_dtype=torch.float32)
    return model.eval()


@torch.no_grad()
def render_detail(
    pipe, detail, anchor: torch.Tensor, embeddings, preset: Preset, steps: int, seed: int, *,
    flow_matching: bool, solver: str,
) -> torch.Tensor:
    """Detail latent from pure noise guided by ``anchor``; flow-matching models get dt = 0."""
    cond, uncond = embeddings
    guided = guided_velocity(detail, cond, uncond, preset.detail_guidance, anchor=anchor)

    def velocity(x, t, dt):
        return guided(x, t, torch.zeros_like(t) if flow_matching else dt)

    shape = pipe.latent_shape(preset.detail_width, preset.detail_height, preset.num_frames)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return sample(velocity, noise, num_steps=steps, shift=preset.detail_shift, solver=solver, shortcut=True)


def ground_truth_anchor(pipe, video: torch.Tensor, preset: Preset, seed: int, release_factor: bool = False) -> torch.Tensor:
    """SPEC.md 7's anchor synthesis from a ground-truth clip (1, 3, T, H, W), on the token grid."""
    degradation = scaled_degradation(preset.detail_width, preset.anchor_width, release_factor)
    small = degrade(video, (preset.anchor_width, preset.anchor_height), degradation, torch.Generator().manual_seed(seed))
    latent = encode_clips(pipe.vae, small)
    patch = pipe.detail_transformer.config.patch_size
    height, width = pipe.latent_shape(preset.detail_width, preset.detail_height, preset.num_frames)[-2:]
    return resize_latent(latent, (height // patch[1], width // patch[2])), small


METRICS = ("PSNR", "SSIM", "HD-MSE", "flicker")  # per clip, averaged; HD-FD is one number per row (set-level)
DIFFERENCE_KEYS = ("first", "second", "steps", "PSNR", "PSNR interval", "HD-FD", "HD-FD interval", "level", "resamples")


def fidelity(frames: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    return {
        "PSNR": psnr(frames, reference),
        "SSIM": ssim(frames, reference),
        "HD-MSE": hd_mse(frames),
        "flicker": temporal_flicker(frames),
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def detail_table(
    pipe, variants_dir: Path, preset: Preset, clips: int, steps: list[int], solver: str, log, data: str = "synthetic",
    release_factor: bool = False, variants: tuple[Variant, ...] = VARIANTS,
) -> tuple[dict, list]:
    """Mean metrics per (variant, steps), plus reference rows and a few frames for a contact sheet."""
    source = SyntheticClips(EVAL_SEED, clips, preset.num_frames, preset.detail_width, preset.detail_height, "heldout",
                            **SYNTHETIC_WORLDS[data].options)
    models = {v.label: load_variant(pipe, v, variants_dir) for v in variants if v.folder is None or (variants_dir / v.folder).is_dir()}
    results: dict[tuple[str, int | str], list[dict[str, float]]] = {}
    features: dict[tuple[str, int | str], list[torch.Tensor]] = {}  # HD-FD's, pooled over the clips
    truth_key = ("ground truth", "-")
    sheet = []
    for i in range(clips):
        video = source.clips([i])
        truth = to_uint8_frames(video[0])

        def record(key: tuple[str, int | str], frames: torch.Tensor) -> None:
            results.setdefault(key, []).append(fidelity(frames, truth))
            features.setdefault(key, []).append(detail_features(frames))

        anchor, small = ground_truth_anchor(pipe, video, preset, EVAL_SEED + i, release_factor)
        embeddings = pipe.encode_prompt(source.caption(i))
        record(truth_key, truth)
        record(("VAE reconstruction", "-"), pipe.decode(encode_clips(pipe.vae, video)))
        upsampled = torch.nn.functional.interpolate(
            small[0].transpose(0, 1), size=video.shape[-2:], mode="bilinear", align_corners=False
        ).transpose(0, 1)
        record(("anchor only, upsampled", "-"), to_uint8_frames(upsampled))
        picks = {"truth": truth}
        for variant in variants:
            if variant.label not in models:
                continue
            for n in steps:
                latent = render_detail(pipe, models[variant.label], anchor, embeddings, preset, n, EVAL_SEED + i,
                                       flow_matching=variant.flow_matching, solver=solver)
                frames = pipe.decode(latent)
                record((variant.label, n), frames)
                if n == 4 and variant.label in (variants[0].label, variants[1].label):
                    picks[f"{variant.label}, 4 steps"] = frames
        sheet.append(picks)
        log(f"detail: clip {i + 1}/{clips} done")
    truth_features = torch.cat(features[truth_key])
    table = {key: {**_mean(rows), "HD-FD": frechet_distance(torch.cat(features[key]), truth_features)}
             for key, rows in results.items()}
    return table, sheet, paired_differences(table, results, features, truth_key, variants[0].label, variants[1].label,
                                            steps)


def paired_differences(
    table: dict, results: dict, features: dict, truth_key: tuple[str, str], first: str, second: str, steps: list[int],
) -> list[dict]:
    """``first`` minus ``second`` on the same clips, per step count both have: mean PSNR and HD-FD (from ``table``),
    each with the central LEVEL interval of RESAMPLES paired resamples of the clips. Empty with fewer than 2 clips."""
    truth = features[truth_key]
    if len(truth) < 2:
        return []
    rows = []
    for n in steps:
        a, b = (first, n), (second, n)
        if a not in results or b not in results:
            continue
        psnr_a, psnr_b = (np.array([clip["PSNR"] for clip in results[key]]) for key in (a, b))

        def psnr_gap(clips: np.ndarray) -> float:
            return float(psnr_a[clips].mean() - psnr_b[clips].mean())

        def fd_gap(clips: np.ndarray) -> float:
            reference = torch.cat([truth[i] for i in clips])
            return (frechet_distance(torch.cat([features[a][i] for i in clips]), reference)
                    - frechet_distance(torch.cat([features[b][i] for i in clips]), reference))

        rows.append({"first": first, "second": second, "steps": n,
                     "PSNR": table[a]["PSNR"] - table[b]["PSNR"], "PSNR interval": bootstrap_interval(psnr_gap, len(truth)),
                     "HD-FD": table[a]["HD-FD"] - table[b]["HD-FD"], "HD-FD interval": bootstrap_interval(fd_gap, len(truth)),
                     "level": LEVEL, "resamples": RESAMPLES})
    return rows


def adherence_table(
    pipe, preset: Preset, prompts: int, guidances: list[float], log, seed: int = EVAL_SEED + 1,
) -> tuple[dict, list]:
    """Share of held-out prompts whose two-stage render shows the prompted colour, shape and motion.

    One row per detail-stage CFG scale in ``guidances``, plus the ground-truth clips (a check of
    the analysis itself). Returns the rows and a few (caption, frames) examples of the first scale.
    ``seed`` is the prompts' dataset seed (another one than the table's to tune settings on unseen prompts).
    """
    source = SyntheticClips(seed, prompts, preset.num_frames, preset.detail_width, preset.detail_height, "heldout")
    names = [f"pipeline, detail CFG {g:g}" for g in guidances] + ["ground truth clips"]
    hits = {name: {"colour": 0, "shape": 0, "motion": 0, "all three": 0} for name in names}
    examples = []
    for i in range(prompts):
        scene = source.scene(i)
        embeddings = pipe.encode_prompt(scene.caption)
        anchor = pipe.generate_anchor(scene.caption, EVAL_SEED + i, preset, embeddings=embeddings)
        clips = {}
        for name, g in zip(names, guidances):
            detail = pipe.render_detail(anchor, scene.caption, EVAL_SEED + i, preset.with_overrides(detail_guidance=g),
                                        embeddings=embeddings)
            clips[name] = pipe.decode(detail)
        clips["ground truth clips"] = to_uint8_frames(source.clips([i])[0])
        for name, frames in clips.items():
            got = analyse(frames, scene.background)
            ok = {k: getattr(got, k) == getattr(scene, k) for k in ("colour", "shape", "motion")}
            for k, v in ok.items():
                hits[name][k] += int(v)
            hits[name]["all three"] += int(all(ok.values()))
        if i < 6:
            examples.append((scene.caption, clips[names[0]]))
        log(f"text-to-video: prompt {i + 1}/{prompts} done")
    return {name: {k: v / prompts for k, v in row.items()} for name, row in hits.items()}, examples


def contact_sheet(rows: list[torch.Tensor], frames: tuple[int, ...] = (0, 4, 8, 12, 16)):
    """A PIL image: one row per clip (T, H, W, 3) uint8, the chosen frames side by side."""
    from PIL import Image

    strips = [np.concatenate([clip[min(f, len(clip) - 1)].numpy() for f in frames], axis=1) for clip in rows]
    return Image.fromarray(np.concatenate(strips, axis=0))


def render_samples(pipe, prompts_file: Path, preset: Preset, sheet_dir: Path) -> tuple[float, list[tuple[str, str]]]:
    """Render the README prompts end to end; (seconds for all, [(prompt, png path)])."""
    from pixelwizard.prompts import load_prompts

    specs = load_prompts(prompts_file)
    made = []
    start = time.perf_counter()
    outputs = [pipe(s.prompt, prompt_id=s.id, seed=0, preset=preset).frames for s in specs]
    seconds = time.perf_counter() - start
    sheet_dir.mkdir(parents=True, exist_ok=True)
    for spec, frames in zip(specs, outputs):
        path = sheet_dir / f"sample-{spec.id}.png"
        contact_sheet([frames]).save(path)
        made.append((spec.prompt, str(path)))
    return seconds, made


@dataclass(frozen=True)
class EarlierTable:
    """Table 1 as an earlier run of this script measured it (``--detail-from``)."""

    rows: dict[tuple[str, int | str], dict[str, float]]
    settings: str  # how it was measured (that run's settings note)
    command: str | None  # the command that measured it
    sheets: dict[str, list[str]]  # its contact sheet under samples/ and what the sheet's rows show
    differences: list[dict]  # paired_differences' rows (none in runs before them)


def earlier_detail_table(path: Path) -> EarlierTable:
    """Table 1 of an earlier run's JSON; raises ValueError (one line) when the file cannot be one."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        rows = {}
        for row in raw["detail"]:
            metrics = {k: row[k] for k in METRICS + (("HD-FD",) if "HD-FD" in row else ())}  # older runs lack HD-FD
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
                raise TypeError(f"the metrics of row {row['model']!r} are not all numbers")
            rows[(row["model"], row["steps"])] = metrics
        differences = [{key: row[key] for key in DIFFERENCE_KEYS} for row in raw.get("differences", [])]
        table = EarlierTable(rows, raw["detail_settings"], raw["detail_command"],
                             {key: [str(raw["sheets"][key][0])] for key in ("detail sheet", "detail rows")}, differences)
        if not isinstance(table.settings, str):
            raise TypeError("detail_settings is not a string")
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: not a quality table's JSON ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise ValueError(f"{path}: its detail table is empty")
    return table


def _table_rows(detail: dict) -> list[str]:
    """Markdown rows of a detail table, one per (model, steps)."""
    def hd_fd(m: dict) -> str:  # the truth against itself is 0 up to rounding
        return "-" if "HD-FD" not in m else "0" if abs(m["HD-FD"]) < 1e-6 else f"{m['HD-FD']:.3g}"

    return ["| model | steps | PSNR dB | SSIM | HD-MSE | HD-FD | flicker |",
            "| --- | --- | --- | --- | --- | --- | --- |"] + [
        f"| {label} | {steps} | {m['PSNR']:.2f} | {m['SSIM']:.4f} | {m['HD-MSE']:.3g} | {hd_fd(m)} | {m['flicker']:.3g} |"
        for (label, steps), m in detail.items()
    ]


def _difference_lines(differences: list[dict]) -> list[str]:
    """paired_differences' rows as a small table under the detail table."""
    if not differences:
        return []
    first, second, level, resamples = (differences[0][k] for k in ("first", "second", "level", "resamples"))
    lines = ["", f"{first} minus {second} on the same clips (PSNR above 0 and HD-FD below 0 favour {first}); in "
             f"brackets the central {level:.0%} of {resamples} resamples of the clips, both models resampled alike:", "",
             "| steps | PSNR dB | HD-FD |", "| --- | --- | --- |"]
    for d in differences:
        (p_low, p_high), (f_low, f_high) = d["PSNR interval"], d["HD-FD interval"]
        lines.append(f"| {d['steps']} | {d['PSNR']:+.2f} ({p_low:+.2f} to {p_high:+.2f}) | "
                     f"{d['HD-FD']:+.3g} ({f_low:+.3g} to {f_high:+.3g}) |")
    return lines


def _other_tables(others: dict[Path, EarlierTable], section: int) -> list[str]:
    """The last section: detail tables of other worlds (``--also``), as their runs of this script measured them."""
    if not others:
        return []
    lines = ["", f"## {section}. Detail stage on other worlds (models trained for them, not shipped)", "",
             "Copied from other runs of this script (`--also`); docs/training.md says how their models were trained.", ""]
    for path, table in others.items():
        lines += [f"### `{path.name}`", "", table.settings, "",
                  *([f"Measured with `{table.command}`.", ""] if table.command else []),
                  *_table_rows(table.rows), *_difference_lines(table.differences), "",
                  "Frames 0, 4, 8, 12, 16; per clip, rows are: " + table.sheets["detail rows"][0], "",
                  f"![{path.stem} detail stage comparison](samples/{table.sheets['detail sheet'][0]})", ""]
    return lines


def write_report(
    out: Path, command: str, detail: dict, sheets: dict[str, list[str]], settings: dict,
    adherence: dict | None = None, samples=None, others: dict[Path, EarlierTable] | None = None,
    differences: list[dict] = (),
) -> None:
    """docs/quality.md: table 1, then (unless ``adherence`` is None) the text-to-video table and the samples, then
    the ``others`` (``--also``) tables."""
    lines = [
        "# Quality of the tiny PixelWizard models",
        "",
        "Generated by `pixelwizard/training/quality.py`; regenerate with:",
        "",
        f"    {command}",
        "",
        "Held-out prompts are (colour, shape, motion) combinations the models never saw in training",
        "(`pixelwizard.training.scenes.is_held_out`). " + settings["note"],
        "",
        "## 1. Detail stage from ground-truth anchors",
        "",
        *([settings["detail_source"], ""] if "detail_source" in settings else []),
        "Anchors are synthesised from the ground-truth clip exactly as in training (SPEC.md 7, with the",
        "downsample factor named above), then the detail model renders from pure noise. PSNR/SSIM against the",
        "ground-truth clip (higher is better); HD-MSE (SPEC.md 8) is the amount of fine detail, to be",
        "compared with the ground truth's; HD-FD (`pixelwizard.metrics.detail_distribution`, a weight-free stand-in",
        "for SPEC.md 8's HD-FVD) is the Frechet distance of the renders' local fine-detail statistics, pooled over the",
        "clips, from the ground truth's (lower is better; `-` where a run predates it): unlike PSNR it does not reward",
        "blurring detail that the anchor and caption leave open. Flicker is the mean absolute second temporal difference.",
        "",
        *_table_rows(detail),
        *_difference_lines(list(differences)),
    ]
    lines += ["", "Frames 0, 4, 8, 12, 16; per clip, rows are: " + sheets["detail rows"][0], "",
              f"![detail stage comparison](samples/{sheets['detail sheet'][0]})", ""]
    if adherence is None:
        out.write_text("\n".join(lines + _other_tables(others or {}, 2)))
        return
    lines += [
        "",
        "## 2. Full two-stage pipeline from text (held-out prompts)",
        "",
        "Share of renders whose object has the prompted colour, shape and motion, measured from the",
        "frames (`pixelwizard.metrics.attributes`). The ground-truth row checks the analysis itself.",
        "",
        "| clips | colour | shape | motion | all three |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in adherence.items():
        lines.append(f"| {name} | {row['colour']:.0%} | {row['shape']:.0%} | {row['motion']:.0%} | {row['all three']:.0%} |")
    lines += ["", "Renders of the first held-out prompts (first table row's settings), top to bottom:", ""]
    lines += [f"{n}. {caption}" for n, caption in enumerate(sheets["held-out captions"], start=1)]
    lines += ["", "![held-out text-to-video](samples/heldout-text-to-video.png)", ""]
    seconds, made = samples
    lines += [
        "",
        "## 3. README sample prompts",
        "",
        f"All {len(made)} prompts of `examples/prompts.txt`, end to end (text, anchor, detail, decode), "
        f"took {seconds:.1f} s on this machine ({settings['machine']}), model already loaded.",
        "Frames 0, 4, 8, 12 and 16 of each:",
        "",
    ]
    for prompt, path in made:
        lines += [f"**{prompt}**", "", f"![{prompt}]({Path(path).relative_to(out.parent)})", ""]
    out.write_text("\n".join(lines + _other_tables(others or {}, 4)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: the shipped tiny bundle)")
    parser.add_argument("--variants", type=Path, default=None, help="folder of the other detail models (table 1)")
    parser.add_argument("--detail-from", type=Path, default=None,
                        help="copy table 1 and its contact sheet from this earlier run's JSON instead of measuring it "
                             "(its VAE, text encoder and detail models must be the bundle's; the options that shape "
                             "table 1 then do not apply)")
    parser.add_argument("--out", type=Path, default=Path("docs/quality.md"))
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="add this earlier run's table 1 (its JSON; a detail table of another world) as the last "
                             "section; may be given more than once")
    parser.add_argument("--clips", type=int, default=12, help="held-out clips for the detail table")
    parser.add_argument("--prompts", type=int, default=48, help="held-out prompts for the text-to-video table")
    parser.add_argument("--steps", default="1,2,4,8,32")
    parser.add_argument("--solver", default="unipc", choices=("unipc", "euler"))
    parser.add_argument("--detail-guidance", type=float, default=1.0, help="detail-stage CFG scale (tables and samples)")
    parser.add_argument("--compare-guidance", type=float, default=get_preset("2k").detail_guidance,
                        help="a second detail CFG scale for the text-to-video table (default: the 2k/4k presets')")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=Path, default=Path("examples/prompts.txt"))
    parser.add_argument("--data", default="synthetic", choices=list(SYNTHETIC_WORLDS), help="world of the detail table's clips")
    parser.add_argument("--release-factor", action="store_true",
                        help="anchors with SPEC.md's downsample factor [8, 16] (for models trained so)")
    parser.add_argument("--detail-only", action="store_true",
                        help="table 1 only (no text-to-video, no samples); its sheet is samples/<out name>-detail-comparison.png")
    args = parser.parse_args(argv)
    sheet_dir = args.out.parent / "samples"
    for name in ("clips", "prompts", "threads"):
        if getattr(args, name) < 1:
            parser.exit(2, f"error: --{name} must be at least 1, got {getattr(args, name)}\n")
    try:
        steps = [int(s) for s in args.steps.split(",")]
    except ValueError:
        parser.exit(2, f"error: bad --steps {args.steps!r}; use comma-separated step counts, e.g. 1,2,4,8,32\n")
    if not steps or min(steps) < 1:
        parser.exit(2, f"error: --steps {args.steps!r} must name step counts of at least 1\n")

    def earlier(path: Path) -> EarlierTable:
        """An earlier run's table 1 whose contact sheet is in place, or a one-line error (exit code 2)."""
        try:
            table = earlier_detail_table(path)
        except ValueError as exc:
            parser.exit(2, f"error: {exc}\n")
        sheet = sheet_dir / table.sheets["detail sheet"][0]
        if not sheet.is_file():
            parser.exit(2, f"error: {path}: its contact sheet {sheet} does not exist\n")
        return table

    copied = None
    if args.detail_from is not None:
        if args.detail_only:
            parser.exit(2, "error: --detail-from copies table 1, and --detail-only makes nothing else\n")
        if args.variants is not None:
            parser.exit(2, "error: --variants names the models table 1 measures, and --detail-from copies table 1\n")
        copied = earlier(args.detail_from)
    elif args.variants is None:
        parser.exit(2, "error: --variants is needed to measure table 1 (or copy it with --detail-from)\n")
    elif not args.variants.is_dir():
        parser.exit(2, f"error: variants folder {args.variants} does not exist\n")
    others = {path: earlier(path) for path in args.also}

    from pixelwizard.bundle import load_bundle
    from pixelwizard.default_model import default_model_path

    torch.set_num_threads(args.threads)
    pipe = load_bundle(args.model or default_model_path(), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    shipped = get_preset("tiny")
    preset = shipped.with_overrides(detail_guidance=args.detail_guidance)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    table_settings = (
        f"{args.clips} clips" + SYNTHETIC_WORLDS[args.data].description
        + (", anchors with SPEC.md's downsample factor [8, 16]" if args.release_factor
           else ", anchors with SPEC.md's downsample factor scaled to the preset")
    ) if copied is None else "copied from an earlier run (section 1 says which)"
    settings = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} torch threads",
        "note": f"Preset `tiny` (17 frames, anchor 224x128, detail 448x256, detail shift {preset.detail_shift}) with "
        f"detail-stage CFG {preset.detail_guidance:g}; solver {args.solver}. Detail table: {table_settings}"
        + ("." if args.detail_only else f"; text-to-video: {args.prompts} prompts."),
    }
    samples = None if args.detail_only else render_samples(pipe, args.samples, preset, sheet_dir)
    sheet_name = f"{args.out.stem}-detail-comparison.png" if args.detail_only else "detail-comparison.png"
    command = "python -m pixelwizard.training.quality " + " ".join(argv if argv is not None else sys.argv[1:])
    # How table 1 was measured, kept in the JSON so that a later --detail-from can say it.
    table_command, table_note = command, settings["note"]
    if copied is not None:  # table 1 and its contact sheet stay as the earlier run made them
        detail, sheets, table_command, table_note = copied.rows, copied.sheets, copied.command, copied.settings
        differences = copied.differences
        settings["detail_source"] = (
            f"Copied from `{args.detail_from}` (`--detail-from`), an earlier run of this script on the same VAE, text "
            f"encoder and detail models (table 1 does not use the anchor model). Its settings: {table_note}"
            + (f" It was measured with `{table_command}`." if table_command else ""))
    else:
        variants = VARIANTS if args.model is None else (replace(VARIANTS[0], label="shortcut (--model)"), *VARIANTS[1:])
        detail, sheet, differences = detail_table(pipe, args.variants, preset, args.clips, steps, args.solver, log, args.data,
                                     args.release_factor, variants)
        sheet_dir.mkdir(parents=True, exist_ok=True)
        contact_sheet([clip for picks in sheet[:3] for clip in picks.values()]).save(sheet_dir / sheet_name)
        sheets = {"detail rows": [", ".join(sheet[0])], "detail sheet": [sheet_name]}
    adherence = None
    if not args.detail_only:
        guidances = [preset.detail_guidance] + [
            g for g in (args.compare_guidance,) if g is not None and g != preset.detail_guidance
        ]
        adherence, examples = adherence_table(pipe, preset, args.prompts, guidances, log)
        contact_sheet([frames for _, frames in examples]).save(sheet_dir / "heldout-text-to-video.png")
        sheets["held-out captions"] = [caption for caption, _ in examples]
    write_report(args.out, command, detail, sheets, settings, adherence, samples, others, differences)
    raw = {"detail_command": table_command, "detail_settings": table_note,
           "sheets": {k: sheets[k] for k in ("detail sheet", "detail rows")},
           "detail": [{"model": label, "steps": n, **m} for (label, n), m in detail.items()],
           "differences": differences,
           "adherence": adherence, "samples_seconds": samples[0] if samples else None, "settings": settings}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
