"""Job repository on SQLite and PostgreSQL: idempotency, transitions, leases, crashes, claims."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from storage import IllegalTransitionError, StaleJobError, ValueTooLongError
from storage.database import open_database
from storage.enums import ALLOWED_TRANSITIONS, EXPIRED_LEASE_FALLBACK, is_allowed_transition
from storage.jobs import (
    BatchSummary,
    JobSpec,
    CANCELLED_ERROR,
    add_jobs,
    batch_summary,
    cancel_jobs,
    claim_next_job,
    create_batch,
    ensure_batch,
    finish_attempt,
    heartbeat,
    record_artifact,
    refresh_batch,
    release,
    requeue_expired,
    requeue_stopped,
    start_attempt,
    transition,
)
from storage.models import Artifact, ArtifactKind, Attempt, AttemptOutcome, Batch, BatchStatus, Job, JobStatus, utcnow
from storage.object_store import StoredObject

S = JobStatus
SHORT_LEASE_S = 0.3


@pytest.fixture
def factory(db_url: str) -> sessionmaker[Session]:
    return open_database(db_url)


def _batch_with_jobs(factory: sessionmaker[Session], count: int) -> tuple[int, list[int]]:
    with factory.begin() as session:
        batch = create_batch(session, name="batch", source="prompts.jsonl", preset="4k-fast")
        jobs = add_jobs(
            session, batch.id, [JobSpec(f"p{i}", f"prompt {i}", i, "4k-fast", "rev1") for i in range(count)]
        )
        return batch.id, [job.id for job in jobs]


def _job(factory: sessionmaker[Session], job_id: int) -> Job:
    with factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_transition_table_is_the_documented_one() -> None:
    forward = [S.pending, S.anchoring, S.anchored, S.rendering, S.rendered, S.encoding, S.done]
    expected = set(itertools.pairwise(forward))
    expected |= {(s, end) for s in forward[:-1] for end in (S.failed, S.cancelled)}
    expected |= {(S.failed, S.pending), (S.anchoring, S.pending), (S.rendering, S.anchored), (S.encoding, S.rendered)}
    expected |= {(S.cancelled, S.pending)}  # a requeue of what an operator cancelled
    expected |= {(S.done, S.rendered)}  # its video was lost from the store

    actual = {(a, b) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets}

    assert actual == expected
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)


def test_add_jobs_is_idempotent_per_batch(factory: sessionmaker[Session]) -> None:
    spec = JobSpec("p1", "a red fox", 7, "4k", "rev1", parameters={"steps": 4})
    with factory.begin() as session:
        batch = create_batch(session, name="b", source="prompts.txt", preset="4k")
        other = create_batch(session, name="b2", source="prompts.txt", preset="4k")
        first = add_jobs(session, batch.id, [spec, spec])
        again = add_jobs(
            session, batch.id, [spec, JobSpec("p1", "a red fox", 8, "4k", "rev1", parameters={"steps": 4})]
        )
        elsewhere = add_jobs(session, other.id, [spec])
        changed_model = add_jobs(
            session, batch.id, [JobSpec("p1", "a red fox", 7, "4k", "rev2", parameters={"steps": 4})]
        )
        other_id = add_jobs(session, batch.id, [JobSpec("p2", "a red fox", 7, "4k", "rev1", parameters={"steps": 4})])

    assert first[0].id == first[1].id == again[0].id
    assert other_id[0].id not in (first[0].id, again[1].id, changed_model[0].id)  # another shot of the same prompt
    assert again[1].id != first[0].id
    assert elsewhere[0].id != first[0].id
    assert changed_model[0].id not in (first[0].id, again[1].id)
    ids = [first[0].id, again[1].id, elsewhere[0].id, changed_model[0].id, other_id[0].id]
    assert ids == list(range(ids[0], ids[0] + 5))  # jobs seen again used up no id (PostgreSQL's sequence had skipped)
    with factory() as session:
        assert batch_summary(session, batch.id).counts == {S.pending: 4}
        assert session.get(Job, first[0].id).parameters == {"steps": 4}  # type: ignore[union-attr]


def test_jobs_keyed_by_an_earlier_version_are_found_again(factory: sessionmaker[Session]) -> None:
    """Batches ingested before the prompt id was part of the job key: ingesting their file again adds nothing."""
    spec = JobSpec("p1", "a red fox", 7, "4k", "rev1")
    with factory.begin() as session:
        batch = create_batch(session, name="b", source="prompts.txt", preset="4k")
        old = Job(batch_id=batch.id, prompt_id="p1", prompt="a red fox", seed=7, preset="4k", model_revision="rev1",
                  idempotency_key=spec.key_before_prompt_ids())
        session.add(old)
        session.flush()
        again = add_jobs(session, batch.id, [spec, JobSpec("p2", "a red fox", 7, "4k", "rev1")])
    assert again[0].id == old.id and again[1].id != old.id
    with factory() as session:
        assert batch_summary(session, batch.id).counts == {S.pending: 2}


def test_ensure_batch_returns_the_batch_of_the_same_input(factory: sessionmaker[Session]) -> None:
    with factory.begin() as session:
        first = ensure_batch(session, idempotency_key="k" * 64, name="b", source="prompts.txt", preset="4k")
        again = ensure_batch(session, idempotency_key="k" * 64, name="renamed", source="prompts.txt", preset="4k")
        other = ensure_batch(session, idempotency_key="x" * 64, name="b", source="prompts.txt", preset="4k")

    assert again.id == first.id and again.name == "b"
    assert other.id == first.id + 1  # the input seen again used up no id (PostgreSQL's sequence had skipped one)
    assert (first.status, first.jobs_total, first.created_at.tzinfo is not None) == (BatchStatus.pending, 0, True)


def test_happy_path_records_attempts_artifacts_and_finishes_batch(factory: sessionmaker[Session]) -> None:
    batch_id, [job_id] = _batch_with_jobs(factory, 1)
    job = claim_next_job(factory, batch_id, "gpu-0", lease_seconds=60)
    assert job is not None and job.id == job_id and job.lease_owner == "gpu-0"

    for working, finished, kind in [
        (S.anchoring, S.anchored, ArtifactKind.anchor_latent),
        (S.rendering, S.rendered, ArtifactKind.detail_latent),
        (S.encoding, S.done, ArtifactKind.video),
    ]:
        with factory.begin() as session:
            transition(session, job, working, worker="gpu-0")
            attempt = start_attempt(session, job, working, "gpu-0")
        with factory.begin() as session:
            finish_attempt(session, attempt, AttemptOutcome.succeeded)
            stored = StoredObject(f"s3://bkt/{kind}/{job_id}", f"{kind}/{job_id}", 123, "ab" * 32)
            record_artifact(session, job.id, kind, stored)
            transition(session, job, finished, worker="gpu-0")

    with factory.begin() as session:
        batch = refresh_batch(session, batch_id)
        assert (batch.status, batch.jobs_total, batch.jobs_done) == (BatchStatus.done, 1, 1)
        assert batch.finished_at is not None
        stored_job = session.get(Job, job_id)
        assert stored_job is not None
        assert (stored_job.status, stored_job.attempt_count, stored_job.lease_owner) == (S.done, 3, None)
        attempts = session.scalars(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.id)).all()
        assert [(a.stage, a.outcome) for a in attempts] == [
            (S.anchoring, AttemptOutcome.succeeded),
            (S.rendering, AttemptOutcome.succeeded),
            (S.encoding, AttemptOutcome.succeeded),
        ]
        assert all(a.duration_seconds is not None and a.duration_seconds >= 0 for a in attempts)
        kinds = session.scalars(select(Artifact.kind).where(Artifact.job_id == job_id)).all()
        assert sorted(kinds) == sorted([ArtifactKind.anchor_latent, ArtifactKind.detail_latent, ArtifactKind.video])


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], S.done),
        ([], S.rendering),
        ([S.anchoring], S.rendering),
        ([S.anchoring, S.anchored], S.anchoring),
        ([S.cancelled], S.anchoring),
        ([S.failed], S.anchoring),
    ],
)
def test_illegal_transition_raises_and_changes_nothing(
    factory: sessionmaker[Session], path: list[JobStatus], illegal: JobStatus
) -> None:
    _, [job_id] = _batch_with_jobs(factory, 1)
    job = _job(factory, job_id)
    for status in path:
        with factory.begin() as session:
            transition(session, job, status)

    with factory.begin() as session, pytest.raises(IllegalTransitionError, match=f"-> {illegal}"):
        transition(session, job, illegal)

    assert not is_allowed_transition(job.status, illegal)
    assert _job(factory, job_id).status == (path[-1] if path else S.pending)


def test_transition_from_a_stale_view_raises(factory: sessionmaker[Session]) -> None:
    _, [job_id] = _batch_with_jobs(factory, 1)
    mine, theirs = _job(factory, job_id), _job(factory, job_id)
    with factory.begin() as session:
        transition(session, theirs, S.cancelled)

    with factory.begin() as session, pytest.raises(StaleJobError):
        transition(session, mine, S.anchoring)
    assert _job(factory, job_id).status == S.cancelled


def test_expired_lease_makes_job_claimable_again(factory: sessionmaker[Session]) -> None:
    batch_id, [job_id] = _batch_with_jobs(factory, 1)
    held = claim_next_job(factory, batch_id, "worker-a", lease_seconds=SHORT_LEASE_S)
    assert held is not None
    assert claim_next_job(factory, batch_id, "worker-b", lease_seconds=60) is None  # lease is live

    time.sleep(SHORT_LEASE_S + 0.2)
    taken = claim_next_job(factory, batch_id, "worker-b", lease_seconds=60)

    assert taken is not None and taken.id == job_id and taken.lease_owner == "worker-b"
    with factory.begin() as session, pytest.raises(StaleJobError, match="worker-a lost its lease"):
        heartbeat(session, held, "worker-a", 60)
    with factory.begin() as session, pytest.raises(StaleJobError):
        transition(session, held, S.anchoring, worker="worker-a")
    with factory.begin() as session:
        heartbeat(session, taken, "worker-b", 120)
        transition(session, taken, S.anchoring, worker="worker-b")


def test_crashed_worker_never_strands_its_job(factory: sessionmaker[Session]) -> None:
    batch_id, [job_id] = _batch_with_jobs(factory, 1)
    job = claim_next_job(factory, batch_id, "crashy", lease_seconds=SHORT_LEASE_S)
    assert job is not None
    with factory.begin() as session:
        transition(session, job, S.anchoring, worker="crashy")
        attempt = start_attempt(session, job, S.anchoring, "crashy")
    # ... the worker dies here: no heartbeat, no finish.
    time.sleep(SHORT_LEASE_S + 0.2)

    rescued = claim_next_job(factory, batch_id, "healthy", lease_seconds=60)

    assert rescued is not None and rescued.id == job_id
    assert rescued.status == S.pending and rescued.lease_owner == "healthy"
    assert rescued.last_error == "lease expired during anchoring"
    with factory() as session:
        crashed = session.get(Attempt, attempt.id)
        assert crashed is not None and crashed.outcome == AttemptOutcome.crashed and crashed.finished_at is not None
    with factory.begin() as session, pytest.raises(StaleJobError):
        finish_attempt(session, attempt, AttemptOutcome.succeeded)


@pytest.mark.parametrize(("working", "fallback"), [(S.rendering, S.anchored), (S.encoding, S.rendered)])
def test_requeue_expired_steps_back_one_stage(
    factory: sessionmaker[Session], working: JobStatus, fallback: JobStatus
) -> None:
    batch_id, [job_id] = _batch_with_jobs(factory, 1)
    job = claim_next_job(factory, batch_id, "w", lease_seconds=SHORT_LEASE_S)
    assert job is not None
    chain = [S.anchoring, S.anchored, S.rendering, S.rendered, S.encoding]
    with factory.begin() as session:
        for status in chain[: chain.index(working) + 1]:
            transition(session, job, status, worker="w")
    time.sleep(SHORT_LEASE_S + 0.2)

    with factory.begin() as session:
        assert requeue_expired(session, batch_id) == 1
    requeued = _job(factory, job_id)
    assert (requeued.status, requeued.lease_owner, requeued.lease_expires_at) == (fallback, None, None)


def test_requeue_stopped_respects_max_attempts(factory: sessionmaker[Session]) -> None:
    batch_id, job_ids = _batch_with_jobs(factory, 2)
    for job_id, attempts in zip(job_ids, (1, 3), strict=True):
        job = _job(factory, job_id)
        with factory.begin() as session:
            transition(session, job, S.anchoring)
            for _ in range(attempts):
                attempt = start_attempt(session, job, S.anchoring, "w")
                finish_attempt(session, attempt, AttemptOutcome.failed, error="CUDA out of memory")
            transition(session, job, S.failed, error="CUDA out of memory")

    with factory.begin() as session:
        assert requeue_stopped(session, batch_id, max_attempts=3) == 1
        assert refresh_batch(session, batch_id).status == BatchStatus.running  # work remains
    assert [_job(factory, i).status for i in job_ids] == [S.pending, S.failed]
    assert _job(factory, job_ids[0]).last_error == "CUDA out of memory"



def test_cancel_stops_every_unfinished_job_and_a_requeue_takes_them_up_again(factory: sessionmaker[Session]) -> None:
    batch_id, (done, working, failed, waiting) = _batch_with_jobs(factory, 4)
    with factory.begin() as session:
        job = _job(factory, done)
        for status in (S.anchoring, S.anchored, S.rendering, S.rendered, S.encoding, S.done):
            transition(session, job, status)
        job = _job(factory, failed)
        transition(session, job, S.failed, error="CUDA out of memory")
    held = claim_next_job(factory, batch_id, "worker-a", lease_seconds=60, from_statuses=[S.pending])
    assert held is not None and held.id == working
    with factory.begin() as session:
        transition(session, held, S.anchoring, worker="worker-a")
        running = start_attempt(session, held, S.anchoring, "worker-a")

    with factory.begin() as session:
        assert cancel_jobs(session, batch_id) == 2
        assert refresh_batch(session, batch_id).status == BatchStatus.partial
    cancelled = {i: _job(factory, i) for i in (working, waiting)}
    assert (_job(factory, done).status, _job(factory, failed).status) == (S.done, S.failed)
    assert _job(factory, failed).last_error == "CUDA out of memory"  # a failed job keeps its failure
    assert {(j.status, j.lease_owner, j.last_error) for j in cancelled.values()} == {(S.cancelled, None, CANCELLED_ERROR)}
    with factory() as session:
        attempt = session.get(Attempt, running.id)
        assert (attempt.outcome, attempt.error) == (AttemptOutcome.interrupted, CANCELLED_ERROR)  # had been failed
    with factory.begin() as session, pytest.raises(StaleJobError):  # the worker finds out at its next heartbeat
        heartbeat(session, held, "worker-a", 60)
    assert claim_next_job(factory, batch_id, "worker-b", lease_seconds=60) is None

    with factory.begin() as session:
        assert requeue_stopped(session, batch_id) == 3  # the cancelled and the failed
    assert {(_job(factory, i).status, _job(factory, i).attempt_count) for i in (working, failed, waiting)} == {
        (S.pending, 0)}
    with factory.begin() as session:  # one job alone
        assert cancel_jobs(session, batch_id, job_id=waiting) == 1
        assert cancel_jobs(session, batch_id, job_id=done) == 0
    assert [_job(factory, i).status for i in (done, working, failed, waiting)] == [S.done, S.pending, S.pending,
                                                                                    S.cancelled]


def test_requeue_takes_the_jobs_of_a_gone_worker_also_when_it_had_not_started_them(
    factory: sessionmaker[Session],
) -> None:
    """One job claimed and started (anchoring), one claimed but not started (pending, leased): both held for an
    hour by a worker known to be gone, both claimable at once after the requeue; a live worker's lease is kept."""
    batch_id, (started, claimed, live) = _batch_with_jobs(factory, 3)
    for job_id, owner in ((started, "gone"), (claimed, "gone"), (live, "alive")):
        job = claim_next_job(factory, batch_id, owner, lease_seconds=3600)
        assert job is not None and job.id == job_id
        if job_id == started:
            with factory.begin() as session:
                transition(session, job, S.anchoring, worker="gone")
    assert claim_next_job(factory, batch_id, "worker-b", lease_seconds=60) is None

    with factory.begin() as session:
        assert requeue_expired(session, batch_id, gone_workers=["gone"]) == 1  # the started one steps back
    assert [(j.status, j.lease_owner) for j in map(lambda i: _job(factory, i), (started, claimed, live))] == [
        (S.pending, None), (S.pending, None), (S.pending, "alive")]
    taken = [claim_next_job(factory, batch_id, "worker-b", lease_seconds=60) for _ in range(3)]
    assert [j.id if j else None for j in taken] == [started, claimed, None]

