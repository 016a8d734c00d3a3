"""Entry point of the ``pixelwizard`` command."""

from __future__ import annotations

import os
import signal
import sys

# Nothing may reach for a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Prefect's ephemeral API server gets 20 s to start; its first start on a fresh machine (a new
# database to migrate) can take longer on two busy cores, and the whole batch then fails.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import typer  # noqa: E402

from cli.batch import batch_app, cache_app, jobs_app  # noqa: E402
from cli.convert import convert  # noqa: E402
from cli.db import db_app  # noqa: E402
from cli.render import render  # noqa: E402
from cli.train import train_app  # noqa: E402

app = typer.Typer(
    name="pixelwizard",
    help="Native 2K/4K text-to-video: an anchor video plus a few-step shortcut detail stage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(render)
app.command()(convert)
app.add_typer(db_app, name="db")
app.add_typer(train_app, name="train")
app.add_typer(batch_app, name="batch")
app.add_typer(jobs_app, name="jobs")
app.add_typer(cache_app, name="cache")


def exit_on_sigterm() -> None:
    """SIGTERM (a scheduler, ``kill``) ends a command as Ctrl-C does, by an exception: cleanup runs (the
    encoder and its temporary file, a staging folder), so nothing half-written is left behind."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


@app.callback()
def main() -> None:
    """Native 2K/4K text-to-video: an anchor video plus a few-step shortcut detail stage."""
    exit_on_sigterm()
