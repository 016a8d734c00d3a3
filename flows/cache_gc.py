"""Garbage collection of cached latents: old entries that no unfinished job still needs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from flows import resources
from storage.enums import JobStatus
from storage.errors import CorruptObjectError
from storage.models import Artifact, Job

LATENT_PREFIXES = ("anchors/", "details/")
FINISHED = (JobStatus.done,)  # failed and cancelled jobs are not finished: resume and retry requeue them


def collect_garbage(older_than_days: float, *, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Remove (or with ``dry_run`` only list) latent entries older than the limit; returns their keys, and the keys
    of records under the latent prefixes that PixelWizard did not write (kept, and named, rather than stopping).

    Videos are outputs and are never collected; entries referenced by a job that is not done (failed and
    cancelled ones included) are kept whatever their age, so a resume never loses work.
    """
    store = resources.cache().store
    with resources.database()() as session:
        needed = set(
            session.scalars(
                select(Artifact.uri).join(Job, Job.id == Artifact.job_id).where(Job.status.not_in(FINISHED))
            )
        )
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    removed: list[str] = []
    foreign: list[str] = []
    for prefix in LATENT_PREFIXES:
        for record_key in [k for k in store.list(prefix) if k.endswith(".json")]:
            try:
                record = json.loads(store.get_bytes(record_key))
                payload_key, created = record["object"]["key"], datetime.fromisoformat(record["created_at"])
            except (CorruptObjectError, ValueError, KeyError, TypeError):  # no checksum of ours, or not our record
                foreign.append(record_key)
                continue
            if created >= cutoff or store.uri(payload_key) in needed:
                continue
            if not dry_run:
                store.delete(payload_key)
                store.delete(record_key)
            removed += [payload_key, record_key]
    return removed, foreign
