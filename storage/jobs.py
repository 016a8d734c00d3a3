"""Job repository: batches, idempotent job creation, lease-based claiming and guarded status changes.

Allowed job status transitions (``storage.enums.ALLOWED_TRANSITIONS``); anything else raises
``IllegalTransitionError``::

    pending   -> anchoring | failed | cancelled
    anchoring -> anchored  | pending  (lease expired) | failed | cancelled
    anchored  -> rendering | failed | cancelled
    rendering -> rendered  | anchored (lease expired) | failed | cancelled
    rendered  -> encoding  | failed | cancelled
    encoding  -> done      | rendered (lease expired) | failed | cancelled
    failed    -> pending   (requeue_stopped)
    cancelled -> pending   (requeue_stopped)
    done      -> rendered  (requeue_lost_videos: its video is gone from the store)

``cancel_jobs`` (an operator's cancel) moves any unfinished job to cancelled at once, dropping its
lease: the worker holding it finds its lease gone at its next heartbeat and stops.

Leases: ``claim_next_job`` atomically gives one worker a job in a ready status (pending,
anchored, rendered) whose lease is free or expired -- ``SELECT ... FOR UPDATE SKIP LOCKED``
on PostgreSQL, a conditional ``UPDATE ... WHERE`` with a rowcount check elsewhere (SQLite).
The worker keeps it with ``heartbeat`` and moves it on with ``transition``. When a lease
expires, ``requeue_expired`` (also run by every claim) drops the job's working status back one
step and marks the dead worker's running attempts crashed, so no job is stranded.

Bounded text columns are checked before writing, so SQLite (which would store any length) and
PostgreSQL (which would refuse) behave alike: a batch name, a display label, is shortened to
fit; an identifier (prompt id, preset, model revision, key) that is too long is a one-line
``ValueTooLongError``.

Functions taking a ``Session`` do not commit: wrap them in ``with factory.begin() as s:``.
``claim_next_job`` takes the factory and commits itself. Times are aware UTC from the
caller's clock, so workers' clocks should be roughly in sync (NTP).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Insert, String, Update, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from storage.enums import (
    CANCELLABLE_STATUSES,
    EXPIRED_LEASE_FALLBACK,
    READY_STATUSES,
    STOPPED_STATUSES,
    TERMINAL_STATUSES,
    WORKING_STATUSES,
    is_allowed_transition,
)
from storage.errors import DatabaseError, IllegalTransitionError, StaleJobError, ValueTooLongError
from storage.models import (
    Artifact,
    ArtifactKind,
    Attempt,
    AttemptOutcome,
    Base,
    Batch,
    BatchStatus,
    Job,
    JobStatus,
    utcnow,
)
from storage.object_store import StoredObject

_CHUNK = 500


@dataclass(frozen=True)
class JobSpec:
    """What to render for one prompt; the idempotency key is derived from it."""

    prompt_id: str
    prompt: str
    seed: int
    preset: str
    model_revision: str
    negative_prompt: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def idempotency_key(self) -> str:
        """SHA-256 over prompt id, prompt, seed, preset and model (plus negative prompt and parameter
        overrides, which change the output too); equal keys in one batch are one job, so two ids with
        the same prompt and seed are two jobs (each gets its video; the cache renders it once)."""
        return self._key({"prompt_id": self.prompt_id})

    def key_before_prompt_ids(self) -> str:
        """The key of versions that left the prompt id out, so that a batch they ingested is found again."""
        return self._key({})

    def _key(self, extra: dict[str, str]) -> str:
        document = {
            **extra,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "preset": self.preset,
            "model_revision": self.model_revision,
            "parameters": self.parameters,
        }
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True)
class BatchSummary:
    """Job counts of a batch by status, and the batch status they imply."""

    batch_id: int
    counts: Mapping[JobStatus, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def status(self) -> BatchStatus:
        """done: all done; failed: none done, some failed; cancelled: all cancelled;
        partial: finished with some done and some not; running/pending otherwise."""
        total, done = self.total, self.counts.get(JobStatus.done, 0)
        failed, cancelled = self.counts.get(JobStatus.failed, 0), self.counts.get(JobStatus.cancelled, 0)
        if total == 0 or self.counts.get(JobStatus.pending, 0) == total:
            return BatchStatus.pending
        if done + failed + cancelled < total:
            return BatchStatus.running
        if done == total:
            return BatchStatus.done
        if cancelled == total:
            return BatchStatus.cancelled
        return BatchStatus.partial if done else BatchStatus.failed


def create_batch(session: Session, *, name: str, source: str, preset: str) -> Batch:
    """Insert a pending batch and return it (with its id); a name too long for its column is shortened."""
    batch = Batch(name=_label(name, Batch.name), source=source, preset=_fitting(preset, Batch.preset, "preset"))
    session.add(batch)
    session.flush()
    return batch


def ensure_batch(session: Session, *, idempotency_key: str, name: str, source: str, preset: str) -> Batch:
    """The batch created earlier with this idempotency key (the same input submitted again),
    or a new pending one; safe against concurrent submitters. A name too long for its column
    is shortened. An earlier batch is looked up before the insert, whose conflict would use up a batch id on
    PostgreSQL (a sequence never gives a number back), so that ids run without gaps but for a race."""
    key = select(Batch).where(Batch.idempotency_key == idempotency_key)
    if (earlier := session.scalars(key).first()) is not None:
        return earlier
    row = {
        "idempotency_key": _fitting(idempotency_key, Batch.idempotency_key, "batch idempotency key"),
        "name": _label(name, Batch.name),
        "source": source,
        "preset": _fitting(preset, Batch.preset, "preset"),
        "status": BatchStatus.pending,
        "created_at": utcnow(),
        "jobs_total": 0,
        "jobs_done": 0,
        "jobs_failed": 0,
        "jobs_cancelled": 0,
    }
    session.execute(_insert_ignoring_duplicates(session, Batch, [row], ["idempotency_key"]))
    return session.scalars(key).one()


def add_jobs(session: Session, batch_id: int, specs: Iterable[JobSpec]) -> list[Job]:
    """Add pending jobs to a batch, idempotently: a spec whose idempotency key already exists
    in the batch (or repeats in ``specs``) maps to the existing job. Returns one job per spec.
    Every spec is checked before any is written (``ValueTooLongError`` for an overlong identifier). Jobs that exist
    are looked up before the insert, so that a file ingested again uses up no job ids (see ``ensure_batch``)."""
    specs = list(specs)
    keys = [spec.idempotency_key() for spec in specs]
    jobs = _jobs_ingested_before_prompt_ids(session, batch_id, specs, keys) | _jobs_by_key(session, batch_id, keys)
    now = utcnow()
    rows = {
        key: {
            "batch_id": batch_id,
            "prompt_id": _fitting(spec.prompt_id, Job.prompt_id, "prompt id"),
            "prompt": spec.prompt,
            "negative_prompt": spec.negative_prompt,
            "seed": spec.seed,
            "preset": _fitting(spec.preset, Job.preset, "preset"),
            "model_revision": _fitting(spec.model_revision, Job.model_revision, "model revision"),
            "parameters": dict(spec.parameters),
            "idempotency_key": key,
            "status": JobStatus.pending,
            "attempt_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        for key, spec in zip(keys, specs, strict=True)
        if key not in jobs
    }
    for chunk in _chunks(list(rows.values())):
        session.execute(_insert_ignoring_duplicates(session, Job, chunk, ["batch_id", "idempotency_key"]))
    jobs.update(_jobs_by_key(session, batch_id, list(rows)))
    return [jobs[key] for key in keys]


def _jobs_by_key(session: Session, batch_id: int, keys: list[str]) -> dict[str, Job]:
    """The batch's jobs with these idempotency keys, by key."""
    found: dict[str, Job] = {}
    for chunk in _chunks(sorted(set(keys))):
        stmt = select(Job).where(Job.batch_id == batch_id, Job.idempotency_key.in_(chunk))
        found.update((job.idempotency_key, job) for job in session.scalars(stmt))
    return found


