"""A batch's report from the database: counts, failures, stage times and output URIs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.jobs import batch_summary, refresh_batch
from flows.resources import worker_is_gone
from storage.enums import WORKING_STATUSES
from storage.models import Artifact, ArtifactKind, Attempt, AttemptOutcome, Job, JobStatus, utcnow


def video_cache_key(uri: str) -> str:
    """The latent-cache key of a stored video from its URI (``.../videos/<key>.mp4``, local or S3)."""
    return uri.rsplit("/videos/", 1)[-1].removesuffix(".mp4")


def _holder_gone(job: Job) -> bool:
    """Whether the worker that holds a working job no longer runs: its lease expired, or it was a process of this
    host that is gone (killed, or stopped before it could hand the job back)."""
    expired = job.lease_expires_at is None or job.lease_expires_at < utcnow()
    return expired or job.lease_owner is None or worker_is_gone(job.lease_owner)


def batch_report(session: Session, batch_id: int) -> dict[str, Any]:
    """Everything an operator reads in the morning, as plain JSON-able values."""
    batch = refresh_batch(session, batch_id)
    counts = batch_summary(session, batch_id).counts
    jobs = session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.id)).all()
    videos = dict(
        session.execute(
            select(Artifact.job_id, Artifact.uri)
            .join(Job, Job.id == Artifact.job_id)
            .where(Job.batch_id == batch_id, Artifact.kind == ArtifactKind.video)
        ).all()
    )
    stage_rows = session.execute(
        select(Attempt.stage, Attempt.outcome, func.count(), func.coalesce(func.sum(Attempt.duration_seconds), 0.0))
        .join(Job, Job.id == Attempt.job_id)
        .where(Job.batch_id == batch_id)
        .group_by(Attempt.stage, Attempt.outcome)
    ).all()
    stages: dict[str, dict[str, float]] = {}
    for stage, outcome, count, seconds in stage_rows:
        entry = stages.setdefault(str(stage), {"seconds": 0.0})
        entry[str(outcome)] = int(count)
        if outcome == AttemptOutcome.succeeded:
            entry["seconds"] = round(float(seconds), 3)
    first, last = session.execute(
        select(func.min(Attempt.started_at), func.max(Attempt.finished_at))
        .join(Job, Job.id == Attempt.job_id)
        .where(Job.batch_id == batch_id)
    ).one()
    return {
        "batch_id": batch.id,
        "name": batch.name,
        "source": batch.source,
        "preset": batch.preset,
        "created_at": batch.created_at.isoformat(),
        "status": str(batch.status),
        "counts": {str(status): counts.get(status, 0) for status in JobStatus},
        "total": len(jobs),
        "stages": stages,
        "wall_seconds": round((last - first).total_seconds(), 3) if first and last else 0.0,
        "stalled": sum(1 for j in jobs if j.status in WORKING_STATUSES and _holder_gone(j)),
        "failures": [
            {"job_id": j.id, "prompt_id": j.prompt_id, "error": j.last_error}
            for j in jobs
            if j.status == JobStatus.failed
        ],
        "cancelled": [{"job_id": j.id, "prompt_id": j.prompt_id} for j in jobs if j.status == JobStatus.cancelled],
        "outputs": [{"job_id": j.id, "prompt_id": j.prompt_id, "uri": videos[j.id]} for j in jobs if j.id in videos],
    }
