"""``pixelwizard batch|jobs|cache``: batches through the Prefect flows, and their records."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, check_out_folder, check_seed, fail, first_line

T = TypeVar("T")

batch_app = typer.Typer(help="Render prompt files as tracked, resumable batches.", no_args_is_help=True)
jobs_app = typer.Typer(help="Single jobs of a batch.", no_args_is_help=True)
cache_app = typer.Typer(help="The anchor/detail latent and video cache.", no_args_is_help=True)
console = Console(soft_wrap=True)

Workers = Annotated[int, typer.Option(min=1, help="Render workers: threads of this process.")]
Model = Annotated[Optional[str], typer.Option(help="Model bundle folder (default: the embedded tiny model).")]
Device = Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")]
Out = Annotated[Optional[Path], typer.Option(help="Also copy finished videos to OUT/<prompt id>.mp4.")]
PoolWorkers = Annotated[Optional[int], typer.Option(min=1, help="Render workers (default: the deployment's).")]
PoolModel = Annotated[Optional[str], typer.Option(
    help="Model bundle folder on the workers (default: the deployment's, else the embedded tiny model).")]
PoolGpus = Annotated[Optional[int], typer.Option(
    min=1, help="GPU slots per host; worker i gets GPU i mod GPUS (default: the deployment's).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Overrides = Annotated[
    Optional[list[str]], typer.Option("--set", help="Preset field override, e.g. --set detail_steps=8.")
]


ROW_ID_LIMIT = 2**63  # batch and job ids are signed 64-bit in the run database: a larger one names no row


def _quiet_prefect() -> None:
    """Prefect reads these at import: keep its INFO logs and telemetry out of the CLI's output."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _service_errors() -> tuple[type[BaseException], ...]:
    """Failures of the run database or the object store (checked before a flow starts: later, they are not input)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    from storage.errors import DatabaseError, StorageError

    return (DatabaseError, StorageError, OperationalError, InterfaceError)


def _known_errors() -> tuple[type[BaseException], ...]:
    from pixelwizard.bundle import ModelFolderError
    from pixelwizard.devices import DeviceError
    from pixelwizard.presets import PresetError

    return (ModelFolderError, DeviceError, PresetError, *_service_errors(), ValueError, FileNotFoundError)


class _ReportedOnOneLine(logging.Filter):
    """Drops Prefect's error records of a run that raised a known error (its traceback, then its "Finished in state
    Failed" line): the CLI reports that error on one line itself, or the worker loop logs it as a try it will make
    again (a transient error). Any other error keeps Prefect's traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._runs: set[str | None] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        from flows.stage_runner import TRANSIENT_ERRORS, StopRequested  # StopRequested: Ctrl-C, the command exits 130

        run = getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None)
        if record.exc_info and isinstance(record.exc_info[1], (*_known_errors(), *TRANSIENT_ERRORS, StopRequested)):
            self._runs.add(run)
            return False
        return not (record.levelno >= logging.ERROR and run in self._runs)


_REPORTED_ON_ONE_LINE = _ReportedOnOneLine()


def _run_flow(flow_call, batch_hint: int | None = None) -> dict[str, Any]:
    """Run a flow in this process with a progress bar fed from the database; one-line errors."""
    from cli.ephemeral_server import start_watched
    from cli.progress import quiet_libraries

    quiet_libraries()
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_REPORTED_ON_ONE_LINE)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(stop, batch_hint), daemon=True)
    watcher.start()
    try:
        start_watched()
        return flow_call()
    except _service_errors() as exc:  # a service failed while the flow ran (an outage longer than workers wait)
        fail(first_line(exc), EXIT_FAILURE)
    except _known_errors() as exc:
        fail(first_line(exc))
    finally:
        stop.set()
        watcher.join()


