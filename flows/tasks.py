"""Prefect tasks: one job's stages. They take and return ids and cache keys, never tensors.

A task tries its stage once: the worker loop (``flows.batch``) retries a failed stage, after a backoff when the
failure is transient, so that every try is one attempt row and counts against the job's limit.
"""

from __future__ import annotations

from prefect import task

from flows import job_work, resources
from flows.stage_runner import run_stage
from storage.models import Job, JobStatus

class ModelMismatchError(RuntimeError):
    """The worker's model is not the one the job was submitted for."""


def _plan(pipe, job: Job, model: str | None) -> job_work.JobPlan:
    if job.model_revision != resources.revision(model):
        raise ModelMismatchError(
            f"job {job.id} was submitted for model revision {job.model_revision}, "
            f"this worker has {resources.revision(model)} ({resources.model_path(model)})"
        )
    return job_work.plan_job(job, str(pipe.transformer.dtype).removeprefix("torch."))


def _stage_inputs(job: Job, model: str | None, device: str | None):
    """The process's pipeline for the job's preset, and the job's plan (keys, seeds, sizes)."""
    pipe = resources.pipeline(model, device, job.preset)
    return pipe, _plan(pipe, job, model)


def _checking(check):
    """A sampler progress callback that stops the stage at the next step once its lease is lost (a cancel)."""
    return lambda _stage, _done, _total: check()


def _batch_cfg(job: Job, device: str | None) -> bool:
    from pixelwizard.devices import resolve_device

    return resources.execution_plan(job.preset, resolve_device(device)).batch_cfg


@task
def anchor_job(job_id: int, worker: str, model: str | None, device: str | None) -> job_work.AnchorOutcome:
    """Anchor stage of one claimed job; whether the anchor was generated, cached, or skipped (the video exists)."""
    cache, factory, settings = resources.cache(), resources.database(), resources.worker_settings()
    outcome: job_work.AnchorOutcome = "cached"

    def work(job: Job, check):
        nonlocal outcome
        pipe, plan = _stage_inputs(job, model, device)
        stored, outcome = job_work.anchor(pipe, cache, job, plan, batch_cfg=_batch_cfg(job, device),
                                          on_progress=_checking(check))
        return stored

    run_stage(factory, job_id, worker, JobStatus.anchoring, work,
              lease_seconds=settings.lease_seconds, heartbeat_seconds=settings.heartbeat_seconds)
    return outcome


@task
def render_job(job_id: int, worker: str, model: str | None, device: str | None) -> str:
    """Detail and encoding stages of one claimed job (whichever remain); returns the video's URI."""
    cache, factory, settings = resources.cache(), resources.database(), resources.worker_settings()
    timing = dict(lease_seconds=settings.lease_seconds, heartbeat_seconds=settings.heartbeat_seconds)

    def detail(job: Job, check):
        pipe, plan = _stage_inputs(job, model, device)
        return job_work.detail(pipe, cache, job, plan, batch_cfg=_batch_cfg(job, device), on_progress=_checking(check))

    def video(job: Job, check):
        pipe, plan = _stage_inputs(job, model, device)
        return job_work.video(pipe, cache, job, plan, on_progress=_checking(check))

    with factory() as session:
        status = session.get(Job, job_id).status
    if status in (JobStatus.anchored, JobStatus.rendering):
        run_stage(factory, job_id, worker, JobStatus.rendering, detail, keep_lease=True, **timing)
    stored = run_stage(factory, job_id, worker, JobStatus.encoding, video, **timing)
    assert stored is not None  # the encoding stage always stores or finds the video
    return stored.uri
