"""Status and kind enums shared by the ORM models, the job repository and the latent cache.

Kept free of SQLAlchemy and torch so any layer can import them cheaply. The job status
transition table lives here too, next to the statuses it relates (see ``storage.jobs``).
"""

from enum import StrEnum


class BatchStatus(StrEnum):
    """Lifecycle of a batch, derived from its jobs (see ``storage.jobs.refresh_batch``)."""

    pending = "pending"
    running = "running"
    done = "done"
    partial = "partial"
    failed = "failed"
    cancelled = "cancelled"


class JobStatus(StrEnum):
    """Pipeline stage of a job; ``*ing`` statuses are held under a worker's lease."""

    pending = "pending"
    anchoring = "anchoring"
    anchored = "anchored"
    rendering = "rendering"
    rendered = "rendered"
    encoding = "encoding"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class AttemptOutcome(StrEnum):
    """Result of one worker's try at one stage of a job. ``crashed``: its worker's lease ran out (the process died,
    perhaps of the job). ``interrupted``: stopped by something outside the job (Ctrl-C or SIGTERM, the database
    going away); not counted against the job's limit of tries."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    crashed = "crashed"
    interrupted = "interrupted"


class ArtifactKind(StrEnum):
    """What a stored artifact holds."""

    anchor_latent = "anchor_latent"
    detail_latent = "detail_latent"
    video = "video"
    thumbnail = "thumbnail"


# No worker holds a job in these (its lease is dropped); failed and cancelled jobs are taken up again only by a requeue.
TERMINAL_STATUSES = frozenset({JobStatus.done, JobStatus.failed, JobStatus.cancelled})
WORKING_STATUSES = frozenset({JobStatus.anchoring, JobStatus.rendering, JobStatus.encoding})
READY_STATUSES = frozenset({JobStatus.pending, JobStatus.anchored, JobStatus.rendered})

# Where a working status falls back to when its worker's lease expires.
EXPIRED_LEASE_FALLBACK = {
    JobStatus.anchoring: JobStatus.pending,
    JobStatus.rendering: JobStatus.anchored,
    JobStatus.encoding: JobStatus.rendered,
}

_S = JobStatus
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    _S.pending: frozenset({_S.anchoring, _S.failed, _S.cancelled}),
    _S.anchoring: frozenset({_S.anchored, _S.pending, _S.failed, _S.cancelled}),
    _S.anchored: frozenset({_S.rendering, _S.failed, _S.cancelled}),
    _S.rendering: frozenset({_S.rendered, _S.anchored, _S.failed, _S.cancelled}),
    _S.rendered: frozenset({_S.encoding, _S.failed, _S.cancelled}),
    _S.encoding: frozenset({_S.done, _S.rendered, _S.failed, _S.cancelled}),
    _S.failed: frozenset({_S.pending}),
    _S.done: frozenset({_S.rendered}),  # its video was lost from the store (quarantined as corrupt): encode again
    _S.cancelled: frozenset({_S.pending}),
}
# What an operator's cancel may stop (``storage.jobs.cancel_jobs``), and what a requeue takes up again.
CANCELLABLE_STATUSES = frozenset(s for s, nexts in ALLOWED_TRANSITIONS.items() if _S.cancelled in nexts)
STOPPED_STATUSES = frozenset({_S.failed, _S.cancelled})


def is_allowed_transition(old: JobStatus, new: JobStatus) -> bool:
    """Whether the transition table permits ``old -> new``."""
    return new in ALLOWED_TRANSITIONS[JobStatus(old)]