def _jobs_ingested_before_prompt_ids(
    session: Session, batch_id: int, specs: list[JobSpec], keys: list[str]
) -> dict[str, Job]:
    """The batch's jobs that earlier versions keyed without the prompt id, by the key each spec has now."""
    wanted = {(spec.key_before_prompt_ids(), spec.prompt_id): key for spec, key in zip(specs, keys, strict=True)}
    found: dict[str, Job] = {}
    for chunk in _chunks(sorted({old for old, _ in wanted})):
        stmt = select(Job).where(Job.batch_id == batch_id, Job.idempotency_key.in_(chunk))
        for job in session.scalars(stmt):
            if (key := wanted.get((job.idempotency_key, job.prompt_id))) is not None:
                found[key] = job
    return found


def claim_next_job(
    session_factory: sessionmaker[Session],
    batch_id: int,
    worker: str,
    lease_seconds: float,
    from_statuses: Iterable[JobStatus] = READY_STATUSES,
) -> Job | None:
    """Lease the lowest-id claimable job of the batch to ``worker`` and return it, or ``None``.

    Claimable: status in ``from_statuses`` and no lease or an expired one. Expired working
    jobs are requeued first. Each job is handed to exactly one concurrent claimer.
    """
    statuses = [JobStatus(s) for s in from_statuses]
    with session_factory(expire_on_commit=False) as session:
        with session.begin():
            requeue_expired(session, batch_id)
        while True:
            with session.begin():
                now = utcnow()
                claimable = and_(
                    Job.batch_id == batch_id,
                    Job.status.in_(statuses),
                    or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
                )
                expires = now + timedelta(seconds=lease_seconds)
                if session.get_bind().dialect.name == "postgresql":
                    stmt = select(Job).where(claimable).order_by(Job.id).limit(1).with_for_update(skip_locked=True)
                    job = session.scalars(stmt).first()
                    if job is None:
                        return None
                    job.lease_owner, job.lease_expires_at = worker, expires
                    return job
                job_id = session.scalars(select(Job.id).where(claimable).order_by(Job.id).limit(1)).first()
                if job_id is None:
                    return None
                claim = update(Job).where(Job.id == job_id, claimable)
                if _run_update(session, claim.values(lease_owner=worker, lease_expires_at=expires, updated_at=now)):
                    return session.get(Job, job_id, populate_existing=True)
            # Another worker took that job between our SELECT and UPDATE: look again.


