"""``pixelwizard db``: the run database's schema."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli.errors import fail

db_app = typer.Typer(help="The run-tracking database (SQLite by default, PostgreSQL by URL).", no_args_is_help=True)

UrlOption = Annotated[
    Optional[str], typer.Option("--url", help="Database URL (default: $PIXELWIZARD_DATABASE_URL or embedded SQLite).")
]


@db_app.command()
def upgrade(url: UrlOption = None, revision: Annotated[str, typer.Option(help="Target revision.")] = "head") -> None:
    """Apply the migrations up to --revision (head by default) and print the revision the database is at."""
    from storage.database import safe_url
    from storage.errors import DatabaseError
    from storage.migrate import current_revision, upgrade as run_upgrade
    from storage.settings import database_url

    target = url or database_url()
    try:
        run_upgrade(target, revision)
        typer.echo(f"{safe_url(target)} is at revision {current_revision(target)}")
    except DatabaseError as exc:
        fail(str(exc))


@db_app.command()
def current(url: UrlOption = None) -> None:
    """Print the revision the database is at."""
    from storage.errors import DatabaseError
    from storage.migrate import current_revision

    try:
        typer.echo(current_revision(url) or "empty")
    except DatabaseError as exc:
        fail(str(exc))