def _watch(stop: threading.Event, batch_id: int | None) -> None:
    """Show done/total jobs of the newest (or given) batch until ``stop`` is set."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from sqlalchemy import func, select

    from flows import resources
    from storage.models import Batch, Job, JobStatus

    with Progress(TextColumn("batch {task.fields[batch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), transient=True,
                  console=Console(stderr=True)) as progress:
        task = progress.add_task("starting", total=None, batch="?")
        while not stop.wait(0.5):
            try:
                with resources.database()() as session:
                    current = batch_id or session.scalar(select(func.max(Batch.id)))
                    if current is None:
                        continue
                    rows = dict(session.execute(
                        select(Job.status, func.count()).where(Job.batch_id == current).group_by(Job.status)
                    ).all())
            except Exception:
                continue
            finished = sum(rows.get(s, 0) for s in (JobStatus.done, JobStatus.failed, JobStatus.cancelled))
            working = ", ".join(f"{n} {s}" for s, n in rows.items() if n and s not in (JobStatus.done,))
            progress.update(task, total=sum(rows.values()), completed=finished, batch=current,
                            description=working or "")


def _export(outputs: list[dict[str, Any]], batch_id: int, out: Path) -> tuple[list[str], list[str]]:
    """Copy the batch's finished videos (``outputs``, of its report) to ``out/<prompt id>.mp4``, each verified and
    renamed into place. Returns one line for each that could not be (a corrupt one is quarantined, and ``batch
    resume`` encodes it again), and the names of the files there that held another video (an earlier batch's with the
    same prompt id) and were replaced."""
    from flows import resources
    from flows.summary import video_cache_key
    from storage.models import ArtifactKind

    if outputs:  # the folder is made only once there is something to put there
        out.mkdir(parents=True, exist_ok=True)
    cache = resources.cache()
    problems, replaced = [], []
    for item in outputs:
        key, dest = video_cache_key(item["uri"]), out / f"{item['prompt_id']}.mp4"
        try:
            stored = cache.entry_object(ArtifactKind.video, key)
            if stored is None:  # never quarantined here: gone, or the batch's store is another one
                problems.append(f"the video of {item['prompt_id']} is not in the object store this command uses "
                                f"({cache.payload_uri(ArtifactKind.video, key)}; the batch recorded {item['uri']}): "
                                f"check PIXELWIZARD_STORE_URL, or 'pixelwizard batch resume {batch_id}' "
                                "makes it again")
                continue
            another = _holds_other_bytes(dest, stored.sha256)
            if cache.get_video(key, dest) is None:
                problems.append(f"the video of {item['prompt_id']} is missing or failed its check (quarantined); "
                                f"'pixelwizard batch resume {batch_id}' encodes it again")
            elif another:
                replaced.append(dest.name)
        except _known_errors() as exc:
            problems.append(f"{item['prompt_id']}: {first_line(exc)}")
    return problems, replaced


def _holds_other_bytes(path: Path, sha256: str) -> bool:
    """Whether ``path`` is a file whose SHA-256 is not ``sha256``."""
    if not path.is_file():
        return False
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest() != sha256


def _finish(report: dict[str, Any], as_json: bool, out: Path | None, export_job: int | None = None) -> None:
    _print_report(report, as_json)
    if report.get("earlier_batch"):
        created = report["created_at"][:19].replace("T", " ")
        typer.echo(f"note: batch {report['batch_id']} (from {report['source']}, created {created} UTC) had the same "
                   f"prompts and settings, so this run went on with it; its done videos were not rendered again "
                   f"(`pixelwizard batch resume {report['batch_id']}` retries its failed jobs)", err=True)
    if out is not None:
        outputs = [item for item in report["outputs"] if export_job is None or item["job_id"] == export_job]
        problems, replaced = _export(outputs, report["batch_id"], out)
        if replaced:  # never silently: the earlier batch's videos stay in the store, under their own keys
            shown = ", ".join(replaced[:3]) + (f" and {len(replaced) - 3} more" if len(replaced) > 3 else "")
            typer.echo(f"note: {len(replaced)} file(s) in {out} held another batch's video and were replaced: {shown}",
                       err=True)
        if problems:
            fail(f"{len(problems)} of {len(outputs)} video(s) not copied to {out}: {problems[0]}", EXIT_FAILURE)
    status = report["status"]
    raise typer.Exit(EXIT_OK if status == "done" else EXIT_PARTIAL if status == "partial" else EXIT_FAILURE)


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    counts = ", ".join(f"{n} {s}" for s, n in report["counts"].items() if n)
    console.print(f"batch {report['batch_id']} [bold]{report['status']}[/]: {counts} "
                  f"(preset {report['preset']}, source {report['source']})")
    if "anchors" in report:
        a = report["anchors"]
        console.print(f"anchors this run: {a['generated']} generated, {a['cached']} from the cache"
                      + (f", {a['skipped']} not needed (their video was made earlier)" if a["skipped"] else ""))
    outcomes = ("succeeded", "failed", "crashed", "interrupted")
    stages = Table("stage", *outcomes, "seconds")
    for stage, entry in report["stages"].items():
        stages.add_row(stage, *(str(entry.get(k, 0)) for k in outcomes),
                       f"{entry['seconds']:.1f}")
    console.print(stages)
    console.print(f"wall time {report['wall_seconds']:.1f} s")
    for failure in report["failures"]:
        console.print(f"[red]failed[/] job {failure['job_id']} ({failure['prompt_id']}): {failure['error']}")
    for job in report["cancelled"]:
        console.print(f"cancelled job {job['job_id']} ({job['prompt_id']})")
    if report["cancelled"]:
        console.print(f"'pixelwizard batch resume {report['batch_id']}' runs the cancelled jobs again, "
                      "'pixelwizard jobs retry JOB' one of them")
    if report["stalled"]:
        console.print(f"{report['stalled']} job(s) held by workers that no longer run (killed, or their lease "
                      f"expired): 'pixelwizard batch resume {report['batch_id']}' takes them up")
    for item in report["outputs"]:
        console.print(f"job {item['job_id']} {item['prompt_id']}: {item['uri']}")


@batch_app.command("run")
def run(
    file: Annotated[str, typer.Argument(help="Prompt file: a path or an object-store URI (.txt/.jsonl).")],
    preset: Annotated[str, typer.Option(help="tiny, 2k or 4k.")] = "tiny",
    workers: Workers = 1,
    model: Model = None,
    seed: Annotated[int, typer.Option(help="Base seed for prompts without their own.")] = 0,
    device: Device = None,
    out: Out = Path("out"),
    as_json: AsJson = False,
    override: Overrides = None,
) -> None:
    """Run a batch end to end here: ingest, anchors, render workers, summary."""
    _quiet_prefect()
    from flows.batch import nightly_batch
    from flows.ingestion import read_batch_input

    overrides = _parse_overrides(override or [])
    check_seed(seed)
    _, specs, _ = _check_here(out, device, lambda: read_batch_input(file, preset, model, overrides))
    from cli.prompt_warnings import warn_unread_words_of_bundle
    from flows import resources

    warn_unread_words_of_bundle(resources.model_path(model), specs)
    from cli.device_warnings import warn_if_slow_on_cpu
    from pixelwizard.devices import resolve_device
    from pixelwizard.presets import get_preset

    warn_if_slow_on_cpu(get_preset(preset).with_overrides(**overrides), resolve_device(device))  # both checked above
    report = _run_flow(lambda: nightly_batch(file, preset, workers, model, seed, device, overrides=overrides,
                                             render_on_pool=False))
    _finish(report, as_json, out)


def _check_here(out: Path | None, device: str | None, check_inputs: Callable[[], T]) -> T:
    """Bad input is one line and exit 2 before any flow runs: ``--out``, the device, the worker settings,
    ``check_inputs()`` (whose result is returned), then the run database and the object store (opened here, so that
    one out of reach fails before any job does)."""
    from flows import resources
    from pixelwizard.devices import resolve_device

    if out is not None:
        check_out_folder(out)
    try:
        resolve_device(device)
        resources.worker_settings()
        checked = check_inputs()
        resources.database()
        resources.cache()
    except _known_errors() as exc:
        fail(first_line(exc))
    return checked


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``field=value`` pairs into preset overrides (numbers parsed), one-line errors otherwise."""
    from dataclasses import fields

    from pixelwizard.presets import Preset

    types = {f.name: f.type for f in fields(Preset) if f.name != "name"}
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            fail(f"bad --set {item!r}: use FIELD=VALUE with FIELD one of {', '.join(types)}")
        try:
            overrides[key] = float(value) if types[key] in ("float", float) else int(value)
        except ValueError:
            fail(f"bad --set {item!r}: {value!r} is not a number")
    return overrides