def heartbeat(session: Session, job: Job, worker: str, lease_seconds: float) -> None:
    """Extend ``worker``'s lease on ``job``; ``StaleJobError`` if the lease was lost."""
    expires = utcnow() + timedelta(seconds=lease_seconds)
    _guarded_update(session, job, {"lease_expires_at": expires}, Job.lease_owner == worker, f"{worker} lost its lease")


def transition(
    session: Session, job: Job, new_status: JobStatus, *, worker: str | None = None, error: str | None = None
) -> Job:
    """Move ``job`` to ``new_status`` if the table allows it and the job is still in the status
    the caller saw (and leased by ``worker``, if given); terminal statuses drop the lease.

    Raises ``IllegalTransitionError`` for a disallowed change, ``StaleJobError`` if the row
    changed underneath. Updates and returns ``job``.
    """
    old, new = JobStatus(job.status), JobStatus(new_status)
    if not is_allowed_transition(old, new):
        raise IllegalTransitionError(f"job {job.id}: {old} -> {new} is not an allowed status transition")
    values: dict[str, Any] = {"status": new}
    if new in TERMINAL_STATUSES:
        values |= {"lease_owner": None, "lease_expires_at": None}
    if error is not None:
        values["last_error"] = error
    guard = Job.status == old
    if worker is not None:
        guard = and_(guard, Job.lease_owner == worker)
    _guarded_update(session, job, values, guard, f"expected status {old}" + (f" leased by {worker}" if worker else ""))
    return job


