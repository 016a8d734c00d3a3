"""``pixelwizard convert``: released Wan2.2 / PixelWizard weights -> one PixelWizard bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.errors import EXIT_FAILURE, fail, first_line


def convert(
    base: Annotated[Path, typer.Argument(help="Wan2.2-TI2V-5B folder: diffusers layout or the original Wan layout.")],
    out: Annotated[Path, typer.Option(help="The bundle folder to write (must not exist).")],
    detail: Annotated[
        Optional[Path], typer.Option(help="PixelWizard release checkpoint (.pt) for the detail model.")
    ] = None,
    weights: Annotated[str, typer.Option(help="auto (EMA if present), ema or raw generator weights.")] = "auto",
    dtype: Annotated[str, typer.Option(help="bf16, fp32 or keep (the stored dtypes) for converted weights.")] = "bf16",
) -> None:
    """Convert released weights into a bundle that 'render --model' loads (docs/conversion.md)."""
    if weights not in ("auto", "ema", "raw"):
        fail(f"unknown weights {weights!r}; choose auto, ema or raw")
    if dtype not in ("bf16", "fp32", "keep"):
        fail(f"unknown dtype {dtype!r}; choose bf16, fp32 or keep")
    if not base.is_dir():
        fail(f"base folder {base} " + ("is not a folder" if base.exists() else "does not exist"))
    if detail is not None and not detail.is_file():
        fail(f"release checkpoint {detail} " + ("is not a file" if detail.exists() else "does not exist"))
    if out.exists():
        fail(f"{out} already exists")

    import torch

    from cli.progress import quiet_libraries
    from pixelwizard.conversion.convert import convert as run

    quiet_libraries()
    chosen = {"bf16": torch.bfloat16, "fp32": torch.float32, "keep": None}[dtype]
    try:
        path = run(base, out, detail=detail, weights=weights, dtype=chosen)
    except ValueError as exc:  # ConversionError, ModelFolderError, or release weights of a shape that does not fit
        fail(first_line(exc))
    except OSError as exc:  # the file system (a full disk, an --out that cannot be made), not the input's content
        fail(first_line(exc), EXIT_FAILURE)
    typer.echo(f"wrote {path}")
