"""The batch flows: ingest, anchors, render worker, nightly batch, resume.

Workers loop claim -> stage -> claim under leases, so any number of them (threads here,
processes or nodes through a Prefect work pool) share one batch and each job is rendered once.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from collections.abc import Callable, Iterable
from typing import Any

from prefect import flow, task
from sqlalchemy import and_, func, or_, select

from flows import resources
from flows.stage_runner import (
    STOPPING, TRANSIENT_ERRORS, give_up_stage, is_outage, outage_too_long, request_stop, retry_delay,
    through_outage,
)
from flows.summary import batch_report
from flows.tasks import anchor_job, render_job
from storage.jobs import claim_next_job
from storage.models import Batch, Job, JobStatus, utcnow

log = logging.getLogger(__name__)

RENDER_DEPLOYMENT = "render-worker/render-worker"
RENDER_POLL_SECONDS = 2.0  # how often the nightly run checks on its render-worker runs
DEFAULT_PRESET = "tiny"  # a batch's preset where neither its caller nor its deployment names one


def _drain(
    batch_id: int,
    worker: str,
    ready: Iterable[JobStatus],
    working: Iterable[JobStatus],
    process: Callable[[int], Any],
) -> list[Any]:
    """Claim and process jobs until none is ready and no other worker still holds one. A failed stage is given up
    (tried again later, or the job failed at its limit); after a transient failure the worker backs off first. While
    the database or the object store is out of reach the loop waits for it, up to the worker settings'
    ``outage_seconds``; then the outage's error ends it."""
    factory, settings = resources.database(), resources.worker_settings()
    ready, working = list(ready), list(working)
    results = []
    transient_in_a_row, outage_since = 0, None

    def busy() -> int:  # jobs another worker (or a claim of ours whose answer was lost) may still move on
        with factory() as session:
            leased = and_(Job.status.in_(ready), Job.lease_expires_at.is_not(None), Job.lease_expires_at >= utcnow())
            return session.scalar(
                select(func.count()).select_from(Job).where(Job.batch_id == batch_id,
                                                            or_(Job.status.in_(working), leased))
            )

    while not STOPPING.is_set():
        job = through_outage(lambda: claim_next_job(factory, batch_id, worker, settings.lease_seconds, ready),
                             settings.outage_seconds)
        if job is None:
            if not through_outage(busy, settings.outage_seconds):
                return results
            time.sleep(settings.poll_seconds)  # another worker's job: wait for it to finish or expire
            continue
        try:
            results.append(process(job.id))
            transient_in_a_row, outage_since = 0, None
        except Exception as exc:
            through_outage(lambda: give_up_stage(factory, job.id, worker, exc, settings.max_attempts),
                           settings.outage_seconds)
            outage_since = (outage_since or time.monotonic()) if is_outage(exc) else None
            if outage_since is not None and time.monotonic() - outage_since > settings.outage_seconds:
                raise outage_too_long(exc, time.monotonic() - outage_since, settings.outage_seconds) from exc
            transient_in_a_row = transient_in_a_row + 1 if isinstance(exc, TRANSIENT_ERRORS) else 0
            STOPPING.wait(retry_delay(exc, transient_in_a_row))  # a stop cuts the backoff short
    return results