def release(session: Session, job: Job, worker: str) -> None:
    """Give up ``worker``'s lease so another worker can claim the job's next stage at once."""
    _guarded_update(
        session,
        job,
        {"lease_owner": None, "lease_expires_at": None},
        Job.lease_owner == worker,
        f"not leased by {worker}",
    )


def requeue_expired(session: Session, batch_id: int | None = None, *, gone_workers: Sequence[str] = ()) -> int:
    """Send jobs whose worker's lease expired, or whose worker is known to be gone (``gone_workers``), back one step
    (anchoring -> pending, rendering -> anchored, encoding -> rendered) and mark those jobs' running attempts crashed.

    The jobs are updated first: on PostgreSQL each UPDATE re-checks the lease of a row a
    heartbeat just renewed (that job keeps its lease and attempt) and keeps the requeued rows
    locked until commit, so no heartbeat can slip in before their attempts are closed. Attempts
    are touched only after their jobs, the lock order every other writer uses.
    """
    now = utcnow()
    requeued: list[int] = []
    for working, fallback in EXPIRED_LEASE_FALLBACK.items():
        expired = (
            update(Job)
            .where(
                Job.status == working,
                or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now, Job.lease_owner.in_(gone_workers)),
                *_in_batch(batch_id),
            )
            .values(
                status=fallback,
                lease_owner=None,
                lease_expires_at=None,
                last_error=f"lease expired during {working}",
                updated_at=now,
            )
            .returning(Job.id)
        )
        requeued += session.execute(expired, execution_options={"synchronize_session": False}).scalars()
    if gone_workers:  # a job a gone worker had claimed but not started, or kept leased between its stages
        _run_update(
            session,
            update(Job).where(Job.status.in_(READY_STATUSES), Job.lease_owner.in_(gone_workers), *_in_batch(batch_id))
            .values(lease_owner=None, lease_expires_at=None, updated_at=now),
        )
    for chunk in _chunks(requeued):
        _run_update(
            session,
            update(Attempt)
            .where(Attempt.job_id.in_(chunk), Attempt.outcome == AttemptOutcome.running)
            .values(outcome=AttemptOutcome.crashed, finished_at=now, error="worker lost its lease before finishing"),
        )
    return len(requeued)


def requeue_stopped(
    session: Session, batch_id: int, *, max_attempts: int | None = None, job_id: int | None = None
) -> int:
    """Move failed and cancelled jobs (or the one ``job_id``) back to pending, those with fewer than ``max_attempts``
    attempts if given. Each starts a fresh count of attempts (its earlier ones stay on record)."""
    conditions = [Job.batch_id == batch_id, Job.status.in_(STOPPED_STATUSES)]
    if max_attempts is not None:
        conditions.append(Job.attempt_count < max_attempts)
    if job_id is not None:
        conditions.append(Job.id == job_id)
    return _run_update(
        session,
        update(Job)
        .where(*conditions)
        .values(status=JobStatus.pending, lease_owner=None, lease_expires_at=None, attempt_count=0, updated_at=utcnow()),
    )


def requeue_lost_videos(session: Session, batch_id: int, job_ids: Sequence[int]) -> int:
    """Send done jobs whose video is gone from the store (quarantined as corrupt, or deleted) back to rendered,
    so that a worker encodes their video again from the cached detail latent (rendered again first where the cache
    no longer holds it)."""
    requeued = 0
    for chunk in _chunks(sorted(job_ids)):
        requeued += _run_update(
            session,
            update(Job).where(Job.batch_id == batch_id, Job.id.in_(chunk), Job.status == JobStatus.done)
            .values(status=JobStatus.rendered, last_error="its video was lost from the store", updated_at=utcnow()),
        )
    return requeued


