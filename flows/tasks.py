"""Prefect tasks: one job's stages. They take and return ids and cache keys, never tensors.

Transient failures (object store, network, database connection) are retried here with
exponential backoff; anything else is the job's failure, counted against its attempts by the
worker loop.
"""

from __future__ import annotations

from prefect import task
from prefect.tasks import exponential_backoff

from flows import job_work, resources
from flows.stage_runner import run_stage
from storage.errors import DatabaseUnavailableError, StorageError
from storage.models import Job, JobStatus

TRANSIENT = (StorageError, DatabaseUnavailableError, ConnectionError, TimeoutError)


def is_transient(_task, _task_run, state) -> bool:
    """Retry only errors that a second try can fix."""
    return isinstance(state.result(raise_on_failure=False), TRANSIENT)


class ModelMismatchError(RuntimeError):
    """The worker's model is not the one the job was submitted for."""


def _plan(pipe, job: Job, model: str | None) -> job_work.JobPlan:
    if job.model_revision != resources.revision(model):
        raise ModelMismatchError(
            f"job {job.id} was submitted for model revision {job.model_revision}, "
            f"this worker has {resources.revision(model)} ({resources.model_path(model)})"
        )
    return job_work.plan_job(job, str(pipe.transformer.dtype).removeprefix("torch."))


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_condition_fn=is_transient)
def anchor_job(job_id: int, worker: str, model: str | None, device: str | None) -> bool:
    """Anchor stage of one claimed job; True if the anchor was generated, False if it was cached."""
    pipe, cache, factory = resources.pipeline(model, device), resources.cache(), resources.database()
    settings = resources.worker_settings()
    generated = False

    def work(job: Job):
        nonlocal generated
        stored, generated = job_work.anchor(pipe, cache, job, _plan(pipe, job, model))
        return stored

    run_stage(factory, job_id, worker, JobStatus.anchoring, work,
              lease_seconds=settings.lease_seconds, heartbeat_seconds=settings.heartbeat_seconds)
    return generated


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_condition_fn=is_transient)
def render_job(job_id: int, worker: str, model: str | None, device: str | None) -> str:
    """Detail and encoding stages of one claimed job (whichever remain); returns the video's URI."""
    pipe, cache, factory = resources.pipeline(model, device), resources.cache(), resources.database()
    settings = resources.worker_settings()
    timing = dict(lease_seconds=settings.lease_seconds, heartbeat_seconds=settings.heartbeat_seconds)
    with factory() as session:
        status = session.get(Job, job_id).status
    if status in (JobStatus.anchored, JobStatus.rendering):
        run_stage(factory, job_id, worker, JobStatus.rendering,
                  lambda job: job_work.detail(pipe, cache, job, _plan(pipe, job, model)), keep_lease=True, **timing)
    stored = run_stage(factory, job_id, worker, JobStatus.encoding,
                       lambda job: job_work.video(pipe, cache, job, _plan(pipe, job, model)), **timing)
    return stored.uri
