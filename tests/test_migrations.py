"""Alembic migrations: empty -> head -> base on SQLite and PostgreSQL, and no model drift."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

import migrations
from storage import SchemaRevisionError, migrate
from storage.database import open_database, safe_url
from storage.models import Base

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = {"batches", "jobs", "attempts", "artifacts"}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _drift(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_to_head_and_back_to_base(db_url: str) -> None:
    assert _tables(db_url) == set()

    migrate.upgrade(db_url)
    assert _tables(db_url) == TABLES
    assert migrate.current_revision(db_url) == migrate.head_revision()
    assert _drift(db_url) == []

    migrate.downgrade(db_url, "base")
    assert _tables(db_url) == set()
    assert migrate.current_revision(db_url) is None

    migrate.ensure_schema(db_url)  # and up again, as first use does
    assert _tables(db_url) == TABLES


def test_models_without_migrations_would_drift(sqlite_url: str) -> None:
    """The drift check is live: an empty database differs from the models."""
    migrate.ensure_schema(sqlite_url)
    migrate.downgrade(sqlite_url, "base")

    diffs = _drift(sqlite_url)

    assert {d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "add_table"} == TABLES  # type: ignore[attr-defined]


def test_constraints_follow_the_naming_convention(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = create_engine(db_url)
    with engine.connect() as connection:
        inspector = inspect(connection)
        unique = {c["name"] for c in inspector.get_unique_constraints("jobs")}
        foreign = {c["name"] for c in inspector.get_foreign_keys("attempts")}
        checks = {c["name"] for c in inspector.get_check_constraints("jobs")}
        indexes = {i["name"] for i in inspector.get_indexes("attempts")}
    engine.dispose()

    assert "uq_jobs_batch_id_idempotency_key" in unique
    assert foreign == {"fk_attempts_job_id_jobs"}
    assert "ck_jobs_job_status" in checks
    assert "ix_attempts_job_id" in indexes


def test_migrations_are_found_through_the_package() -> None:
    assert Path(migrations.__file__).resolve().parent == migrate.MIGRATIONS_DIR
    assert (migrate.MIGRATIONS_DIR / "env.py").is_file()
    assert migrate.head_revision() == "0002"


def test_repo_root_alembic_ini_drives_the_cli_config(sqlite_url: str) -> None:
    config = Config(str(REPO_ROOT / "alembic.ini"), cmd_opts=Namespace(x=[f"url={sqlite_url}"]))

    command.upgrade(config, "head")

    assert _tables(sqlite_url) == TABLES
    assert migrate.current_revision(sqlite_url) == "0002"


def test_upgrade_of_unreachable_database_is_a_clear_error() -> None:
    from storage import DatabaseUnavailableError

    with pytest.raises(DatabaseUnavailableError, match="cannot connect"):
        migrate.upgrade("postgresql+psycopg://postgres@127.0.0.1:1/nothing")


def test_database_from_a_newer_version_is_a_one_line_error(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    expected = (
        f"database {safe_url(db_url)} is at revision 0099, which this PixelWizard does not know "
        "(made by a newer version?)"
    )

    for action in (open_database, migrate.upgrade, lambda url: migrate.downgrade(url, "base")):
        with pytest.raises(SchemaRevisionError) as caught:
            action(db_url)
        assert str(caught.value) == expected and caught.value.__suppress_context__

    assert migrate.current_revision(db_url) == "0099"  # left as it was
    assert _tables(db_url) == TABLES


def test_unknown_target_revision_is_a_one_line_error(sqlite_url: str) -> None:
    with pytest.raises(SchemaRevisionError) as caught:
        migrate.upgrade(sqlite_url, "nonsense")

    assert str(caught.value) == (
        f"cannot migrate database {sqlite_url} to nonsense: Can't locate revision identified by 'nonsense'"
    )
    assert migrate.current_revision(sqlite_url) is None and _tables(sqlite_url) == set()


def _attempt_checks_and_rows(url: str) -> tuple[dict[str, str], list[tuple]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        inspector = inspect(connection)
        checks = {c["name"]: c["sqltext"] for c in inspector.get_check_constraints("attempts")}
        shape = ({i["name"] for i in inspector.get_indexes("attempts")},
                 {c["name"] for c in inspector.get_foreign_keys("attempts")})
        rows = connection.execute(text("SELECT id, job_id, stage, worker, outcome FROM attempts ORDER BY id")).all()
    engine.dispose()
    assert shape == ({"ix_attempts_job_id"}, {"fk_attempts_job_id_jobs"})
    return checks, [tuple(r) for r in rows]


def test_0002_lets_attempts_end_interrupted_and_keeps_every_row_both_ways(db_url: str) -> None:
    migrate.upgrade(db_url, "0001")
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO batches (id, name, source, preset, status, created_at, jobs_total, jobs_done, jobs_failed, "
            "jobs_cancelled) VALUES (1, 'b', 's', 'tiny', 'running', CURRENT_TIMESTAMP, 1, 0, 0, 0)"))
        connection.execute(text(
            "INSERT INTO jobs (id, batch_id, prompt_id, prompt, negative_prompt, seed, preset, model_revision, "
            "parameters, idempotency_key, status, attempt_count, created_at, updated_at) VALUES (1, 1, 'p', "
            "'a red circle', '', 0, 'tiny', 'r', '{}', 'k', 'anchored', 2, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        for attempt_id, outcome in ((1, "succeeded"), (2, "crashed")):
            connection.execute(text(
                f"INSERT INTO attempts (id, job_id, stage, worker, started_at, outcome) VALUES ({attempt_id}, 1, "
                f"'anchoring', 'w', CURRENT_TIMESTAMP, '{outcome}')"))
    checks, before = _attempt_checks_and_rows(db_url)
    assert "interrupted" not in checks["ck_attempts_attempt_outcome"]

    migrate.upgrade(db_url)
    checks, rows = _attempt_checks_and_rows(db_url)
    assert rows == before and "interrupted" in checks["ck_attempts_attempt_outcome"]
    assert "cancelled" in checks["ck_attempts_attempt_stage"]  # the stage's own check kept
    with engine.begin() as connection:
        connection.execute(text("UPDATE attempts SET outcome = 'interrupted' WHERE id = 2"))
        with pytest.raises(Exception, match="ck_attempts_attempt_outcome|CHECK constraint failed"):
            with connection.begin_nested():
                connection.execute(text("UPDATE attempts SET outcome = 'exploded' WHERE id = 2"))

    migrate.downgrade(db_url, "0001")  # an interrupted try reads as crashed, the nearest earlier outcome
    checks, rows = _attempt_checks_and_rows(db_url)
    assert rows == before and "interrupted" not in checks["ck_attempts_attempt_outcome"]
    engine.dispose()