@batch_app.command("submit")
def submit(
    file: Annotated[str, typer.Argument(help="Prompt file URI the workers can read (s3://... or a shared path).")],
    preset: Annotated[Optional[str], typer.Option(help="tiny, 2k or 4k (default: the deployment's).")] = None,
    workers: PoolWorkers = None,
    model: PoolModel = None,
    seed: Annotated[Optional[int], typer.Option(help="Base seed for prompts without their own (default: the "
                                                     "deployment's, else 0).")] = None,
    gpus: PoolGpus = None,
    override: Overrides = None,
    deployment: Annotated[str, typer.Option(help="The nightly deployment.")] = "nightly-batch/nightly-batch",
) -> None:
    """Start the batch on the Prefect server's deployment and print the flow run id. Only the options given are sent:
    the rest are the deployment's (prefect.yaml). The prompt file is read and checked here first, so a missing or
    malformed one is refused now rather than failing on a worker tonight."""
    _quiet_prefect()
    from flows.batch import DEFAULT_PRESET
    from flows.ingestion import FORMATS, prompt_format
    from pixelwizard.prompts import parse_prompts
    from storage.sources import absolute_source, read_source

    overrides = _parse_overrides(override or [])
    if seed is not None:
        check_seed(seed)
    if preset is not None:
        _check_preset(preset, overrides)
    try:
        parse_prompts(read_source(file), file, FORMATS[prompt_format(file)])
    except _known_errors() as exc:
        fail(first_line(exc))
    source = absolute_source(file)  # a path made absolute: the workers run in another folder

    def check(client) -> None:  # the overrides must suit the preset the run will use: the deployment's
        if preset is None and overrides:
            stored = client.read_deployment_by_name(deployment).parameters.get("preset", DEFAULT_PRESET)
            _check_preset(str(stored), overrides, f"the deployment's preset {stored}: ")

    given = {"preset": preset, "model": model, "seed": seed, "workers": workers, "gpus": gpus,
             "overrides": overrides or None}
    _start_deployment(deployment, {"source": source}, given, source, check)


