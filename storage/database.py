"""Engine and session factory for the run database: a SQLite file by default, PostgreSQL by URL.

``open_database()`` is the entry point for workers and the CLI: it checks the database can
be reached (``DatabaseUnavailableError`` with a one-line message otherwise), brings the schema
to the latest migration, and returns a session factory whose sessions keep loaded objects
usable after commit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage import settings
from storage.errors import DatabaseUnavailableError

__all__ = [
    "DatabaseUnavailableError", "check_connection", "create_db_engine", "is_connection_error", "open_database", "safe_url"
]

SQLITE_BUSY_TIMEOUT_S = 30
PG_CONNECT_TIMEOUT_S = 5
# The ``scheme://user:password@`` prefix as SQLAlchemy's URL parser splits it, and up to the last '@' (a password
# that holds an unescaped '@').
_URL_PASSWORD = re.compile(r"^([\w+]+://[^:/@]*:)[^@]*@")
_URL_PASSWORD_TO_LAST_AT = re.compile(r"^([\w+]+://[^:/@]*:).*@(?=[^@]*$)")


def _unescaped_at(url: str) -> bool:
    """Whether the URL's part before any query holds more than one '@': one of them is in the user name or
    password, where it must be written %40 (a parser would end the password at the first)."""
    return str(url).split("?", 1)[0].count("@") > 1


def safe_url(url: str | URL) -> str:
    """The URL with any password masked, for messages and logs (all of it, also when it holds an unescaped '@')."""
    if isinstance(url, str) and _unescaped_at(url):
        head, mark, query = url.partition("?")
        return _URL_PASSWORD_TO_LAST_AT.sub(r"\1***@", head) + mark + query
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<unparseable database URL>"
    except ValueError:  # the URL split into parts, but one of them (the port) is malformed
        return _URL_PASSWORD.sub(r"\1***@", str(url))
    return parsed.render_as_string(hide_password=True)


def create_db_engine(url: str | None = None) -> Engine:
    """An engine for ``url`` (default ``$PIXELWIZARD_DATABASE_URL`` or the embedded SQLite file).

    SQLite gets WAL mode, a busy timeout and enforced foreign keys, and its parent directory
    is created; PostgreSQL gets a short connect timeout and pre-ping. No connection is made.
    """
    raw = url or settings.database_url()
    if _unescaped_at(raw):  # a parser would end the password at its first '@'
        raise DatabaseUnavailableError(
            f"cannot open database {safe_url(raw)}: a '@' in the user name or password must be written %40"
        )
    parsed = _parse_url(raw)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        return create_engine(parsed, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as err:
        hint = "; for PostgreSQL write postgresql+psycopg://" if parsed.get_backend_name() == "postgres" else ""
        raise DatabaseUnavailableError(f"cannot open database {safe_url(raw)}: {_one_line(err)}{hint}") from None


def check_connection(engine: Engine) -> None:
    """Connect once and run ``SELECT 1``; raise ``DatabaseUnavailableError`` if that fails."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as err:
        raise DatabaseUnavailableError(
            f"cannot connect to database {safe_url(engine.url)}: {_one_line(err.orig or err)}"
        ) from None


# SQLSTATEs of a server that is going away or not there yet: connection exceptions (class 08), an administrator's or
# a crash's shutdown, a server still starting; and SQLite's busy, locked, cannot-open and I/O result codes.
_OUTAGE_SQLSTATE_CLASSES = ("08",)
_OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
_SQLITE_OUTAGE_CODES = frozenset({5, 6, 10, 14})


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached, dropped the connection, is shutting down or starting,
    or (SQLite) was busy: worth trying again once it is back. A statement's own error (no such table, a constraint,
    a full disk) is not."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    orig = exc.orig
    if hasattr(orig, "sqlite_errorcode"):
        return (orig.sqlite_errorcode & 0xFF) in _SQLITE_OUTAGE_CODES
    state = getattr(orig, "sqlstate", None)
    if state is None:  # a client-side failure: no connection to send a statement over
        return True
    return state.startswith(_OUTAGE_SQLSTATE_CLASSES) or state in _OUTAGE_SQLSTATES


def open_database(url: str | None = None, *, migrate: bool = True) -> sessionmaker[Session]:
    """Check the database at ``url`` is reachable, upgrade it to head unless ``migrate`` is False,
    and return a ``sessionmaker`` (``expire_on_commit=False``).

    Upgrading on open gives the embedded SQLite default its schema on first use; for other
    URLs it applies pending migrations too (concurrent openers serialise on a lock), so
    deployments that prefer explicit ``pixelwizard db upgrade`` pass ``migrate=False``.
    """
    engine = create_db_engine(url)
    check_connection(engine)
    if migrate:
        from storage.migrate import ensure_schema

        ensure_schema(url)
    return sessionmaker(engine, expire_on_commit=False)


def _parse_url(raw: str) -> URL:
    """``make_url(raw)``; a malformed URL is a one-line ``DatabaseUnavailableError``, not a traceback."""
    try:
        return make_url(raw)
    except ArgumentError as err:
        reason = _one_line(err)
    except ValueError:  # SQLAlchemy's int() of a port that is not a number
        reason = "the port is not a number"
    raise DatabaseUnavailableError(f"cannot open database {safe_url(raw)}: {reason}") from None


def _sqlite_engine(url: URL) -> Engine:
    """SQLite at ``url`` with ``~`` expanded (SQLite itself would open a literal ``~`` folder)."""
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        url = url.set(database=str(Path(url.database).expanduser()))
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DatabaseUnavailableError(f"cannot create directory for {safe_url(url)}: {_one_line(err)}") from None
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    return engine


def _one_line(err: BaseException) -> str:
    """The first non-empty line of an exception message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