CANCELLED_ERROR = "cancelled by the operator"


def cancel_jobs(session: Session, batch_id: int, *, job_id: int | None = None) -> int:
    """Cancel the batch's unfinished jobs (or the one ``job_id``): no worker claims them again, the worker holding
    one loses its lease, and their running attempts end interrupted (stopped from outside, so not counted against
    the limit) with ``CANCELLED_ERROR``. Done jobs stay done, and failed ones failed (with their error).

    Jobs first, then their attempts: the lock order of every other writer (see ``requeue_expired``).
    """
    now = utcnow()
    conditions = [Job.batch_id == batch_id, Job.status.in_(CANCELLABLE_STATUSES)]
    if job_id is not None:
        conditions.append(Job.id == job_id)
    cancel = (
        update(Job).where(*conditions)
        .values(status=JobStatus.cancelled, lease_owner=None, lease_expires_at=None, last_error=CANCELLED_ERROR,
                updated_at=now)
        .returning(Job.id)
    )
    cancelled = list(session.execute(cancel, execution_options={"synchronize_session": False}).scalars())
    for chunk in _chunks(cancelled):
        _run_update(
            session,
            update(Attempt)
            .where(Attempt.job_id.in_(chunk), Attempt.outcome == AttemptOutcome.running)
            .values(outcome=AttemptOutcome.interrupted, finished_at=now, error=CANCELLED_ERROR),
        )
    return len(cancelled)


def start_attempt(session: Session, job: Job, stage: JobStatus, worker: str) -> Attempt:
    """Record that ``worker`` starts ``stage`` (a working status) of ``job``; bumps its attempt count."""
    stage = JobStatus(stage)
    if stage not in WORKING_STATUSES:
        raise ValueError(f"attempt stage must be one of {sorted(WORKING_STATUSES)}, not {stage}")
    _guarded_update(session, job, {"attempt_count": Job.attempt_count + 1}, Job.id == job.id, "job vanished")
    attempt = Attempt(job_id=job.id, stage=stage, worker=worker)
    session.add(attempt)
    session.flush()
    return attempt


def finish_attempt(session: Session, attempt: Attempt, outcome: AttemptOutcome, *, error: str | None = None) -> Attempt:
    """Close a running attempt with ``outcome`` (succeeded/failed), its error text and duration.

    ``StaleJobError`` if it is no longer running (e.g. already marked crashed).
    """
    outcome = AttemptOutcome(outcome)
    if outcome is AttemptOutcome.running:
        raise ValueError("finish_attempt needs a final outcome, not running")
    now = utcnow()
    values = {
        "outcome": outcome,
        "finished_at": now,
        "error": error,
        "duration_seconds": (now - attempt.started_at).total_seconds(),
    }
    still_running = update(Attempt).where(Attempt.id == attempt.id, Attempt.outcome == AttemptOutcome.running)
    if _run_update(session, still_running.values(**values)) != 1:
        raise StaleJobError(f"attempt {attempt.id} of job {attempt.job_id} is no longer running")
    for name, value in values.items():
        set_committed_value(attempt, name, value)
    return attempt


def close_running_attempts(session: Session, job: Job, worker: str, outcome: AttemptOutcome, error: str) -> int:
    """Close ``worker``'s attempts on ``job`` that are still running with ``outcome`` and ``error``: those whose own
    closing never reached the database (it went away mid-stage). Returns how many."""
    return _run_update(
        session,
        update(Attempt)
        .where(Attempt.job_id == job.id, Attempt.worker == worker, Attempt.outcome == AttemptOutcome.running)
        .values(outcome=AttemptOutcome(outcome), finished_at=utcnow(), error=error),
    )


