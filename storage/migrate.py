"""Apply the Alembic migrations shipped in the ``migrations`` package to the run database.

Alembic is configured in code (``script_location`` is the installed ``migrations`` package),
so this works from an installed wheel without the repository-root ``alembic.ini``.
``pixelwizard db upgrade`` calls ``upgrade()``. On SQLite each run holds ``BEGIN IMMEDIATE``
(transactional DDL, concurrent upgraders wait); on PostgreSQL ``migrations/env.py`` takes an
advisory lock for the same reason. A revision these migrations do not have (a database made by
a newer PixelWizard, a mistyped target) is a one-line ``SchemaRevisionError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, event

import migrations
from storage.database import _one_line, check_connection, create_db_engine, safe_url
from storage.errors import SchemaRevisionError

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Upgrade the database at ``url`` (default from settings) to ``revision``."""
    with _migration_connection(url) as connection:
        _run(command.upgrade, connection, revision)


def downgrade(url: str | None, revision: str) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``"base"`` drops every table)."""
    with _migration_connection(url) as connection:
        _run(command.downgrade, connection, revision)


def ensure_schema(url: str | None = None) -> None:
    """Upgrade to head if the database is behind; a no-op (one read) when it is current.

    Used on first use of any database, the embedded SQLite default included.
    """
    if current_revision(url) != head_revision():
        upgrade(url)


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at, or ``None`` for an empty database."""
    engine = create_db_engine(url)
    try:
        check_connection(engine)
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision shipped in ``migrations/versions``."""
    head = ScriptDirectory.from_config(_config(None)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def migration_engine(url: str | None = None) -> Engine:
    """An engine for running migrations; on SQLite transactions start with ``BEGIN IMMEDIATE``
    and foreign keys are off (as Alembic's batch mode requires)."""
    engine = create_db_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _manual_transactions(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA foreign_keys=OFF")

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def _migration_connection(url: str | None) -> Iterator[Connection]:
    engine = migration_engine(url)
    try:
        check_connection(engine)
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def _run(action: Callable[[Config, str], None], connection: Connection, revision: str) -> None:
    """Run an Alembic command to ``revision``; its errors (a revision these migrations do not
    have, in the database or as the target) become a one-line ``SchemaRevisionError``."""
    try:
        action(_config(connection), revision)
    except CommandError as err:
        where = safe_url(connection.engine.url)
        known = {script.revision for script in ScriptDirectory.from_config(_config(None)).walk_revisions()}
        unknown = [rev for rev in MigrationContext.configure(connection).get_current_heads() if rev not in known]
        if unknown:
            raise SchemaRevisionError(
                f"database {where} is at revision {', '.join(unknown)}, which this PixelWizard does not know "
                "(made by a newer version?)"
            ) from None
        raise SchemaRevisionError(f"cannot migrate database {where} to {revision}: {_one_line(err)}") from None


def _config(connection: Connection | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config
