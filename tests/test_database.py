"""Opening the run database: first-use schema, unreachable URLs, UTC datetimes, ORM guards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import StatementError

from storage import DatabaseUnavailableError, IllegalTransitionError, migrate
from storage.database import create_db_engine, open_database
from storage.jobs import JobSpec, add_jobs, create_batch
from storage.models import Batch, Job, JobStatus


def test_embedded_sqlite_default_gets_its_schema_on_first_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIXELWIZARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PIXELWIZARD_DATABASE_URL", raising=False)

    factory = open_database()

    assert (tmp_path / "home" / "pixelwizard.db").is_file()
    assert migrate.current_revision() == migrate.head_revision()
    with factory.begin() as session:
        create_batch(session, name="b", source="prompts.txt", preset="4k")
    with factory() as session:
        assert session.scalars(select(Batch.name)).all() == ["b"]


def test_open_without_migrate_leaves_schema_alone(sqlite_url: str) -> None:
    factory = open_database(sqlite_url, migrate=False)

    assert migrate.current_revision(sqlite_url) is None
    with factory() as session:
        assert inspect(session.get_bind()).get_table_names() == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://pixel:s3cret@127.0.0.1:1/pixelwizard",  # closed port
        "postgresql+psycopg://pixel:s3cret@no-such-host.invalid/pixelwizard",
        "not a url",
        "nosuchdialect://x/y",
    ],
)
def test_unreachable_database_gives_one_line_error(url: str) -> None:
    with pytest.raises(DatabaseUnavailableError) as caught:
        open_database(url)

    message = str(caught.value)
    assert "\n" not in message and message.startswith("cannot ")
    assert "s3cret" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("action", [open_database, migrate.upgrade, migrate.current_revision])
def test_non_numeric_port_is_a_one_line_error_without_the_password(action: Callable[[str], object]) -> None:
    with pytest.raises(DatabaseUnavailableError) as caught:
        action("postgresql+psycopg://pixel:s3cret@db.example:notaport/pixelwizard")

    assert str(caught.value) == (
        "cannot open database postgresql+psycopg://pixel:***@db.example:notaport/pixelwizard: the port is not a number"
    )
    assert caught.value.__suppress_context__


@pytest.mark.parametrize("action", [open_database, migrate.upgrade])
def test_a_password_with_an_unescaped_at_sign_is_masked_whole_and_named_as_the_problem(action) -> None:
    with pytest.raises(DatabaseUnavailableError) as caught:
        action("postgresql+psycopg://pixel:p@ss@127.0.0.1:5432/pixelwizard")

    assert str(caught.value) == ("cannot open database postgresql+psycopg://pixel:***@127.0.0.1:5432/pixelwizard: "
                                 "a '@' in the user name or password must be written %40")


def test_the_postgres_scheme_is_answered_with_the_one_to_write() -> None:
    with pytest.raises(DatabaseUnavailableError, match=r"^cannot open database postgres://pixel:\*\*\*@db/pw: .*"
                       r"postgres; for PostgreSQL write postgresql\+psycopg://$"):
        open_database("postgres://pixel:s3cret@db/pw")


def test_sqlite_url_under_home_opens_the_file_whose_folder_it_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where a literal "~" folder would go
    url = "sqlite:///~/runs/pixelwizard.db"

    factory = open_database(url)
    with factory.begin() as session:
        create_batch(session, name="b", source="s", preset="p")

    assert (tmp_path / "home" / "runs" / "pixelwizard.db").is_file()
    assert not (tmp_path / "cwd" / "~").exists()
    assert migrate.current_revision(url) == migrate.head_revision()
    with open_database(url)() as session:
        assert session.scalars(select(Batch.name)).all() == ["b"]


def test_missing_postgres_database_is_unavailable(pg_url: str) -> None:
    with pytest.raises(DatabaseUnavailableError, match="pw_missing_db"):
        migrate.upgrade(pg_url.rsplit("/", 1)[0] + "/pw_missing_db")


def test_datetimes_are_aware_utc_on_both_backends(db_url: str) -> None:
    factory = open_database(db_url)
    local = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    with factory.begin() as session:
        batch = create_batch(session, name="b", source="s", preset="p")
        (job,) = add_jobs(session, batch.id, [JobSpec("p1", "prompt", 1, "p", "rev")])
        job.lease_expires_at = local
    with factory() as session:
        stored = session.get(Job, job.id)
        assert stored is not None and stored.lease_expires_at is not None
        assert stored.lease_expires_at.tzinfo == UTC
        assert stored.lease_expires_at == local
        assert stored.created_at.tzinfo == UTC


def test_naive_datetimes_are_refused(sqlite_url: str) -> None:
    factory = open_database(sqlite_url)
    with pytest.raises(StatementError, match="naive datetime"), factory.begin() as session:
        create_batch(session, name="b", source="s", preset="p").finished_at = datetime(2026, 1, 1)
        session.flush()


def test_assigning_an_illegal_status_on_the_orm_object_raises(sqlite_url: str) -> None:
    factory = open_database(sqlite_url)
    with factory.begin() as session:
        batch = create_batch(session, name="b", source="s", preset="p")
        (job,) = add_jobs(session, batch.id, [JobSpec("p1", "prompt", 1, "p", "rev")])
        with pytest.raises(IllegalTransitionError, match="pending -> done"):
            job.status = JobStatus.done
        job.status = JobStatus.anchoring  # allowed by the table
    with pytest.raises(IllegalTransitionError):
        Job(status=JobStatus.rendering)


def test_sqlite_engine_enforces_foreign_keys(sqlite_url: str) -> None:
    open_database(sqlite_url)
    engine = create_db_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
