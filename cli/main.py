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
from rich.markup import escape  # noqa: E402

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


def exit_on_stop_signals() -> None:
    """SIGTERM (a scheduler, ``kill``) and SIGHUP (a closed terminal or SSH session) end a command as Ctrl-C does, by
    an exception: cleanup runs (the encoder and its temporary file, a staging folder, a batch's jobs handed back),
    so nothing half-written is left behind."""
    for sent in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sent, lambda signum, _frame: sys.exit(128 + signum))


def run() -> None:
    """The ``pixelwizard`` command: Typer's handling, except that a usage error (an option value of the wrong type or
    out of range, an unknown command or option) is the one-line ``error:`` of every other bad input, exit 2."""
    try:  # Typer 0.2x carries its own copy of Click, whose exceptions are the ones raised
        from typer._click import exceptions as click_errors
    except ImportError:
        from click import exceptions as click_errors

    from cli.errors import err_console

    try:
        code = app(prog_name="pixelwizard", standalone_mode=False)
    except getattr(click_errors, "NoArgsIsHelpError", ()) as exc:  # a bare group: its help (Click >= 8.2)
        exc.show()
        sys.exit(exc.exit_code)
    except click_errors.ClickException as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.format_message())}", markup=True)
        sys.exit(exc.exit_code)
    except typer.Abort:  # end of input where a prompt wanted some (Typer's own class, not its Click copy's)
        err_console.print("Aborted!")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


@app.callback()
def main() -> None:
    """Native 2K/4K text-to-video: an anchor video plus a few-step shortcut detail stage."""
    exit_on_stop_signals()
