"""The worker loop's bookkeeping around a stage: what a failure counts as, and waiting out a database outage."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from flows.stage_runner import FREE_INTERRUPTIONS, give_up_stage, through_outage
from storage.database import is_connection_error, open_database
from storage.errors import DatabaseUnavailableError
from storage.jobs import JobSpec, add_jobs, claim_next_job, create_batch, start_attempt, transition
from storage.models import Attempt, AttemptOutcome, Job, JobStatus

REFUSED_URL = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1: connection refused


@pytest.fixture
def factory(db_url: str) -> sessionmaker[Session]:
    return open_database(db_url)


def _refused() -> OperationalError:
    """A real OperationalError: a connection to a port where nothing listens."""
    engine = create_engine(REFUSED_URL, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("port 1 accepted a connection")


def _started(factory: sessionmaker[Session], batch_id: int, worker: str) -> tuple[int, int]:
    """Claim the batch's next job and start its anchoring stage: (job id, attempt id)."""
    job = claim_next_job(factory, batch_id, worker, lease_seconds=3600)
    with factory.begin() as session:
        job = session.get(Job, job.id)
        transition(session, job, JobStatus.anchoring, worker=worker)
        return job.id, start_attempt(session, job, JobStatus.anchoring, worker).id


def test_a_database_outage_is_not_counted_against_the_job_and_a_real_failure_is(factory) -> None:
    with factory.begin() as session:
        batch_id = create_batch(session, name="b", source="p.txt", preset="tiny").id
        add_jobs(session, batch_id, [JobSpec(f"p{i}", f"prompt {i}", i, "tiny", "rev") for i in range(2)])

    # The stage's own closing never reached the database: give_up_stage closes the attempt. One try is allowed, and an
    # outage does not use it up.
    job_id, attempt_id = _started(factory, batch_id, "w")
    assert give_up_stage(factory, job_id, "w", _refused(), max_attempts=1) == JobStatus.pending
    with factory() as session:
        attempt, job = session.get(Attempt, attempt_id), session.get(Job, job_id)
        assert (attempt.outcome, attempt.finished_at is not None) == (AttemptOutcome.interrupted, True)
        assert attempt.error.startswith("OperationalError") and (job.status, job.lease_owner) == (JobStatus.pending, None)

    # The same job tried again, and failing for a reason of its own: that was its one try.
    again, attempt_id = _started(factory, batch_id, "w")
    assert again == job_id
    assert give_up_stage(factory, job_id, "w", RuntimeError("boom"), max_attempts=1) == JobStatus.failed
    with factory() as session:
        assert session.get(Attempt, attempt_id).outcome == AttemptOutcome.failed
        assert (session.get(Job, job_id).status, session.get(Job, job_id).last_error) == (JobStatus.failed, "RuntimeError: boom")

    # Claimed, but the start of its stage never reached the database: the claim is handed back, not left to expire.
    other = claim_next_job(factory, batch_id, "w", lease_seconds=3600)
    assert give_up_stage(factory, other.id, "w", _refused(), max_attempts=1) == JobStatus.pending
    assert claim_next_job(factory, batch_id, "w2", lease_seconds=60).id == other.id


def test_through_outage_waits_for_the_database_and_gives_up_after_its_limit(tmp_path) -> None:
    working = create_engine(f"sqlite:///{tmp_path / 'up.db'}")
    calls = []

    def down_twice_then_up() -> int:  # real errors: the first two calls reach for a port where nothing listens
        calls.append(time.monotonic())
        engine = working if len(calls) > 2 else create_engine(REFUSED_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as connection:
            return connection.execute(text("SELECT 7")).scalar()

    assert through_outage(down_twice_then_up, outage_seconds=60) == 7
    assert len(calls) == 3 and calls[2] - calls[0] >= 3  # waited 1 s, then 2 s

    def always_down() -> None:
        raise _refused()

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=r"out of reach for \d+ s, longer than the 2 s a worker waits"):
        through_outage(always_down, outage_seconds=2)
    assert 2 <= time.monotonic() - started < 10

    def wrong() -> None:
        calls.append(1)
        raise ValueError("not an outage")

    calls.clear()
    with pytest.raises(ValueError):
        through_outage(wrong, outage_seconds=60)
    assert calls == [1]  # other errors are not tried again


def test_interrupted_tries_count_once_there_are_too_many_of_them(factory) -> None:
    """A job whose own stage keeps failing as an outage would (say a part too large for the read timeout) is not
    tried for ever: past FREE_INTERRUPTIONS interrupted tries of a stage, each counts."""
    with factory.begin() as session:
        batch_id = create_batch(session, name="b", source="p.txt", preset="tiny").id
        add_jobs(session, batch_id, [JobSpec("p", "prompt", 0, "tiny", "rev")])
    refused = _refused()
    for _ in range(FREE_INTERRUPTIONS):
        job_id, _attempt = _started(factory, batch_id, "w")
        assert give_up_stage(factory, job_id, "w", refused, max_attempts=1) == JobStatus.pending
    job_id, _attempt = _started(factory, batch_id, "w")
    assert give_up_stage(factory, job_id, "w", refused, max_attempts=1) == JobStatus.failed


def test_only_errors_of_a_database_going_away_are_outages(db_url: str) -> None:
    """Real errors on each backend: a refused connection is an outage; a missing table (SQLite reports it as an
    OperationalError too) is not, so it is not waited for."""
    assert is_connection_error(_refused())
    engine = create_engine(db_url)
    try:
        with pytest.raises(Exception) as caught, engine.connect() as connection:
            connection.execute(text("SELECT * FROM no_such_table"))
    finally:
        engine.dispose()
    assert not is_connection_error(caught.value)
