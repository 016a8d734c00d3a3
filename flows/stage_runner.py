"""Running one stage of one job under a lease: attempt rows, heartbeats, retries, giving up.

A stage moves a job from a ready status to the working status, does the work while a
background thread renews the lease, records the artifact, and moves the job on. A failed stage
falls back to its ready status for another try, until the job has failed that stage
``max_attempts`` times (crashes included, interruptions from outside the job not); then the job is failed with the
error. A transient failure
(store, network, database) waits a backoff before the next try. An outage (the database or the object store not
answering) is not the job's failure: its try is recorded interrupted and not counted, and while the database cannot be
reached the bookkeeping around the stages waits for it (``through_outage``) rather than ending the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.exceptions import TerminationSignal
from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.enums import EXPIRED_LEASE_FALLBACK, TERMINAL_STATUSES
from storage.database import is_connection_error
from storage.errors import DatabaseUnavailableError, StaleJobError, StorageError, StoreUnreachableError
from storage.jobs import (
    close_running_attempts, finish_attempt, heartbeat, record_artifact, release, start_attempt, transition,
)
from storage.models import ArtifactKind, Attempt, AttemptOutcome, Job, JobStatus
from storage.object_store import StoredObject

log = logging.getLogger(__name__)

# working status -> (status before it, status after it, artifact it produces)
STAGES: dict[JobStatus, tuple[JobStatus, JobStatus, ArtifactKind]] = {
    JobStatus.anchoring: (JobStatus.pending, JobStatus.anchored, ArtifactKind.anchor_latent),
    JobStatus.rendering: (JobStatus.anchored, JobStatus.rendered, ArtifactKind.detail_latent),
    JobStatus.encoding: (JobStatus.rendered, JobStatus.done, ArtifactKind.video),
}


STOPPING = threading.Event()  # set when this process stops (Ctrl-C, SIGTERM): its workers stop at their next step


class StopRequested(Exception):
    """This process is stopping: the stage gives its job back instead of finishing it."""


def request_stop() -> None:
    """Make every worker thread of this process stop at its next sampler step and claim nothing more."""
    STOPPING.set()


TRANSIENT_ERRORS = (StorageError, DatabaseUnavailableError, OperationalError, InterfaceError, ConnectionError,
                    TimeoutError)
MAX_BACKOFF_SECONDS = 60.0
MAX_OUTAGE_WAIT_SECONDS = 30.0
T = TypeVar("T")


def retry_delay(error: BaseException, transient_in_a_row: int) -> float:
    """Seconds to wait before trying again after ``error``: 0 unless transient, else 1, 2, 4 ... (capped) for
    the ``transient_in_a_row``-th transient failure in a row (a second try soon after is what fixes those)."""
    if not isinstance(error, TRANSIENT_ERRORS):
        return 0.0
    return min(MAX_BACKOFF_SECONDS, 2.0 ** (transient_in_a_row - 1))


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is a service not answering (the run database, the object store), not a failure of the job."""
    return is_connection_error(exc) or isinstance(exc, StoreUnreachableError)


def through_outage(call: Callable[[], T], outage_seconds: float) -> T:
    """``call()``, called again after 1, 2, 4 ... s (at most 30) while it fails because the database cannot be
    reached (a restart, a failover, a network cut), for up to ``outage_seconds`` in all; then DatabaseUnavailableError.
    A stop of the process ends the wait with StopRequested. ``call`` must be one transaction, safe to run again."""
    started, tries = time.monotonic(), 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            waited = time.monotonic() - started
            if waited >= outage_seconds:
                raise outage_too_long(exc, waited, outage_seconds) from exc
            tries += 1
            delay = min(MAX_OUTAGE_WAIT_SECONDS, 2.0 ** (tries - 1), outage_seconds - waited)
            log.warning("database out of reach (%s); trying again in %.0f s", one_line(exc), delay)
            if STOPPING.wait(delay):
                raise StopRequested("the worker's process is stopping") from exc