def record_artifact(session: Session, job_id: int, kind: ArtifactKind, stored: StoredObject) -> Artifact:
    """Record (or replace) the job's artifact of ``kind`` from a stored object's URI, size and digest."""
    kind = ArtifactKind(kind)
    artifact = session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind)).first()
    if artifact is None:
        artifact = Artifact(job_id=job_id, kind=kind)
        session.add(artifact)
    artifact.uri, artifact.size_bytes, artifact.sha256 = stored.uri, stored.size, stored.sha256
    artifact.created_at = utcnow()
    session.flush()
    return artifact


def batch_summary(session: Session, batch_id: int) -> BatchSummary:
    """Count the batch's jobs by status."""
    rows = session.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)).all()
    return BatchSummary(batch_id, {JobStatus(status): count for status, count in rows})


def refresh_batch(session: Session, batch_id: int) -> Batch:
    """Store the batch's current counts and derived status; stamp ``finished_at`` when it ends."""
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise DatabaseError(f"no batch {batch_id}")
    summary = batch_summary(session, batch_id)
    batch.status = summary.status
    batch.jobs_total = summary.total
    batch.jobs_done = summary.counts.get(JobStatus.done, 0)
    batch.jobs_failed = summary.counts.get(JobStatus.failed, 0)
    batch.jobs_cancelled = summary.counts.get(JobStatus.cancelled, 0)
    finished = summary.status not in (BatchStatus.pending, BatchStatus.running)
    batch.finished_at = (batch.finished_at or utcnow()) if finished else None
    session.flush()
    return batch


def _guarded_update(session: Session, job: Job, values: dict[str, Any], guard: ColumnElement[bool], why: str) -> None:
    """UPDATE the job row only if ``guard`` holds, then mirror the new values onto ``job``."""
    values = values | {"updated_at": utcnow()}
    result = session.execute(
        update(Job).where(Job.id == job.id, guard).values(**values).returning(*(getattr(Job, k) for k in values)),
        execution_options={"synchronize_session": False},
    )
    row = result.first()
    if row is None:
        raise StaleJobError(f"job {job.id} changed underneath: {why}")
    for name, value in zip(values, row, strict=True):
        set_committed_value(job, name, value)


def _fitting(value: str, column: QueryableAttribute[Any], what: str) -> str:
    """``value`` if it fits ``column``'s VARCHAR length; an identifier is never cut, so a longer
    one is a ``ValueTooLongError`` (PostgreSQL would refuse it, SQLite would store it whole)."""
    limit = cast(String, column.type).length
    if limit is not None and len(value) > limit:
        raise ValueTooLongError(f"{what} {value[:40]!r}... is {len(value)} characters long; the limit is {limit}")
    return value


def _label(value: str, column: QueryableAttribute[Any]) -> str:
    """A display label shortened to ``column``'s VARCHAR length (ending in an ellipsis), so every
    backend stores the same text."""
    limit = cast(String, column.type).length
    return value if limit is None or len(value) <= limit else value[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _run_update(session: Session, stmt: Update) -> int:
    """Execute a bulk UPDATE (no ORM session sync) and return how many rows it changed."""
    result = session.execute(stmt, execution_options={"synchronize_session": False})
    return cast(CursorResult[Any], result).rowcount


def _in_batch(batch_id: int | None) -> Sequence[ColumnElement[bool]]:
    return [] if batch_id is None else [Job.batch_id == batch_id]


def _insert_ignoring_duplicates(
    session: Session, model: type[Base], rows: list[dict[str, Any]], unique_columns: list[str]
) -> Insert:
    """INSERT of ``rows`` that skips rows clashing with an existing row on ``unique_columns``."""
    dialect = session.get_bind().dialect.name
    module = {"postgresql": postgresql, "sqlite": sqlite}.get(dialect)
    if module is None:
        raise DatabaseError(f"unsupported database backend {dialect!r} (use SQLite or PostgreSQL)")
    return module.insert(model).values(rows).on_conflict_do_nothing(index_elements=unique_columns)


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