def _start_deployment(deployment: str, parameters: dict[str, Any], given: dict[str, Any], what: str,
                      check: Callable[[Any], None] | None = None) -> None:
    """Start a run of the server's ``deployment`` (FLOW/DEPLOYMENT) with ``parameters`` and the options ``given``
    (those that are not None; the deployment's own values stand for the rest), once ``check`` (given a Prefect
    client) has passed, and print its id. A bad name, no server or no such deployment is a one-line error."""
    from flows.batch import prefect_api_configured

    flow_name, slash, deployment_name = deployment.partition("/")
    if not (flow_name and slash and deployment_name) or "/" in deployment_name:
        fail(f"--deployment must be FLOW/DEPLOYMENT (as 'prefect deployment ls' shows it), got {deployment!r}")
    if not prefect_api_configured():
        fail("no Prefect API configured: set PREFECT_API_URL (see docs/deployment.md)")
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        if check is not None:
            with get_client(sync_client=True) as client:
                check(client)
        parameters = {**parameters, **{name: value for name, value in given.items() if value is not None}}
        run = run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)
    except ObjectNotFound:
        fail(f"no deployment {deployment} on {_api_url()}: deploy it first ('prefect deploy --all', see "
             "docs/deployment.md)", EXIT_FAILURE)
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:  # no server there, or it refused
        fail(f"cannot start {deployment} on {_api_url()}: {first_line(exc)}", EXIT_FAILURE)
    typer.echo(f"submitted flow run {run.id} ({run.name}) of {deployment} for {what}")


def _check_preset(preset: str, overrides: dict[str, Any], context: str = "") -> None:
    """A one-line error (``context`` first) unless ``preset`` exists and takes ``overrides``."""
    from pixelwizard.presets import get_preset

    try:
        get_preset(preset).with_overrides(**overrides)
    except _known_errors() as exc:
        fail(context + first_line(exc))


def _api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


@batch_app.command("status")
def status(batch_id: int, as_json: AsJson = False) -> None:
    """Counts, stage times, failures and outputs of a batch."""
    report = _report(batch_id)
    _print_report(report, as_json)


def _report(batch_id: int) -> dict[str, Any]:
    from flows.summary import batch_report

    return _read_batch(batch_id, lambda session, batch: batch_report(session, batch.id))


def _read_batch(batch_id: int, read: Callable[[Any, Any], T]) -> T:
    """``read(session, batch)`` of the batch ``batch_id`` in the run database; an unknown batch or a database that
    cannot be read is a one-line error."""
    from flows import resources
    from storage.models import Batch

    if not 0 <= batch_id < ROW_ID_LIMIT:
        fail(f"no batch {batch_id}")
    try:
        with resources.database().begin() as session:
            batch = session.get(Batch, batch_id)
            if batch is None:
                fail(f"no batch {batch_id}")
            return read(session, batch)
    except _known_errors() as exc:
        fail(str(exc))


