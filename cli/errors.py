"""Exit codes and the one-line error convention shared by every command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def first_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, or its type's name when it has none."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def check_out_folder(out: Path, option: str = "--out") -> None:
    """An ``--out`` that must be a folder to write into, or one that can be made: anything else is a one-line error
    before any work, and nothing is created here (the command makes the folder only once it has something to put
    there)."""
    if out.exists():
        if not out.is_dir():
            fail(f"{option} {out} exists and is not a folder")
        if not os.access(out, os.W_OK | os.X_OK):
            fail(f"{option} {out} is not writable")
        return
    check_makeable(out, option)


def check_makeable(path: Path, option: str) -> None:
    """A path the command creates, or writes beside itself and renames into place: the folder it goes in must be
    writable, or makeable, so that a long run does not fail only when it saves its result."""
    parent = path.absolute().parent
    ancestor = next(folder for folder in (parent, *parent.parents) if folder.exists())
    if not ancestor.is_dir():
        fail(f"{option} {path} cannot be made: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        fail(f"{option} {path} cannot be {'made' if ancestor != parent else 'written'}: {ancestor} is not writable")


def check_seed(seed: int) -> None:
    """A ``--seed`` within what a prompt file's own seeds may be (the run database's signed 64-bit columns)."""
    from pixelwizard.prompts import SEED_LIMIT

    if not 0 <= seed < SEED_LIMIT:
        fail(f"--seed must be a non-negative integer below 2**63, got {seed}")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)  # the message may hold "[...]"
    raise typer.Exit(code)