def test_release_hands_the_job_back(factory: sessionmaker[Session]) -> None:
    batch_id, [job_id] = _batch_with_jobs(factory, 1)
    job = claim_next_job(factory, batch_id, "anchor-worker", lease_seconds=60)
    assert job is not None
    with factory.begin() as session:
        transition(session, job, S.anchoring, worker="anchor-worker")
        transition(session, job, S.anchored, worker="anchor-worker")
        release(session, job, "anchor-worker")

    detail = claim_next_job(factory, batch_id, "detail-worker", lease_seconds=60, from_statuses=[S.anchored])

    assert detail is not None and detail.id == job_id and detail.lease_owner == "detail-worker"
    with factory.begin() as session, pytest.raises(StaleJobError):
        release(session, job, "anchor-worker")


def test_record_artifact_replaces_the_kind(factory: sessionmaker[Session]) -> None:
    _, [job_id] = _batch_with_jobs(factory, 1)
    with factory.begin() as session:
        record_artifact(session, job_id, ArtifactKind.video, StoredObject("file:///a.mp4", "a", 1, "a" * 64))
        record_artifact(session, job_id, ArtifactKind.video, StoredObject("file:///b.mp4", "b", 2, "b" * 64))
    with factory() as session:
        rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
        assert [(a.uri, a.size_bytes, a.sha256) for a in rows] == [("file:///b.mp4", 2, "b" * 64)]