@batch_app.command("list")
def list_batches(as_json: AsJson = False,
                 limit: Annotated[int, typer.Option(min=1, help="How many batches to show.")] = 20) -> None:
    """The newest batches."""
    from sqlalchemy import select

    from flows import resources
    from storage.jobs import refresh_batch
    from storage.models import Batch

    try:
        with resources.database().begin() as session:
            batches = session.scalars(select(Batch).order_by(Batch.id.desc()).limit(limit)).all()
            rows = [refresh_batch(session, b.id) for b in batches]
            data = [{"id": b.id, "name": b.name, "preset": b.preset, "status": str(b.status), "jobs": b.jobs_total,
                     "done": b.jobs_done, "failed": b.jobs_failed, "created": b.created_at.isoformat()} for b in rows]
    except _known_errors() as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(*data[0].keys()) if data else Table("id")
    for row in data:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


@batch_app.command("resume")
def resume(
    batch_id: int, workers: Workers = 1, model: Model = None, device: Device = None, out: Out = Path("out"),
    as_json: AsJson = False,
) -> None:
    """Requeue failed, cancelled and stopped jobs of a batch and run only what is missing."""
    _resume(batch_id, workers, model, device, out, as_json, requeue_stopped_jobs=True)


@batch_app.command("resubmit")
def resubmit(
    batch_id: int,
    workers: PoolWorkers = None,
    model: PoolModel = None,
    gpus: PoolGpus = None,
    deployment: Annotated[str, typer.Option(help="The resume deployment.")] = "resume-batch/resume-batch",
) -> None:
    """Resume a batch on the Prefect server's resume deployment, its render workers on the GPU pool, and print the
    flow run id (`batch resume` does the same in this process). The batch is looked up in this machine's run
    database, which must be the workers' (a run sent to another database's batch of the same id fails at once)."""
    _quiet_prefect()
    from flows.batch import BatchModelError, check_batch_model

    created = _read_batch(batch_id, lambda _, batch: batch.created_at.isoformat())

    def check(client) -> None:  # with no model given or stored, the run would take the embedded one: it must fit
        if model is None and client.read_deployment_by_name(deployment).parameters.get("model") is None:
            try:
                check_batch_model(batch_id, None)
            except BatchModelError as exc:
                fail(f"the deployment has no model: {exc}")

    _start_deployment(deployment, {"batch_id": batch_id, "batch_created": created},
                      {"model": model, "workers": workers, "gpus": gpus}, f"batch {batch_id}", check)


def _resume(batch_id: int, workers: int, model: str | None, device: str | None, out: Path | None, as_json: bool,
            *, requeue_stopped_jobs: bool, once_checked=None, export_job: int | None = None) -> None:
    """Check everything the run needs, call ``once_checked()`` if given (``jobs retry``: requeue its job), run, and
    copy the batch's videos (or only ``export_job``'s) to ``out``."""
    _quiet_prefect()
    from flows.batch import check_batch_model, resume_batch

    _read_batch(batch_id, lambda *_: None)  # fails early on an unknown batch
    _check_here(out, device, lambda: check_batch_model(batch_id, model))
    if once_checked is not None:
        once_checked()
    report = _run_flow(lambda: resume_batch(batch_id, workers, model, device, requeue_stopped_jobs=requeue_stopped_jobs,
                                            render_on_pool=False), batch_hint=batch_id)
    _finish(report, as_json, out, export_job)


@batch_app.command("cancel")
def cancel(batch_id: int) -> None:
    """Cancel every unfinished job of a batch; workers stop them within a heartbeat. `batch resume` takes them up again."""
    from storage.jobs import cancel_jobs

    _read_batch(batch_id, lambda *_: None)  # an unknown batch is a one-line error
    _cancel(lambda session: cancel_jobs(session, batch_id), f"batch {batch_id}")