def outage_too_long(exc: BaseException, waited: float, limit: float) -> DatabaseUnavailableError | StorageError:
    """The one-line error that ends a worker whose database or object store (``exc``'s) was out of reach for longer
    than it waits."""
    store = isinstance(exc, StoreUnreachableError)
    what = "object store" if store else "database"
    return (StoreUnreachableError if store else DatabaseUnavailableError)(
        f"the {what} was out of reach for {waited:.0f} s, longer than the {limit:g} s a worker waits "
        f"(PIXELWIZARD_OUTAGE_SECONDS): {one_line(getattr(exc, 'orig', None) or exc)}"
    )


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` for the job's last_error and attempt rows."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:2000]


class LeaseKeeper:
    """Renews a job's lease every ``interval`` seconds in a daemon thread while work runs."""

    def __init__(self, factory: sessionmaker[Session], job_id: int, worker: str, lease: float, interval: float):
        self._args = (factory, job_id, worker, lease)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)
        self.lost = False

    def _run(self) -> None:
        factory, job_id, worker, lease = self._args
        while not self._stop.wait(self._interval):
            try:
                with factory.begin() as session:
                    heartbeat(session, session.get(Job, job_id), worker, lease)
            except StaleJobError:
                self.lost = True
                log.warning("worker %s lost its lease on job %s", worker, job_id)
                return
            except Exception as exc:  # a database blip: keep trying until the lease runs out
                log.warning("heartbeat for job %s failed: %s", job_id, one_line(exc))

    def check(self) -> None:
        """Raise StaleJobError once the lease is lost (the job was cancelled, or expired and went to another worker),
        StopRequested once this process stops: work that calls this between its steps ends there."""
        if self.lost:
            raise StaleJobError(f"job {self._args[1]}: lease lost (the job was cancelled or taken over)")
        if STOPPING.is_set():
            raise StopRequested(f"job {self._args[1]}: the worker's process is stopping")

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(
    factory: sessionmaker[Session],
    job_id: int,
    worker: str,
    stage: JobStatus,
    work: Callable[[Job, Callable[[], None]], StoredObject | None],
    *,
    lease_seconds: float,
    heartbeat_seconds: float,
    keep_lease: bool = False,
) -> StoredObject | None:
    """Do ``stage`` of a job leased to ``worker``; the job ends in the stage's next status, with the stage's artifact
    recorded unless ``work`` made none (a latent that a video already in the store makes needless).

    The lease is released afterwards (so any worker can take the next stage) unless
    ``keep_lease``, for a worker that goes straight on to the next stage itself.
    Re-entrant: a job already in ``stage`` under this worker's lease (a task retry) restarts
    the stage. ``work(job, check)`` should call ``check()`` between its steps: it raises once the lease is lost or
    the process stops. Exceptions from ``work`` propagate after the attempt is recorded as failed, or as interrupted
    for an outage (unless a cancel or an expiry closed it first); when the process stops (Ctrl-C, SIGTERM) it is
    recorded as interrupted and the job is handed back to the status before the stage at once.
    """
    _, after, kind = STAGES[stage]
    with factory.begin() as session:
        job = session.get(Job, job_id)
        if not (job.status == stage and job.lease_owner == worker):
            transition(session, job, stage, worker=worker)
        attempt = start_attempt(session, job, stage, worker)
    try:
        with LeaseKeeper(factory, job_id, worker, lease_seconds, heartbeat_seconds) as keeper:
            stored = work(job, keeper.check)
        keeper.check()
    except BaseException as exc:
        # TerminationSignal: SIGTERM where Prefect's handler, not the CLI's, is in place (while a flow runs)
        stopped = isinstance(exc, (StopRequested, KeyboardInterrupt, SystemExit, TerminationSignal))
        outcome = AttemptOutcome.interrupted if stopped or is_outage(exc) else AttemptOutcome.failed
        try:
            with factory.begin() as session:
                if stopped:  # the process is going away: hand the job back now rather than when its lease expires
                    job = session.get(Job, job_id)  # (the job before its attempt: every writer's lock order)
                    transition(session, job, STAGES[stage][0], worker=worker, error=f"worker stopped during {stage}")
                    release(session, job, worker)
                finish_attempt(session, attempt, outcome, error=one_line(exc))
        except StaleJobError:  # already closed, as cancelled or crashed, by whoever took the lease
            pass
        raise
    with factory.begin() as session:
        job = session.get(Job, job_id)
        if stored is not None:
            record_artifact(session, job_id, kind, stored)
        transition(session, job, after, worker=worker)
        finish_attempt(session, attempt, AttemptOutcome.succeeded)
        if not keep_lease and after not in TERMINAL_STATUSES:
            release(session, job, worker)
    return stored


FREE_INTERRUPTIONS = 20  # interrupted tries of a stage that do not count; past them a job whose own stage keeps
# timing out (a part too large for the store's read timeout, say) is not tried for ever


def failed_attempts(session: Session, job: Job, stage: JobStatus) -> int:
    """How many tries at ``stage`` count against the job's limit since it was last requeued: among its latest
    ``attempt_count`` attempts (a requeue of a failed job resets that count), the failed and crashed ones, and the
    interrupted ones past the first ``FREE_INTERRUPTIONS``."""
    latest = (
        select(Attempt.stage, Attempt.outcome).where(Attempt.job_id == job.id)
        .order_by(Attempt.id.desc()).limit(job.attempt_count).subquery()
    )
    counts = dict(session.execute(
        select(latest.c.outcome, func.count()).where(latest.c.stage == stage).group_by(latest.c.outcome)
    ).all())
    return (counts.get(AttemptOutcome.failed, 0) + counts.get(AttemptOutcome.crashed, 0)
            + max(0, counts.get(AttemptOutcome.interrupted, 0) - FREE_INTERRUPTIONS))


def give_up_stage(
    factory: sessionmaker[Session], job_id: int, worker: str, error: BaseException, max_attempts: int
) -> JobStatus:
    """After a stage failed for good in this worker: retry later, or fail the job at the limit. Attempts the failure
    left running (their closing never reached the database) are closed, as interrupted after an outage, and a job
    claimed but not started is released."""
    with factory.begin() as session:
        job = session.get(Job, job_id)
        stage = JobStatus(job.status)
        if job.lease_owner != worker:
            return stage  # the lease went to someone else meanwhile; nothing of ours to undo
        message = one_line(error)
        outcome = AttemptOutcome.interrupted if is_outage(error) else AttemptOutcome.failed
        close_running_attempts(session, job, worker, outcome, message)
        if stage not in STAGES:  # its start never reached the database
            release(session, job, worker)
            return stage
        if failed_attempts(session, job, stage) >= max_attempts:
            transition(session, job, JobStatus.failed, worker=worker, error=message)
            log.error("job %s failed %s %d times; giving up: %s", job_id, stage, max_attempts, message)
            return JobStatus.failed
        transition(session, job, EXPIRED_LEASE_FALLBACK[stage], worker=worker, error=message)
        release(session, job, worker)
        return EXPIRED_LEASE_FALLBACK[stage]