@flow(name="ingest")
def ingest(
    source: str,
    preset: str = "tiny",
    model: str | None = None,
    seed: int = 0,
    name: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> int:
    """Read and validate a prompt file (path or object-store URI), then create its batch and jobs.

    Idempotent: the same file, preset, model, seed and overrides give back the same batch.
    """
    from flows.ingestion import create_batch_from_source

    return create_batch_from_source(source, preset, model, seed, name, overrides or {})


@flow(name="anchors")
def anchors(batch_id: int, model: str | None = None, device: str | None = None) -> dict[str, int]:
    """Anchor every pending job of the batch, from the cache or generated (or skipped: its video exists); returns the
    counts."""
    worker = resources.worker_name("anchors")
    results = _drain(
        batch_id, worker, [JobStatus.pending], [JobStatus.anchoring],
        lambda job_id: anchor_job(job_id, worker, model, device),
    )
    return {outcome: results.count(outcome) for outcome in ("generated", "cached", "skipped")}


def _render_loop(batch_id: int, model: str | None, device: str | None, label: str) -> int:
    worker = resources.worker_name(f"render-{label}")
    return len(
        _drain(
            batch_id, worker, [JobStatus.anchored, JobStatus.rendered], [JobStatus.rendering, JobStatus.encoding],
            lambda job_id: render_job(job_id, worker, model, device),
        )
    )


@flow(name="render-worker")
def render_worker(batch_id: int, model: str | None = None, device: str | None = None, label: str = "0",
                  batch_created: str | None = None) -> int:
    """Load the model once, then render claimed jobs until the batch has none left; returns the count.
    ``batch_created`` (the batch's ``created_at``, ISO 8601, as the nightly run sends it) makes sure that this
    worker's run database is the one the batch was made in, not another holding a batch of the same id."""
    _preload(batch_id, model, device, batch_created)
    return _render_loop(batch_id, model, device, label)


class ForeignBatchError(LookupError):
    """A render-worker or resume-batch run was sent a batch that its worker's run database does not hold: the worker
    was configured with another ``PIXELWIZARD_DATABASE_URL`` than the process that made the batch."""


def _preload(batch_id: int, model: str | None, device: str | None, batch_created: str | None = None) -> None:
    """Load the model with the memory plan of the batch's preset, once the batch is known to be this database's."""
    resources.pipeline(model, device, _own_batch_preset(batch_id, batch_created))


def _own_batch_preset(batch_id: int, batch_created: str | None) -> str:
    """The batch's preset, or ForeignBatchError where this run database does not hold the batch that was made at
    ``batch_created`` (a run sent from a process with another ``PIXELWIZARD_DATABASE_URL``)."""
    from storage.database import safe_url

    try:
        created = None if batch_created is None else datetime.fromisoformat(batch_created)
    except ValueError:
        raise ForeignBatchError(f"batch_created {batch_created!r} is not an ISO 8601 time (the batch's created_at)")
    with resources.database()() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or created not in (None, batch.created_at):
            raise ForeignBatchError(
                f"batch {batch_id} {'is not in' if batch is None else 'sent here was made in another database than'} "
                f"this worker's run database {safe_url(session.get_bind().url)}: give the worker the "
                "PIXELWIZARD_DATABASE_URL (and PIXELWIZARD_STORE_URL) of the process that started the batch")
        return batch.preset


render_worker_task = task(name="render-worker-in-process")(_render_loop)


def prefect_api_configured() -> bool:
    """Whether flows talk to a Prefect server (deployments exist) rather than the ephemeral one."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def render_deployment_exists() -> bool:
    """Whether the API knows the render-worker deployment (so the GPU pool can take the work)."""
    if not prefect_api_configured():
        return False
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(RENDER_DEPLOYMENT)
        except ObjectNotFound:
            return False
    return True


def _worker_device(device: str | None) -> str | None:
    """The device a render-worker run is given: its GPU is chosen by CUDA_VISIBLE_DEVICES, so
    only the device type passes (``cuda:3`` -> ``cuda``); None/auto stays automatic."""
    if device is None or device == "auto":
        return None
    return device.split(":", 1)[0]


def _render_here(batch_id: int, workers: int, model: str | None, device: str | None) -> None:
    """Run ``workers`` render workers as threads of this process, until the batch has no job left for them."""
    _preload(batch_id, model, device)  # load once, before the threads share it
    futures = [render_worker_task.submit(batch_id, model, device, str(i)) for i in range(workers)]
    try:
        for future in futures:
            future.result()
    except BaseException:  # Ctrl-C or SIGTERM reaches only this thread: the workers stop at their next step
        request_stop()
        raise


def _fan_out_to_pool(batch_id: int, workers: int, gpus: int, model: str | None, device: str | None) -> None:
    """Create one render-worker deployment run per worker (worker i on GPU i mod ``gpus``), then wait for all of them.

    The runs are created here, in the flow's own thread, so each is linked to this flow run as a
    subflow (cancelling the batch cancels them) and keyed by it (a retry of this flow run finds
    the same runs instead of starting new ones). Run i gets ``CUDA_VISIBLE_DEVICES=i mod gpus``
    as a job variable; the process worker puts it into the run's environment.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run

    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    with resources.database()() as session:
        created = session.get(Batch, batch_id).created_at.isoformat()
    runs = [
        run_deployment(
            RENDER_DEPLOYMENT,
            parameters={"batch_id": batch_id, "model": model, "device": _worker_device(device), "label": str(i),
                        "batch_created": created},
            idempotency_key=f"{flow_run.id}-render-{i}",
            job_variables={"env": {"CUDA_VISIBLE_DEVICES": str(i % gpus)}},
            timeout=0,
        )
        for i in range(workers)
    ]
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(run.id) for run in runs]
            if all(run.state is not None and run.state.is_final() for run in runs):
                break
            time.sleep(RENDER_POLL_SECONDS)
    bad = [f"{run.name} ({run.state.name}: {run.state.message or 'no message'})" for run in runs
           if not run.state.is_completed()]
    if bad:
        log.error("render worker runs did not complete: %s", ", ".join(bad))


def _render_workers(batch_id: int, workers: int, gpus: int, model: str | None, device: str | None,
                    render_on_pool: bool) -> None:
    """Render the batch's anchored jobs: on the GPU pool where asked and the server has the render-worker deployment,
    else in this process."""
    if render_on_pool and render_deployment_exists():
        _fan_out_to_pool(batch_id, workers, gpus, model, device)
    else:
        _render_here(batch_id, workers, model, device)