@pytest.mark.parametrize(
    ("counts", "status"),
    [
        ({}, BatchStatus.pending),
        ({S.pending: 3}, BatchStatus.pending),
        ({S.pending: 2, S.rendering: 1}, BatchStatus.running),
        ({S.done: 3}, BatchStatus.done),
        ({S.done: 2, S.failed: 1}, BatchStatus.partial),
        ({S.failed: 2, S.cancelled: 1}, BatchStatus.failed),
        ({S.cancelled: 3}, BatchStatus.cancelled),
    ],
)
def test_batch_status_from_job_counts(counts: dict[JobStatus, int], status: BatchStatus) -> None:
    assert BatchSummary(1, counts).status == status


def test_concurrent_workers_claim_each_job_exactly_once(factory: sessionmaker[Session]) -> None:
    batch_id, job_ids = _batch_with_jobs(factory, 40)
    engine = factory.kw["bind"]
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _log(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    claims: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(name: str) -> None:
        start.wait()
        while (job := claim_next_job(factory, batch_id, name, lease_seconds=60)) is not None:
            with lock:
                claims.append((job.id, name))

    threads = [threading.Thread(target=worker, args=(f"worker-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    event.remove(engine, "before_cursor_execute", _log)

    claimed_ids = [job_id for job_id, _ in claims]
    assert sorted(claimed_ids) == sorted(job_ids)
    assert max(Counter(claimed_ids).values()) == 1
    with factory() as session:
        owners = dict(session.execute(select(Job.id, Job.lease_owner).where(Job.batch_id == batch_id)).all())
    assert owners == dict(claims)
    if _dialect(engine) == "postgresql":
        assert any("FOR UPDATE SKIP LOCKED" in s for s in statements)


def _dialect(engine: Engine) -> str:
    return engine.dialect.name


def test_long_batch_name_is_shortened_alike_on_every_backend(factory: sessionmaker[Session]) -> None:
    # A batch name is a display label filled from the prompt file's stem: PostgreSQL would refuse
    # more than its VARCHAR(200) where SQLite stores it whole, so both store the same shortened name.
    with factory.begin() as session:
        created = create_batch(session, name="n" * 250, source="s", preset="4k")
        ensured = ensure_batch(session, idempotency_key="k" * 64, name="\u00e9" * 201, source="s", preset="4k")
        exact = create_batch(session, name="x" * 200, source="s", preset="4k")
    with factory() as session:
        names = dict(session.execute(select(Batch.id, Batch.name)).tuples().all())

    assert names == {created.id: "n" * 199 + "\u2026", ensured.id: "\u00e9" * 199 + "\u2026", exact.id: "x" * 200}


@pytest.mark.parametrize(
    ("field", "limit", "spec"),
    [
        ("prompt id", 200, JobSpec("p" * 201, "a prompt", 1, "4k-fast", "rev1")),
        ("preset", 100, JobSpec("p1", "a prompt", 1, "4" * 101, "rev1")),
        ("model revision", 200, JobSpec("p1", "a prompt", 1, "4k-fast", "r" * 201)),
    ],
)
def test_overlong_job_identifier_is_refused_before_any_job_is_written(
    factory: sessionmaker[Session], field: str, limit: int, spec: JobSpec
) -> None:
    batch_id, [job_id] = _batch_with_jobs(factory, 1)

    with pytest.raises(ValueTooLongError) as caught, factory.begin() as session:
        add_jobs(session, batch_id, [JobSpec("fine", "another prompt", 2, "4k-fast", "rev1"), spec])

    message = str(caught.value)
    assert message.startswith(f"{field} '")
    assert message.endswith(f"is {limit + 1} characters long; the limit is {limit}")
    with factory() as session:
        assert session.scalars(select(Job.id).where(Job.batch_id == batch_id)).all() == [job_id]


@pytest.mark.parametrize(
    ("field", "override"), [("preset", {"preset": "4" * 101}), ("batch idempotency key", {"idempotency_key": "k" * 65})]
)
def test_overlong_batch_identifier_is_refused(
    factory: sessionmaker[Session], field: str, override: dict[str, str]
) -> None:
    fields = {"idempotency_key": "k" * 64, "name": "b", "source": "s", "preset": "4k"} | override

    with pytest.raises(ValueTooLongError, match=f"^{field} '"), factory.begin() as session:
        ensure_batch(session, **fields)

    with factory() as session:
        assert session.scalars(select(Batch)).all() == []


@pytest.mark.parametrize("working", [S.anchoring, S.rendering, S.encoding])
def test_heartbeat_inside_requeue_expired_never_leaves_a_live_lease_with_a_crashed_attempt(
    pg_url: str, pg_admin_engine: Engine, working: JobStatus
) -> None:
    # PostgreSQL runs READ COMMITTED, so a heartbeat on another connection can commit between
    # requeue_expired's statements; here it is sent right after requeue_expired's first UPDATE.
    # Whichever wins, job and attempt agree: requeued with the attempt crashed and the heartbeat
    # refused, or still leased (renewed before requeue_expired reached that job) with the attempt
    # running. SQLite holds its write lock from the first UPDATE to commit: nothing to interleave.
    factory = open_database(pg_url)
    batch_id, [job_id] = _batch_with_jobs(factory, 1)
    job = claim_next_job(factory, batch_id, "w", lease_seconds=60)
    assert job is not None
    chain = [S.anchoring, S.anchored, S.rendering, S.rendered, S.encoding]
    with factory.begin() as session:
        for status in chain[: chain.index(working) + 1]:
            transition(session, job, status, worker="w")
        attempt = start_attempt(session, job, working, "w")
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))

    worker_side = open_database(pg_url, migrate=False)  # the worker's own engine and connection
    renewal: dict[str, Any] = {}

    def renew() -> None:
        try:
            with worker_side.begin() as session:
                renewal["pid"] = session.scalar(text("SELECT pg_backend_pid()"))
                heartbeat(session, session.get(Job, job_id), "w", 60)
            renewal["outcome"] = "renewed"
        except StaleJobError:
            renewal["outcome"] = "refused"

    renewer = threading.Thread(target=renew)

    def heartbeat_now(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        """After the first UPDATE: run the heartbeat until it commits or waits for our lock."""
        if renewer.ident is not None or not statement.lstrip().upper().startswith("UPDATE"):
            return
        renewer.start()
        deadline = time.monotonic() + 30
        while renewer.is_alive() and not _waits_for_a_lock(pg_admin_engine, renewal.get("pid")):
            assert time.monotonic() < deadline, "the heartbeat neither finished nor waited for a lock"
            time.sleep(0.01)

    engine = factory.kw["bind"]
    event.listen(engine, "after_cursor_execute", heartbeat_now)
    try:
        with factory.begin() as session:
            requeued = requeue_expired(session, batch_id)
    finally:
        event.remove(engine, "after_cursor_execute", heartbeat_now)
    renewer.join(timeout=30)

    assert renewer.ident is not None and not renewer.is_alive()
    with factory() as session:
        after = session.get(Job, job_id)
        crashed_or_running = session.get(Attempt, attempt.id).outcome  # type: ignore[union-attr]
    assert after is not None
    if requeued:
        assert (renewal["outcome"], after.status, after.lease_owner, crashed_or_running) == (
            "refused", EXPIRED_LEASE_FALLBACK[working], None, AttemptOutcome.crashed
        )
    else:
        assert (renewal["outcome"], after.status, after.lease_owner, crashed_or_running) == (
            "renewed", working, "w", AttemptOutcome.running
        )
        assert after.lease_expires_at is not None and after.lease_expires_at > utcnow()


def _waits_for_a_lock(admin: Engine, pid: int | None) -> bool:
    """Whether PostgreSQL backend ``pid`` is blocked by another session's lock."""
    if pid is None:
        return False
    with admin.connect() as connection:
        return bool(connection.execute(text("SELECT cardinality(pg_blocking_pids(:pid)) > 0"), {"pid": pid}).scalar())
