"""``pixelwizard render``: ad hoc renders of one prompt or a prompt file to MP4 files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from cli.device_warnings import warn_if_slow_on_cpu
from cli.errors import EXIT_FAILURE, check_out_folder, check_seed, fail, first_line
from cli.prompt_warnings import warn_unread_words
from cli.progress import StageProgress, quiet_libraries

if TYPE_CHECKING:
    from pixelwizard.presets import ExecutionPlan


def render(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt to render (or use --prompts).")] = None,
    prompts: Annotated[
        Optional[Path], typer.Option("--prompts", "-p", help="A .txt or .jsonl prompt file.")
    ] = None,
    preset: Annotated[str, typer.Option(help="tiny, 2k or 4k.")] = "tiny",
    model: Annotated[
        Optional[Path], typer.Option(help="Model bundle folder (default: the embedded tiny model).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder; files are named <prompt id>.mp4.")] = Path("out"),
    seed: Annotated[int, typer.Option(help="Base seed; stage seeds derive from it and the prompt id.")] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Detail-stage steps (preset default).")] = None,
    anchor_steps: Annotated[Optional[int], typer.Option(help="Anchor-stage steps (preset default).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Output width, a multiple of 32.")] = None,
    height: Annotated[Optional[int], typer.Option(help="Output height, a multiple of 32.")] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frame count, 4k+1.")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Detail-stage CFG scale.")] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(help="Negative prompt for every prompt.")] = None,
    solver: Annotated[str, typer.Option(help="unipc or euler.")] = "unipc",
    decode_chunks: Annotated[Optional[int], typer.Option(help="Width chunks for decoding (preset default).")] = None,
    offload: Annotated[
        str, typer.Option(help="auto (preset default), none (all on the GPU) or model (one component at a time).")
    ] = "auto",
    attention_backend: Annotated[
        str, typer.Option(help="auto (PyTorch's pick) or a diffusers attention backend, e.g. _native_cudnn.")
    ] = "auto",
    compile_blocks: Annotated[
        Optional[bool], typer.Option("--compile/--no-compile", help="Regional torch.compile (pays off over several prompts).")
    ] = None,
    codec: Annotated[str, typer.Option(help="h264 or hevc10.")] = "h264",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Render again prompts whose MP4 exists.")] = False,
) -> None:
    """Render prompts to MP4: anchor video, shortcut detail stage, decode, encode."""
    from pixelwizard.bundle import ModelFolderError, check_bundle
    from pixelwizard.devices import DeviceError, resolve_device
    from pixelwizard.presets import PresetError, get_preset
    from pixelwizard.prompts import PromptFileError, PromptSpec, load_prompts, prompt_id_for_text

    if (prompt is None) == (prompts is None):
        fail("give exactly one of PROMPT or --prompts FILE")
    check_seed(seed)
    if solver not in ("unipc", "euler"):
        fail(f"unknown solver {solver!r}; choose unipc or euler")
    if codec not in ("h264", "hevc10"):
        fail(f"unknown codec {codec!r}; choose h264 or hevc10")
    check_out_folder(out)
    try:
        chosen = get_preset(preset).with_overrides(
            detail_steps=steps, anchor_steps=anchor_steps, detail_width=width, detail_height=height,
            num_frames=frames, detail_guidance=guidance, decode_chunks=decode_chunks,
        )
        if prompt is not None:
            if not prompt.strip():
                fail("the prompt is empty")
            specs = [PromptSpec(id=prompt_id_for_text(prompt.strip()), prompt=prompt.strip())]
        else:
            specs = load_prompts(prompts)
        bundle = check_bundle(model) if model is not None else None  # what the user names first, then the machine
        target = resolve_device(device)
        plan = _plan(preset, target, offload, attention_backend, compile_blocks)
    except (PresetError, PromptFileError, DeviceError, ModelFolderError) as exc:
        fail(str(exc))
    warn_if_slow_on_cpu(chosen, target)

    todo = [s for s in specs if overwrite or not (out / f"{s.id}.mp4").exists()]
    for spec in specs:
        if spec not in todo:
            typer.echo(f"{out / (spec.id + '.mp4')} exists; skipped (--overwrite renders it again)")
    if not todo:
        return

    quiet_libraries()
    from pixelwizard.bundle import ModelFolderError, load_bundle
    from pixelwizard.default_model import default_model_path
    from pixelwizard.video import encode_video

    import torch

    dtype = torch.bfloat16 if target.startswith("cuda") else torch.float32
    try:
        pipe = load_bundle(bundle or default_model_path(), device="cpu", dtype=dtype)
    except ModelFolderError as exc:
        fail(str(exc))
    warn_unread_words(pipe.tokenizer, todo)
    pipe.place(target, offload=plan.offload, attention_backend=plan.attention_backend, compile_blocks=plan.compile)
    failures = 0
    with StageProgress() as progress:
        for spec in todo:
            progress.start_prompt(spec.id)
            try:
                result = pipe(
                    spec.prompt,
                    prompt_id=spec.id,
                    seed=seed if spec.seed is None else spec.seed,
                    preset=chosen,
                    negative_prompt=spec.negative_prompt or negative_prompt,
                    solver=solver,
                    batch_cfg=plan.batch_cfg,
                    on_progress=progress.update,
                )
                out.mkdir(parents=True, exist_ok=True)  # only once there is a video: a stopped render leaves no folder
                path = encode_video(iter(result.frames.numpy()), out / f"{spec.id}.mp4", fps=chosen.fps, codec=codec)
                progress.finish_prompt(spec.id, str(path))
            except Exception as exc:  # one bad prompt must not lose the others
                failures += 1
                progress.console.print(f"[red]failed[/] {escape(spec.id)}: {escape(first_line(exc))}")
    if failures:
        fail(f"{failures} of {len(todo)} prompt(s) failed", EXIT_FAILURE)


def _plan(preset: str, target: str, offload: str, attention_backend: str, compile_blocks: bool | None) -> "ExecutionPlan":
    """The preset's GPU plan with the user's choices applied; PresetError on a choice that cannot run."""
    from dataclasses import replace

    from pixelwizard.memory import OFFLOAD_CHOICES
    from pixelwizard.presets import PresetError, execution_plan

    plan = execution_plan(preset)
    if offload != "auto":
        if offload not in OFFLOAD_CHOICES:
            raise PresetError(f"unknown offload {offload!r}; choose auto, {', '.join(OFFLOAD_CHOICES)}")
        plan = replace(plan, offload=offload)
    if attention_backend != "auto":
        from diffusers.models.attention_dispatch import AttentionBackendName

        known = [b.value for b in AttentionBackendName]
        if attention_backend not in known:
            raise PresetError(f"unknown attention backend {attention_backend!r}; choose auto or one of: {', '.join(known)}")
        if not target.startswith("cuda") and attention_backend not in ("native", "_native_math"):
            raise PresetError(f"attention backend {attention_backend} needs a CUDA device; use auto on {target}")
        plan = replace(plan, attention_backend=attention_backend)
    if compile_blocks is not None:
        plan = replace(plan, compile=compile_blocks)
    if not target.startswith("cuda"):
        plan = replace(plan, offload="none")  # nothing to save on the CPU
    return plan