@jobs_app.command("cancel")
def cancel_job(job_id: int) -> None:
    """Cancel one unfinished job; its worker stops it within a heartbeat. `jobs retry` takes it up again."""
    from storage.jobs import cancel_jobs
    from storage.models import JobStatus

    job = _job(job_id)
    if job.status == JobStatus.done:
        fail(f"job {job_id} is done; only unfinished jobs can be cancelled")
    _cancel(lambda session: cancel_jobs(session, job.batch_id, job_id=job_id), f"job {job_id}")


def _cancel(cancel_in, what: str) -> None:
    from flows import resources

    try:
        with resources.database().begin() as session:
            count = cancel_in(session)
    except _known_errors() as exc:
        fail(first_line(exc))
    typer.echo(f"{what}: {count} job(s) cancelled")


def _job(job_id: int):
    """The job row, or a one-line error if there is none."""
    from flows import resources
    from storage.models import Job

    if not 0 <= job_id < ROW_ID_LIMIT:
        fail(f"no job {job_id}")
    try:
        with resources.database()() as session:
            job = session.get(Job, job_id)
    except _known_errors() as exc:
        fail(first_line(exc))
    if job is None:
        fail(f"no job {job_id}")
    return job


@jobs_app.command("retry")
def retry(job_id: int, run_now: Annotated[bool, typer.Option("--run/--no-run", help="Resume the batch now.")] = True,
          model: Model = None, device: Device = None,
          out: Annotated[Optional[Path], typer.Option(help="Also copy the job's video to OUT/<prompt id>.mp4.")] = Path(
              "out")) -> None:
    """Requeue one failed or cancelled job with a fresh count of attempts and, by default, run it (not the batch's
    other failed jobs) and copy its video to --out."""
    from flows import resources
    from storage.enums import STOPPED_STATUSES
    from storage.jobs import requeue_stopped

    job = _job(job_id)
    if job.status not in STOPPED_STATUSES:
        fail(f"job {job_id} is {job.status}, only failed or cancelled jobs can be retried")
    batch_id = job.batch_id

    def requeue() -> None:
        try:
            with resources.database().begin() as session:
                if not requeue_stopped(session, batch_id, job_id=job_id):
                    fail(f"job {job_id} is no longer failed or cancelled; another command took it")
        except _known_errors() as exc:
            fail(str(exc))
        typer.echo(f"job {job_id} requeued in batch {batch_id}")

    if run_now:  # everything the run needs is checked before the job is touched
        _resume(batch_id, 1, model, device, out, False, requeue_stopped_jobs=False, once_checked=requeue,
                export_job=job_id)
    else:
        requeue()


@cache_app.command("ls")
def cache_ls(prefix: Annotated[str, typer.Argument(help="anchors, details, videos or quarantine.")] = "") -> None:
    """List cached objects with their sizes; an object PixelWizard did not write (no checksum of ours) is flagged."""
    from flows import resources
    from storage.errors import CorruptObjectError
    from storage.latent_cache import CACHE_AREAS

    area = prefix.split("/", 1)[0]
    if area and area not in CACHE_AREAS:
        fail(f"unknown cache area {area!r}; choose {', '.join(CACHE_AREAS)} (or none: all of them)")
    total = 0
    try:
        store = resources.cache().store
        for key in store.list(prefix):
            try:
                size = store.stat(key).size
            except CorruptObjectError:  # put there by hand, say a prompt file under the store's prefix
                typer.echo(f"{'?':>12}  {key}  (not written by PixelWizard: no checksum)")
                continue
            total += size
            typer.echo(f"{size:>12}  {key}")
    except _known_errors() as exc:
        fail(str(exc))
    typer.echo(f"{total:>12}  total")


@cache_app.command("gc")
def cache_gc(
    older_than_days: Annotated[float, typer.Option("--older-than-days", min=0, help="Age limit.")] = 30.0,
    dry_run: Annotated[bool, typer.Option(help="Only list what would go.")] = False,
) -> None:
    """Delete cached latents older than the limit that no unfinished job still needs (videos stay)."""
    from flows.cache_gc import collect_garbage

    try:
        removed, foreign = collect_garbage(older_than_days, dry_run=dry_run)
    except _known_errors() as exc:
        fail(str(exc))
    for key in removed:
        typer.echo(("would remove " if dry_run else "removed ") + key)
    for key in foreign:
        typer.echo(f"kept {key}: not a cache record PixelWizard can read (put there by hand?)")
    typer.echo(f"{len(removed)} object(s) {'to remove' if dry_run else 'removed'}")