@flow(name="nightly-batch")
def nightly_batch(
    source: str,
    preset: str = DEFAULT_PRESET,
    workers: int = 1,
    model: str | None = None,
    seed: int = 0,
    device: str | None = None,
    name: str | None = None,
    gpus: int = 1,
    overrides: dict[str, Any] | None = None,
    render_on_pool: bool = True,
) -> dict[str, Any]:
    """Ingest -> anchors -> N render workers -> summary. Failed jobs leave the batch ``partial``.

    ``overrides`` replace preset fields for every job (e.g. ``{"detail_steps": 8}``). The render workers are runs of
    the render-worker deployment where the Prefect server has it, unless ``render_on_pool`` is False (the CLI's
    ``batch run``, which renders where it runs): then, and without a server, they are threads of this process.
    """
    STOPPING.clear()  # an earlier run of this process that was stopped does not stop this one
    started = utcnow()
    batch_id = ingest(source, preset, model, seed, name, overrides)
    anchor_counts = anchors(batch_id, model, device)
    _render_workers(batch_id, workers, gpus, model, device, render_on_pool)
    report = _summary(batch_id, anchor_counts)
    # The same prompts and settings, from this file or another, map to the batch made for them earlier (batches are
    # keyed by content, `flows.ingestion`): the report says so, since that batch's done videos are not rendered again.
    return {**report, "earlier_batch": datetime.fromisoformat(report["created_at"]) < started}


class BatchModelError(ValueError):
    """The model given to resume a batch is not the one its jobs were submitted for."""


def check_batch_model(batch_id: int, model: str | None) -> None:
    """Raise BatchModelError unless every unfinished job of the batch was submitted for ``model``'s revision."""
    with resources.database()() as session:
        revisions = set(session.scalars(
            select(Job.model_revision).where(Job.batch_id == batch_id, Job.status != JobStatus.done).distinct()
        ))
    mine = resources.revision(model)
    if revisions - {mine}:
        raise BatchModelError(
            f"batch {batch_id} was submitted for model revision {sorted(revisions - {mine})[0]}, but "
            f"{resources.model_path(model)} is revision {mine}: pass --model with the batch's model"
        )


@flow(name="resume-batch")
def resume_batch(
    batch_id: int, workers: int = 1, model: str | None = None, device: str | None = None,
    requeue_stopped_jobs: bool = True, gpus: int = 1, render_on_pool: bool = True, batch_created: str | None = None,
) -> dict[str, Any]:
    """Requeue failed and cancelled (unless told not to) jobs, jobs whose lease expired or whose worker on this host is
    gone, and done ones whose video is gone from the store; then run only the stages they are missing. The render
    workers are placed as nightly_batch places them (the CLI's ``batch resume`` renders here; ``batch resubmit``
    runs the resume-batch deployment, whose render workers are render-worker runs on the GPU pool). ``batch_created``
    guards against another database's batch of the same id, as for render_worker."""
    from storage.jobs import requeue_expired, requeue_lost_videos, requeue_stopped

    _own_batch_preset(batch_id, batch_created)  # called for its check: nothing is requeued in another database
    check_batch_model(batch_id, model)
    STOPPING.clear()  # an earlier run of this process that was stopped does not stop this one
    with resources.database().begin() as session:
        requeued = requeue_stopped(session, batch_id) if requeue_stopped_jobs else 0
        requeued += requeue_expired(session, batch_id, gone_workers=_gone_workers(session, batch_id))
        requeued += requeue_lost_videos(session, batch_id, _jobs_without_their_video(session, batch_id))
    log.info("batch %s: %d job(s) requeued", batch_id, requeued)
    anchor_counts = anchors(batch_id, model, device)
    _render_workers(batch_id, workers, gpus, model, device, render_on_pool)
    return _summary(batch_id, anchor_counts)


def _gone_workers(session, batch_id: int) -> list[str]:
    """Holders of the batch's leases that were processes of this host and no longer run (a batch stopped with
    Ctrl-C or killed): a resume takes their jobs at once instead of waiting for the leases to expire."""
    owners = session.scalars(select(Job.lease_owner).where(Job.batch_id == batch_id, Job.lease_owner.is_not(None))
                             .distinct())
    return [owner for owner in owners if resources.worker_is_gone(owner)]


def _jobs_without_their_video(session, batch_id: int) -> list[int]:
    """Done jobs of the batch whose recorded video is no longer in the store (an export quarantined it as corrupt)."""
    from flows.summary import video_cache_key
    from storage.models import Artifact, ArtifactKind

    cache = resources.cache()
    rows = session.execute(
        select(Job.id, Artifact.uri).join(Artifact, Artifact.job_id == Job.id)
        .where(Job.batch_id == batch_id, Job.status == JobStatus.done, Artifact.kind == ArtifactKind.video)
    ).all()
    return [job_id for job_id, uri in rows if cache.entry_object(ArtifactKind.video, video_cache_key(uri)) is None]


def _summary(batch_id: int, anchor_counts: dict[str, int]) -> dict[str, Any]:
    def report() -> dict[str, Any]:
        with resources.database().begin() as session:
            return batch_report(session, batch_id)

    return {**through_outage(report, resources.worker_settings().outage_seconds), "anchors": anchor_counts}
