"""Batch flows with real Prefect (one ephemeral server for the module), real processes and signals.

Renders use a tiny random model and small preset overrides so a job takes a second or two.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import func, select

from flows import job_work, resources, unsaved
from flows.batch import anchors, ingest, nightly_batch, resume_batch
from pixelwizard.bundle import write_bundle
from pixelwizard.default_model import build_tiny_pipeline
from pixelwizard.pipeline import PixelWizardPipeline
from pixelwizard.video import read_video
from storage.database import open_database
from storage.errors import StorageError
from storage.models import Artifact, ArtifactKind, Attempt, AttemptOutcome, Batch, Job, JobStatus

REPO = Path(__file__).resolve().parents[1]
SMALL = {"num_frames": 5, "anchor_width": 64, "anchor_height": 32, "anchor_steps": 3,
         "detail_width": 128, "detail_height": 64}
PROMPTS = [
    "a red circle moves right",
    "a blue square bounces",
    "a green triangle spins",
    "a yellow star orbits the center",
]


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(write_bundle(build_tiny_pipeline(seed=3), tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture
def env(tmp_path, monkeypatch, request):
    """A fresh data directory and database for the flows of this test (SQLite unless asked)."""
    url = request.getfixturevalue("pg_url") if "postgres" in request.keywords else f"sqlite:///{tmp_path}/pw.db"
    monkeypatch.setenv("PIXELWIZARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIXELWIZARD_DATABASE_URL", url)
    monkeypatch.setenv("PIXELWIZARD_LEASE_SECONDS", "5")
    for cached in (resources.database, resources.cache):
        cached.cache_clear()
    # Child processes use the module's Prefect server rather than each starting its own.
    yield {**os.environ, "PYTHONUNBUFFERED": "1", "PREFECT_API_URL": PREFECT_API_URL.value()}
    for cached in (resources.database, resources.cache):
        cached.cache_clear()


def write_prompts(path: Path, prompts=PROMPTS) -> Path:
    path.write_text("".join(f"{p}\n" for p in prompts))
    return path


def jobs_of(batch_id: int) -> list[Job]:
    with resources.database()() as session:
        return session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.id)).all()


def attempts_of(batch_id: int) -> list[Attempt]:
    with resources.database()() as session:
        return session.scalars(
            select(Attempt).join(Job, Job.id == Attempt.job_id).where(Job.batch_id == batch_id).order_by(Attempt.id)
        ).all()


def test_nightly_batch_of_four_prompts_renders_four_videos_with_consistent_records(env, model, tmp_path):
    source = write_prompts(tmp_path / "nightly.txt")
    report = nightly_batch(str(source), "tiny", workers=2, model=model, overrides=SMALL)

    assert report["status"] == "done" and report["total"] == 4
    assert report["counts"]["done"] == 4 and report["failures"] == []
    assert report["anchors"] == {"generated": 4, "cached": 0, "skipped": 0}
    assert {s: report["stages"][s]["succeeded"] for s in ("anchoring", "rendering", "encoding")} == {
        "anchoring": 4, "rendering": 4, "encoding": 4}
    jobs = jobs_of(report["batch_id"])
    assert sorted(j.prompt for j in jobs) == sorted(PROMPTS)
    with resources.database()() as session:
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id.in_([j.id for j in jobs]))).all()
    assert len(artifacts) == 12  # anchor latent, detail latent, video for each job
    for artifact in artifacts:
        path = Path(artifact.uri.removeprefix("file://"))
        assert path.stat().st_size == artifact.size_bytes
    videos = [a for a in artifacts if a.kind == ArtifactKind.video]
    assert {o["uri"] for o in report["outputs"]} == {a.uri for a in videos}
    for video in videos:
        assert read_video(video.uri.removeprefix("file://")).shape == (5, 64, 128, 3)
    # Ingesting the same file again creates nothing new, and a second run renders nothing again.
    again = nightly_batch(str(source), "tiny", workers=1, model=model, overrides=SMALL)
    assert again["batch_id"] == report["batch_id"]
    assert again["anchors"] == {"generated": 0, "cached": 0, "skipped": 0}
    assert (report["earlier_batch"], again["earlier_batch"]) == (False, True)  # the CLI's note comes from it
    assert len(attempts_of(report["batch_id"])) == 12
    with resources.database()() as session:
        assert session.scalar(select(func.count()).select_from(Batch)) == 1

    # The operator's read-only commands see the same batch.
    status = cli_json(env, "batch", "status", str(report["batch_id"]))
    assert status["status"] == "done" and status["outputs"] == report["outputs"]
    [listed] = cli_json(env, "batch", "list")
    assert (listed["id"], listed["status"], listed["jobs"], listed["done"]) == (report["batch_id"], "done", 4, 4)
    listing = subprocess.run([sys.executable, "-m", "cli", "cache", "ls", "anchors"], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and listing.stdout.count("anchors/") == 8  # 4 latents + 4 records
    (resources.cache().store.root / "anchors" / "notes.txt").write_text("put here by hand")  # no checksum of ours
    listing = subprocess.run([sys.executable, "-m", "cli", "cache", "ls"], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and listing.stdout.count("anchors/") == 9, listing.stderr
    assert "           ?  anchors/notes.txt  (not written by PixelWizard: no checksum)\n" in listing.stdout

    # Garbage collection removes finished jobs' latents past the age limit, never the videos, and keeps (and names)
    # what it did not write: a JSON file among its records had stopped it with exit 2.
    store = resources.cache().store
    (store.root / "anchors" / "handmade.json").write_text("{}")
    gc = subprocess.run([sys.executable, "-m", "cli", "cache", "gc", "--older-than-days", "0"], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr
    assert "kept anchors/handmade.json: not a cache record PixelWizard can read (put there by hand?)\n" in gc.stdout
    assert gc.stdout.endswith("16 object(s) removed\n"), gc.stdout  # 4 jobs x (anchor, detail) x (payload, record)
    assert list(store.list("anchors/")) == ["anchors/handmade.json", "anchors/notes.txt"]  # not its own
    assert list(store.list("details/")) == []

    assert len([k for k in store.list("videos/") if k.endswith(".mp4")]) == 4

    # A later batch holding one of these prompts (same settings) finds its video: it makes no latent for it again
    # (after gc it had rendered both again, only to find the video cached). The new prompt is made in full.
    edited = write_prompts(tmp_path / "edited.txt", [PROMPTS[0], "a green ring orbits"])
    later = nightly_batch(str(edited), "tiny", workers=1, model=model, overrides=SMALL)
    assert later["status"] == "done" and later["batch_id"] != report["batch_id"]
    assert later["anchors"] == {"generated": 1, "cached": 0, "skipped": 1}
    [old_video] = [o["uri"] for o in report["outputs"] if o["prompt_id"] == later["outputs"][0]["prompt_id"]]
    assert later["outputs"][0]["uri"] == old_video
    assert len([k for k in store.list("anchors/") if k.endswith(".safetensors")]) == 1  # the new prompt's
    assert len([k for k in store.list("details/") if k.endswith(".safetensors")]) == 1
    with resources.database()() as session:
        kinds = session.scalars(select(Artifact.kind).where(Artifact.job_id == later["outputs"][0]["job_id"])).all()
    assert kinds == [ArtifactKind.video]


def test_opening_the_cache_sweeps_the_temporary_folders_that_killed_workers_left(env, tmp_path, monkeypatch):
    """A worker killed while it encoded a video left its folder (the finished MP4 inside) in the system's temporary
    folder for good; now the next worker on the host removes it once a day old, and nothing else."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    day_old = time.time() - 25 * 3600
    names = ["pixelwizard-video-k1a2_b3c", "pixelwizard-cache-0z9y8x7w", "pixelwizard-video-fresh123",
             "pixelwizard-video-not-ours", "someone-elses-folder", "pixelwizard-video-otheruse"]
    for name in names:
        (tmp_path / "tmp" / name).mkdir()
        (tmp_path / "tmp" / name / "a.mp4").write_bytes(b"video")
        if name != "pixelwizard-video-fresh123":
            os.utime(tmp_path / "tmp" / name, (day_old, day_old))
    as_root = os.geteuid() == 0  # only root can give it to another user: another user's, in a shared /tmp, is theirs
    if as_root:                 # to sweep (root could remove it; another user would get a PermissionError)
        os.chown(tmp_path / "tmp" / "pixelwizard-video-otheruse", 4321, 4321)
    resources.cache.cache_clear()
    resources.cache()
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == sorted(names[2:] if as_root else names[2:5])


def cli_json(env, *args):
    result = subprocess.run([sys.executable, "-m", "cli", *args, "--json"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_job_that_always_fails_is_retried_to_the_limit_and_the_batch_ends_partial(
    env, model, tmp_path, monkeypatch
):
    """Fault injection (a mock, no real part fails on demand): one prompt's detail stage raises."""
    monkeypatch.setenv("PIXELWIZARD_MAX_ATTEMPTS", "3")
    real_detail = job_work.detail

    def flaky(pipe, cache, job, plan, **kwargs):
        if "blue" in job.prompt:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_detail(pipe, cache, job, plan, **kwargs)

    monkeypatch.setattr(job_work, "detail", flaky)
    source = write_prompts(tmp_path / "p.txt", PROMPTS[:3])
    report = nightly_batch(str(source), "tiny", model=model, overrides=SMALL)

    assert report["status"] == "partial"
    assert report["counts"]["done"] == 2 and report["counts"]["failed"] == 1
    [failure] = report["failures"]
    assert "illegal memory access" in failure["error"]
    blue = next(j for j in jobs_of(report["batch_id"]) if "blue" in j.prompt)
    tries = [a for a in attempts_of(report["batch_id"]) if a.job_id == blue.id and a.stage == JobStatus.rendering]
    assert [a.outcome for a in tries] == [AttemptOutcome.failed] * 3
    assert all("illegal memory access" in a.error for a in tries)

    # Once the fault is gone, `jobs retry` requeues the job and a resume finishes it alone.
    monkeypatch.setattr(job_work, "detail", real_detail)
    retried = subprocess.run([sys.executable, "-m", "cli", "jobs", "retry", str(blue.id), "--no-run"], env=env,
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert retried.returncode == 0, retried.stderr
    assert next(j for j in jobs_of(report["batch_id"]) if j.id == blue.id).status == JobStatus.pending
    resumed = resume_batch(report["batch_id"], model=model)
    assert resumed["status"] == "done" and resumed["anchors"] == {"generated": 0, "cached": 1, "skipped": 0}
    renders = [a for a in attempts_of(report["batch_id"]) if a.stage == JobStatus.rendering]
    assert len(renders) == 2 + 3 + 1  # the two good jobs once, the bad one 3 failed + 1 good


def test_jobs_retry_runs_only_that_job_with_a_fresh_count_of_attempts(env, model, tmp_path, monkeypatch):
    """Fault injection (a mock, no real part fails on demand): two prompts' detail stages raise; one keeps failing."""
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("PIXELWIZARD_MAX_ATTEMPTS", "2")
    real_detail = job_work.detail
    broken = {"blue", "green"}

    def flaky(pipe, cache, job, plan, **kwargs):
        if any(word in job.prompt for word in broken):
            raise RuntimeError("CUDA error: out of memory")
        return real_detail(pipe, cache, job, plan, **kwargs)

    monkeypatch.setattr(job_work, "detail", flaky)
    report = nightly_batch(str(write_prompts(tmp_path / "p.txt", PROMPTS[:3])), "tiny", model=model, overrides=SMALL)
    blue, green = (next(j for j in jobs_of(report["batch_id"]) if w in j.prompt) for w in ("blue", "green"))
    assert (blue.status, green.status) == (JobStatus.failed, JobStatus.failed)

    broken.discard("green")  # green would now render, but only blue is retried
    monkeypatch.chdir(tmp_path)  # the retry copies the job's video to ./out
    wrong = CliRunner().invoke(app, ["jobs", "retry", str(blue.id)])  # the embedded model, not the batch's
    assert wrong.exit_code == 2 and "pass --model" in wrong.stderr, wrong.output
    assert next(j for j in jobs_of(report["batch_id"]) if j.id == blue.id).status == JobStatus.failed  # untouched
    result = CliRunner().invoke(app, ["jobs", "retry", str(blue.id), "--model", model])

    assert result.exit_code == 3, result.output  # the batch stays partial
    statuses = {j.id: j.status for j in jobs_of(report["batch_id"])}
    assert (statuses[blue.id], statuses[green.id]) == (JobStatus.failed, JobStatus.failed)
    tries = [a.job_id for a in attempts_of(report["batch_id"]) if a.stage == JobStatus.rendering]
    assert tries.count(blue.id) == 2 + 2 and tries.count(green.id) == 2  # blue: two more tries, green: none
    assert not (tmp_path / "out").exists()  # nothing of the job's to copy: no folder made

    broken.discard("blue")  # fixed: the retry renders blue, and copies its video alone (the red one is done too)
    result = CliRunner().invoke(app, ["jobs", "retry", str(blue.id), "--model", model, "--out", "retried"])
    assert result.exit_code == 3, result.output  # green still failed
    assert sorted(p.name for p in (tmp_path / "retried").iterdir()) == [f"{blue.prompt_id}.mp4"]


def test_resume_of_a_job_that_failed_encoding_reuses_its_latents_and_needs_the_batch_model(env, model, tmp_path,
                                                                                        monkeypatch):
    """Fault injection (a mock, no real part fails on demand): one prompt's encoding raises until fixed."""
    real_video = job_work.video

    def flaky(pipe, cache, job, plan, **kwargs):
        if "blue" in job.prompt:
            raise RuntimeError("disk full")
        return real_video(pipe, cache, job, plan, **kwargs)

    monkeypatch.setattr(job_work, "video", flaky)
    report = nightly_batch(str(write_prompts(tmp_path / "p.txt", PROMPTS[:2])), "tiny", model=model, overrides=SMALL)
    blue = next(j for j in jobs_of(report["batch_id"]) if "blue" in j.prompt)
    assert report["status"] == "partial" and blue.status == JobStatus.failed

    # Garbage collection keeps what a resume of the failed job needs.
    gc = subprocess.run([sys.executable, "-m", "cli", "cache", "gc", "--older-than-days", "0"], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr
    store = resources.cache().store
    with resources.database()() as session:
        kept = {a.uri for a in session.scalars(select(Artifact).where(Artifact.job_id == blue.id))}
    assert len(kept) == 2 and all(store.exists(uri.split("/store/", 1)[1]) for uri in kept)

    # Resuming with another model (here the embedded one) is a one-line error that requeues nothing.
    wrong = subprocess.run([sys.executable, "-m", "cli", "batch", "resume", str(report["batch_id"])], env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "pass --model" in wrong.stderr
    assert len([line for line in wrong.stderr.splitlines() if line.strip()]) == 1, wrong.stderr
    assert next(j for j in jobs_of(report["batch_id"]) if j.id == blue.id).status == JobStatus.failed

    monkeypatch.setattr(job_work, "video", real_video)
    renders = []  # a spy: the real render_detail, counted
    real_render = PixelWizardPipeline.render_detail
    monkeypatch.setattr(PixelWizardPipeline, "render_detail",
                        lambda self, *args, **kwargs: renders.append(args[1]) or real_render(self, *args, **kwargs))
    resumed = resume_batch(report["batch_id"], model=model)
    assert resumed["status"] == "done" and renders == []  # the detail latent from before the failure was reused



def test_a_store_failing_its_puts_costs_no_render_again_and_no_try_beyond_the_limit(env, model, tmp_path, monkeypatch):
    """A real store failure: a file where the store's details/ folder goes makes every detail put fail (a transient
    StorageError). The stage is tried exactly PIXELWIZARD_MAX_ATTEMPTS times and the detail latent is rendered once;
    when the store works again, a resume in this process stores the kept latent without rendering it again."""
    monkeypatch.setenv("PIXELWIZARD_MAX_ATTEMPTS", "2")
    blocker = resources.cache().store.root / "details"
    blocker.write_text("not a folder")
    renders = []  # a spy: the real render_detail, counted
    real_render = PixelWizardPipeline.render_detail
    monkeypatch.setattr(PixelWizardPipeline, "render_detail",
                        lambda self, *args, **kwargs: renders.append(args[1]) or real_render(self, *args, **kwargs))

    report = nightly_batch(str(write_prompts(tmp_path / "p.txt", PROMPTS[:1])), "tiny", model=model, overrides=SMALL)
    [job] = jobs_of(report["batch_id"])
    assert report["status"] == "failed" and job.status == JobStatus.failed
    assert job.last_error.startswith("StorageError: cannot write object 'details/")
    tries = [a.outcome for a in attempts_of(report["batch_id"]) if a.stage == JobStatus.rendering]
    assert tries == [AttemptOutcome.failed] * 2
    assert len(renders) == 1 and unsaved.kept_keys() == [f"details/{job_work.plan_job(job, 'float32').detail_key}"]

    blocker.unlink()
    resumed = resume_batch(report["batch_id"], model=model)
    assert resumed["status"] == "done" and len(renders) == 1 and unsaved.kept_keys() == []
    [output] = resumed["outputs"]
    assert read_video(output["uri"].removeprefix("file://")).shape == (5, 64, 128, 3)


def test_only_the_newest_unsaved_results_are_kept_and_a_dropped_video_leaves_no_file(tmp_path):
    def put_failing(_value):
        raise StorageError("the store is down")

    folders = []
    for i in range(unsaved.KEEP + 1):  # three videos whose puts fail: the oldest is dropped, with its folder
        folders.append(tmp_path / f"encoded{i}")
        folders[-1].mkdir()
        (folders[-1] / "v.mp4").write_bytes(b"an encoded video")
        with pytest.raises(StorageError):
            unsaved.store_once(f"videos/{i}", lambda video=folders[-1] / "v.mp4": video, put_failing)
    assert unsaved.kept_keys() == ["videos/1", "videos/2"]
    assert [folder.exists() for folder in folders] == [False, True, True]

    computed, put = [], []
    for i in (2, 1):  # the store is back: each kept video is put, not computed again, then let go
        assert unsaved.store_once(f"videos/{i}", lambda: computed.append(i), lambda path: put.append(path) or i) == i
    assert computed == [] and put == [folders[2] / "v.mp4", folders[1] / "v.mp4"]
    assert unsaved.kept_keys() == [] and not any(folder.exists() for folder in folders)


@pytest.mark.postgres
def test_two_render_worker_processes_render_every_job_exactly_once(env, model, tmp_path):
    source = write_prompts(tmp_path / "p.txt")
    batch_id = ingest(str(source), "tiny", model, 0, None, SMALL)
    anchors(batch_id, model)
    code = f"from flows.batch import render_worker; render_worker({batch_id}, {model!r}, 'cpu', label='{{}}')"
    workers = [
        subprocess.Popen([sys.executable, "-c", code.format(i)], env={**env, "OMP_NUM_THREADS": "1"}, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, output
    jobs = jobs_of(batch_id)
    assert [j.status for j in jobs] == [JobStatus.done] * 4
    attempts = attempts_of(batch_id)
    for stage in (JobStatus.rendering, JobStatus.encoding):
        per_job = [a.job_id for a in attempts if a.stage == stage]
        assert sorted(per_job) == sorted(j.id for j in jobs), stage  # one attempt per job, none twice
    assert all(a.outcome == AttemptOutcome.succeeded for a in attempts)
    store = resources.cache().store
    assert len([k for k in store.list("videos/") if k.endswith(".mp4")]) == 4


def run_cli(env, *args):
    """The CLI in its own process group, so a kill takes all it started, as a node failure would. SIGINT acts as
    Ctrl-C in a terminal (a shell starts background jobs, such as this test run may be, with it ignored)."""
    return subprocess.Popen([sys.executable, "-m", "cli", *args], env=env, cwd=REPO, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_a_running_attempt(process, stages: list[JobStatus]) -> tuple[Attempt, Job]:
    """The first try at one of ``stages`` that a child's batch runs, with its job, once there is one (read through the
    test's own connection)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
        try:
            with resources.database()() as session:
                running = session.scalars(select(Attempt).where(
                    Attempt.stage.in_(stages), Attempt.outcome == AttemptOutcome.running)).first()
                if running is not None:
                    return running, session.get(Job, running.job_id)
        except Exception:  # the database's schema is made by the child; it may not be there yet
            continue
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"no {'/'.join(s.value for s in stages)} try started: {process.communicate()[0]}")


def test_kill_9_mid_render_then_resume_finishes_without_redoing_work(env, model, tmp_path):
    """With 10-minute leases: the resume takes the killed worker's job at once (its process, on this host, is gone)."""
    env = {**env, "PIXELWIZARD_LEASE_SECONDS": "600"}
    source = write_prompts(tmp_path / "p.txt")
    out = tmp_path / "out"
    # Big enough that a job spends a few seconds in a working stage, so the kill lands inside one.
    process = run_cli(env, "batch", "run", str(source), "--model", model, "--out", str(out),
                      "--set", "num_frames=9", "--set", "anchor_steps=3")
    _, victim = wait_for_a_running_attempt(process, [JobStatus.rendering, JobStatus.encoding])
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # What the kill interrupted, read after it: the job may have finished the stage seen above in between.
    interrupted = [(a.job_id, a.stage) for a in attempts_of(victim.batch_id) if a.outcome == AttemptOutcome.running]
    assert len(interrupted) == 1, interrupted
    # The batch still reads running; its status names the job no worker holds (it had given no hint).
    status = cli_json(env, "batch", "status", str(victim.batch_id))
    assert (status["status"], status["stalled"]) == ("running", 1), status
    text = subprocess.run([sys.executable, "-m", "cli", "batch", "status", str(victim.batch_id)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120).stdout
    assert (f"1 job(s) held by workers that no longer run (killed, or their lease expired): 'pixelwizard batch resume "
            f"{victim.batch_id}' takes them up") in text, text

    with resources.database()() as session:
        batch_id = victim.batch_id
        anchors_before = {a.job_id: (a.sha256, a.uri) for a in session.scalars(
            select(Artifact).where(Artifact.kind == ArtifactKind.anchor_latent))}
    store = resources.cache().store
    anchor_records = {k: store.stat(k).sha256 for k in store.list("anchors/") if k.endswith(".json")}

    resumed = run_cli(env, "batch", "resume", str(batch_id), "--model", model, "--out", str(out), "--json")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    report = json.loads(output[output.index("{"):])
    assert report["status"] == "done" and report["counts"]["done"] == 4 and report["stalled"] == 0
    # The victim went back to its own stage, not to pending.
    assert report["anchors"] == {"generated": 0, "cached": 0, "skipped": 0}
    # The anchors that existed before the kill are the same objects, untouched.
    assert {k: store.stat(k).sha256 for k in store.list("anchors/") if k.endswith(".json")} == anchor_records
    with resources.database()() as session:
        for job_id, (sha, uri) in anchors_before.items():
            artifact = session.scalars(select(Artifact).where(
                Artifact.job_id == job_id, Artifact.kind == ArtifactKind.anchor_latent)).one()
            assert (artifact.sha256, artifact.uri) == (sha, uri)
        videos = session.scalars(select(Artifact).where(Artifact.kind == ArtifactKind.video)).all()
    assert len(videos) == 4 and len({v.job_id for v in videos}) == 4
    assert len([k for k in store.list("videos/") if k.endswith(".mp4")]) == 4
    crashed = [a for a in attempts_of(batch_id) if a.outcome == AttemptOutcome.crashed]
    assert [(a.job_id, a.stage) for a in crashed] == interrupted
    [(crashed_job, crashed_stage)] = interrupted
    renders = [a.job_id for a in attempts_of(batch_id) if a.stage == JobStatus.rendering]
    assert sorted(renders) == sorted([j.id for j in jobs_of(batch_id)] + [crashed_job] * (crashed_stage == JobStatus.rendering))
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{j.prompt_id}.mp4" for j in jobs_of(batch_id))


def processes_with(environment_entry: str) -> dict[int, str]:
    """Live processes (pid -> command line) whose environment holds ``environment_entry``; zombies count as ended."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ended = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            if not ended and environment_entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


def test_prefects_ephemeral_server_ends_with_the_cli_however_the_cli_ends(env, model, tmp_path):
    """Without a Prefect server configured, `batch run` starts Prefect's ephemeral one (a child process). It ends with
    the CLI when the batch finishes; on Ctrl-C in a terminal (SIGINT to the whole process group), which had killed the
    server under the CLI, so that the CLI retried the dead API for minutes and printed tracebacks; and when the CLI
    is killed with SIGKILL (the OOM killer, or a supervisor killing its group), which runs no exit handler, and the
    server had lived on."""
    home = tmp_path / "prefect"  # marks every process of these runs: the CLI's environment passes down
    env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(home)}
    ours = lambda: processes_with(f"PREFECT_HOME={home}")
    source = str(write_prompts(tmp_path / "p.txt", PROMPTS[:1]))
    try:
        finished = run_cli(env, "batch", "run", source, "--model", model, "--out", str(tmp_path / "out"),
                           *[arg for field, value in SMALL.items() for arg in ("--set", f"{field}={value}")])
        output, _ = finished.communicate(timeout=300)
        assert finished.returncode == 0, output
        assert wait_for(lambda: not ours(), 10), ours()

        interrupted, _ = start_a_long_stage(env, model, tmp_path, tmp_path / "out")
        assert any("uvicorn" in cmd for cmd in ours().values()), ours()
        os.killpg(interrupted.pid, signal.SIGINT)
        output, _ = interrupted.communicate(timeout=60)
        assert interrupted.returncode == 130 and "Traceback" not in output, output
        assert wait_for(lambda: not ours(), 10), ours()

        killed = run_cli(env, "batch", "run", source, "--model", model, "--seed", "1")
        watching = lambda: any("ephemeral_server.py" in cmd for cmd in ours().values())
        assert wait_for(watching, 240) and killed.poll() is None, killed.communicate()[0]
        assert any("uvicorn" in cmd for cmd in ours().values()), ours()
        os.killpg(killed.pid, signal.SIGKILL)  # the CLI's whole group (as a supervisor might): the watcher is not in it
        killed.wait()
        assert wait_for(lambda: not ours(), 20), ours()
    finally:
        for pid in ours():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_a_long_stage(env, model, tmp_path, out, stage=JobStatus.rendering) -> tuple[subprocess.Popen, Attempt]:
    """A real `batch run` of two prompts whose render stage (or anchor stage) lasts many heartbeats (400 steps),
    returned with the attempt of the first job's stage once it runs."""
    steps = {"anchor_steps": 400, "detail_steps": 3} if stage == JobStatus.anchoring else {"anchor_steps": 3,
                                                                                          "detail_steps": 400}
    process = run_cli(env, "batch", "run", str(write_prompts(tmp_path / "p.txt", PROMPTS[:2])), "--model", model,
                      "--out", str(out), "--set", "num_frames=9",
                      *[arg for field, value in steps.items() for arg in ("--set", f"{field}={value}")])
    running, _ = wait_for_a_running_attempt(process, [stage])
    return process, running


@pytest.mark.parametrize(("sent", "code", "stage"), [(signal.SIGINT, 130, JobStatus.rendering),
                                                     (signal.SIGTERM, 143, JobStatus.rendering),
                                                     (signal.SIGTERM, 143, JobStatus.anchoring),
                                                     (signal.SIGHUP, 129, JobStatus.rendering)])
def test_ctrl_c_or_sigterm_stops_a_batch_at_the_next_step_and_resume_takes_the_job_up_at_once(env, model, tmp_path,
                                                                                              sent, code, stage):
    """A real batch process gets SIGINT (Ctrl-C), SIGTERM (a scheduler) or SIGHUP (a closed terminal; it had died
    without handing its job back) mid-render or mid-anchor, with 10-minute
    leases: it stops within a step (it had gone on rendering every job in its worker thread), hands the job back, and
    exits quietly (SIGTERM had ended in a traceback, exit 1, and mid-anchor had counted a failed try and kept the
    lease: there Prefect's own SIGTERM handler raises); the resume right after does not wait."""
    env = {**env, "PIXELWIZARD_LEASE_SECONDS": "600"}
    out = tmp_path / "out"
    process, running = start_a_long_stage(env, model, tmp_path, out, stage)
    process.send_signal(sent)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == code and "Traceback" not in output, output
    [held] = [j for j in jobs_of(1) if j.id == running.job_id]
    before = JobStatus.pending if stage == JobStatus.anchoring else JobStatus.anchored
    assert (held.status, held.lease_owner) == (before, None)
    assert [a.id for a in attempts_of(1) if a.id >= running.id] == [running.id]  # nothing went on after the signal

    resumed = run_cli(env, "batch", "resume", "1", "--model", model, "--out", str(out))
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    with resources.database()() as session:
        assert session.get(Attempt, running.id).outcome == AttemptOutcome.interrupted  # not counted as a try
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{j.prompt_id}.mp4" for j in jobs_of(1))


def test_cancel_stops_a_running_render_within_a_heartbeat_and_resume_takes_the_batch_up_again(env, model, tmp_path):
    out = tmp_path / "out"  # the render lasts many heartbeats of 1.25 s (the 5-s lease here)
    process, rendering = start_a_long_stage(env, model, tmp_path, out)
    [victim] = [j for j in jobs_of(1) if j.id == rendering.job_id]

    from typer.testing import CliRunner

    from cli.main import app

    cancel = CliRunner().invoke(app, ["batch", "cancel", str(victim.batch_id)])  # here: no interpreter to start
    assert cancel.exit_code == 0 and cancel.stdout.strip() == f"batch {victim.batch_id}: 2 job(s) cancelled", cancel

    output, _ = process.communicate(timeout=120)  # the run ends by itself, reporting the batch cancelled
    assert process.returncode == 1 and f"batch {victim.batch_id} cancelled: 2 cancelled" in output, output
    assert "Traceback" not in output
    with resources.database()() as session:
        attempt = session.get(Attempt, rendering.id)
    assert (attempt.outcome, attempt.error) == (AttemptOutcome.interrupted, "cancelled by the operator")
    assert [j.status for j in jobs_of(victim.batch_id)] == [JobStatus.cancelled] * 2
    for job in jobs_of(victim.batch_id):  # named with the id that `jobs retry` takes (only the JSON report had it)
        assert f"cancelled job {job.id} ({job.prompt_id})\n" in output
    assert (f"'pixelwizard batch resume {victim.batch_id}' runs the cancelled jobs again, 'pixelwizard jobs retry JOB' "
            "one of them") in output
    detail_key = job_work.plan_job(victim, "float32").detail_key
    assert resources.cache().entry_object(ArtifactKind.detail_latent, detail_key) is None  # stopped mid-sampling

    resumed = run_cli(env, "batch", "resume", str(victim.batch_id), "--model", model, "--out", str(out), "--json")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    report = json.loads(output[output.index("{"):])
    assert report["status"] == "done" and report["anchors"] == {"generated": 0, "cached": 2, "skipped": 0}
    assert report["cancelled"] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{j.prompt_id}.mp4" for j in jobs_of(victim.batch_id))

    for args, message in ((["jobs", "cancel", str(victim.id)], f"job {victim.id} is done"),
                          (["jobs", "cancel", "999"], "no job 999"), (["batch", "cancel", "999"], "no batch 999")):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr, result.output
    assert [j.status for j in jobs_of(victim.batch_id)] == [JobStatus.done] * 2

def _batch_through_an_outage(child_env, proxy, model, tmp_path, seconds: float) -> tuple[Attempt, list[Attempt]]:
    """A real `batch run` of four prompts, one try per stage allowed, whose service behind ``proxy`` is cut for
    ``seconds`` once a render worker's stage runs. The batch must finish by itself, all done, exported, without a
    traceback, no try counted as failed or crashed or left running. Returns the stage seen running when the cut came
    and the tries recorded interrupted."""
    out = tmp_path / "out"
    process = run_cli({**child_env, "PIXELWIZARD_MAX_ATTEMPTS": "1"}, "batch", "run",
                      str(write_prompts(tmp_path / "p.txt")), "--model", model, "--out", str(out),
                      "--set", "num_frames=9", "--set", "anchor_steps=3")
    victim, job = wait_for_a_running_attempt(process, [JobStatus.rendering, JobStatus.encoding])  # read directly
    batch_id = job.batch_id
    proxy.cut()
    time.sleep(seconds)
    assert proxy.refused > 0  # the batch did try the service meanwhile
    proxy.restore()
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0 and "Traceback" not in output, output
    attempts = attempts_of(batch_id)
    assert not [a for a in attempts if a.outcome in (AttemptOutcome.failed, AttemptOutcome.crashed, AttemptOutcome.running)]
    assert [j.status for j in jobs_of(batch_id)] == [JobStatus.done] * 4
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{j.prompt_id}.mp4" for j in jobs_of(batch_id))
    return victim, [a for a in attempts if a.outcome == AttemptOutcome.interrupted]


@pytest.mark.postgres
def test_a_database_outage_mid_batch_is_waited_out_and_the_batch_finishes(env, model, tmp_path, pg_proxy):
    """The batch's connections to a real PostgreSQL server are cut for 8 s (far longer than a stage here) while a
    stage runs (a failover, say): the stage that ends in the outage cannot record itself, its worker waits for the
    database, closes the try as interrupted (not counted: one try per stage is allowed), and takes the job up again
    from the stored result. Before, the batch failed on the first lost query."""
    proxy, proxied_url = pg_proxy
    _, interrupted = _batch_through_an_outage({**env, "PIXELWIZARD_DATABASE_URL": proxied_url}, proxy, model,
                                              tmp_path, 8)
    assert len(interrupted) == 1 and interrupted[0].error.startswith("OperationalError"), interrupted
    details = [k for k in resources.cache().store.list("details/") if not k.endswith(".json")]
    assert len(details) == 4  # each job's detail latent rendered and stored once
    assert len([k for k in resources.cache().store.list("videos/") if k.endswith(".mp4")]) == 4


@pytest.mark.postgres
def test_a_database_outage_longer_than_the_wait_ends_the_batch_on_one_line_and_resume_finishes_it(
        env, model, tmp_path, pg_proxy):
    proxy, proxied_url = pg_proxy
    out = tmp_path / "out"
    process = run_cli({**env, "PIXELWIZARD_DATABASE_URL": proxied_url, "PIXELWIZARD_OUTAGE_SECONDS": "3"},
                      "batch", "run", str(write_prompts(tmp_path / "p.txt")), "--model", model, "--out", str(out),
                      "--set", "num_frames=9", "--set", "anchor_steps=3")
    batch_id = wait_for_a_running_attempt(process, [JobStatus.rendering, JobStatus.encoding])[1].batch_id
    proxy.cut()
    output, _ = process.communicate(timeout=120)
    proxy.restore()
    assert process.returncode == 1  # a service failed mid-batch: not "bad input" (2)
    [error] = [line for line in output.splitlines() if line.startswith("error:")]
    assert "the database was out of reach for" in error and "longer than the 3 s a worker waits" in error, output
    assert "Traceback" not in output

    resumed = run_cli({**env, "PIXELWIZARD_DATABASE_URL": proxied_url}, "batch", "resume", str(batch_id),
                      "--model", model, "--out", str(out))
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert [j.status for j in jobs_of(batch_id)] == [JobStatus.done] * 4
    assert not [a for a in attempts_of(batch_id) if a.outcome == AttemptOutcome.running]


def test_an_object_store_outage_mid_batch_is_waited_out_and_costs_no_job_a_try(env, model, tmp_path, s3_bucket,
                                                                               tcp_proxy):
    """The batch's S3 endpoint (a moto server through a relay) stops answering for 25 s while a stage runs, longer
    than the client's own retries last (5 attempts, at most 15 s of backoff): the tries it cuts short are recorded
    interrupted, not failed, so with one try per stage allowed no job fails, and the batch finishes by itself.
    Before, a few seconds of outage failed jobs for good."""
    proxy = tcp_proxy(s3_bucket.endpoint_url)
    child = {**env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
             "AWS_ENDPOINT_URL_S3": proxy.url, "PIXELWIZARD_STORE_URL": s3_bucket.url("pw")}
    _, interrupted = _batch_through_an_outage(child, proxy, model, tmp_path, 25)
    assert interrupted and all(a.error.startswith("StoreUnreachableError: S3 ") for a in interrupted), interrupted


def test_a_render_worker_given_another_databases_batch_stops_on_one_line_before_loading_the_model(env, model,
                                                                                                  tmp_path):
    """A render-worker run is sent a batch id; a worker configured with another run database than the nightly run's
    had failed on an AttributeError (no such batch) or, worse, rendered that database's batch of the same id."""
    from flows.batch import ForeignBatchError, render_worker

    report = nightly_batch(str(write_prompts(tmp_path / "p.txt", PROMPTS[:1])), "tiny", model=model, overrides=SMALL)
    with resources.database()() as session:
        created = session.get(Batch, report["batch_id"]).created_at
    database = os.environ["PIXELWIZARD_DATABASE_URL"]
    with pytest.raises(ForeignBatchError, match=rf"^batch 99 is not in this worker's run database {re.escape(database)}"
                                                r": give the worker the PIXELWIZARD_DATABASE_URL"):
        render_worker(99, model)
    another = (created - timedelta(microseconds=1)).isoformat()
    with pytest.raises(ForeignBatchError, match=rf"^batch {report['batch_id']} sent here was made in another database"):
        render_worker(report["batch_id"], model, batch_created=another)
    with pytest.raises(ForeignBatchError, match=r"^batch_created 'yesterday' is not an ISO 8601 time"):
        render_worker(report["batch_id"], model, batch_created="yesterday")
    for own in (created.isoformat(), created.isoformat().replace("+00:00", "Z")):  # the same time, written either way
        assert render_worker(report["batch_id"], model, batch_created=own) == 0  # its own batch: nothing left to do

    # A resume-batch run (`batch resubmit`) is guarded the same way, before it requeues anything: here a done job whose
    # video was lost from the store.
    with resources.database()() as session:
        video = session.scalars(select(Artifact).where(Artifact.kind == ArtifactKind.video)).one()
    lost = Path(video.uri.removeprefix("file://"))
    lost.unlink()
    with pytest.raises(ForeignBatchError, match=rf"^batch {report['batch_id']} sent here was made in another database"):
        resume_batch(report["batch_id"], model=model, batch_created=another)
    with resources.database()() as session:
        assert session.get(Job, video.job_id).status == JobStatus.done  # not requeued
    assert not lost.exists()
    resumed = resume_batch(report["batch_id"], model=model, batch_created=created.isoformat(), render_on_pool=False)
    assert read_video(lost).shape[0] == SMALL["num_frames"]
    assert (resumed["status"], resumed["counts"]["done"]) == ("done", 1)


def test_the_prompt_file_type_comes_from_the_whole_name(model, tmp_path):
    """A '?' is part of a name (S3 keys and paths may hold one), not the start of a query."""
    from flows.ingestion import read_batch_input
    from pixelwizard.prompts import PromptFileError

    named = write_prompts(tmp_path / "night?v=1.txt", PROMPTS[:1])
    _, specs, _ = read_batch_input(str(named), "tiny", model, {})
    assert [spec.prompt for spec in specs] == PROMPTS[:1]
    with pytest.raises(PromptFileError, match=r"x\?y\.csv: unknown prompt file type \.csv; use \.txt or \.jsonl"):
        read_batch_input(str(write_prompts(tmp_path / "x?y.csv")), "tiny", model, {})


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_cached_video_is_never_reused_or_exported_and_resume_encodes_it_again(env, model, tmp_path,
                                                                                       monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app

    store = resources.cache().store
    first = nightly_batch(str(write_prompts(tmp_path / "a.txt", PROMPTS[:1])), "tiny", model=model, overrides=SMALL)
    [video] = [Path(o["uri"].removeprefix("file://")) for o in first["outputs"]]
    _flip_a_byte(video)

    # A second batch sharing the prompt finds the stored video corrupt: quarantined, and encoded again.
    second = nightly_batch(str(write_prompts(tmp_path / "b.txt", PROMPTS[:2])), "tiny", model=model, overrides=SMALL)
    assert second["status"] == "done" and second["anchors"] == {"generated": 1, "cached": 1, "skipped": 0}
    assert len([k for k in store.list("quarantine/") if k.endswith(".mp4")]) == 1
    for output in second["outputs"]:
        assert read_video(output["uri"].removeprefix("file://")).shape == (5, 64, 128, 3)

    # Corrupt once the batch is done: the export copies the good video, quarantines the bad one and says so.
    _flip_a_byte(video)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", "resume", str(second["batch_id"]), "--model", model, "--out", str(out)])
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and line.startswith("error: 1 of 2 video(s) not copied") and "batch resume" in line
    jobs = jobs_of(second["batch_id"])
    assert sorted(p.name for p in out.iterdir()) == [f"{jobs[1].prompt_id}.mp4"]
    assert len([k for k in store.list("quarantine/") if k.endswith(".mp4")]) == 2

    # The next resume encodes that video again from the cached detail latent, and nothing else.
    before = attempts_of(second["batch_id"])
    result = CliRunner().invoke(app, ["batch", "resume", str(second["batch_id"]), "--model", model, "--out", str(out)])
    assert result.exit_code == 0, result.output
    added = [(a.job_id, a.stage, a.outcome) for a in attempts_of(second["batch_id"])[len(before):]]
    assert added == [(jobs[0].id, JobStatus.encoding, AttemptOutcome.succeeded)]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{j.prompt_id}.mp4" for j in jobs)
    assert all(read_video(p).shape == (5, 64, 128, 3) for p in out.iterdir())

def test_an_export_over_another_batchs_video_of_the_same_prompt_replaces_it_and_says_so(env, model, tmp_path,
                                                                                       monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.chdir(tmp_path)
    out, source = tmp_path / "out", str(write_prompts(tmp_path / "p.txt", PROMPTS[:2]))
    first = nightly_batch(source, "tiny", model=model, seed=0, overrides=SMALL)
    second = nightly_batch(source, "tiny", model=model, seed=1, overrides=SMALL)  # same prompt ids, other videos
    export = lambda batch: CliRunner().invoke(app, ["batch", "resume", str(batch["batch_id"]), "--model", model,
                                                    "--out", str(out)])
    names = [f"{o['prompt_id']}.mp4" for o in second["outputs"]]  # in job order

    result = export(first)
    assert result.exit_code == 0 and "note:" not in result.stderr, result.output
    result = export(second)
    assert result.exit_code == 0, result.output
    [note] = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert note == f"note: 2 file(s) in {out} held another batch's video and were replaced: {', '.join(names)}"
    for output in second["outputs"]:
        assert (out / f"{output['prompt_id']}.mp4").read_bytes() == Path(output["uri"].removeprefix("file://")).read_bytes()
    result = export(second)  # the same videos again: nothing to say
    assert result.exit_code == 0 and "note:" not in result.stderr, result.output

    # A command given another store says so. The run is of a copy of the file: the same prompts and settings find the
    # batch made from the original, done, so nothing is made, and a note says which batch went on.
    monkeypatch.setenv("PIXELWIZARD_STORE_URL", str(tmp_path / "another-store"))
    resources.cache.cache_clear()
    sets = [arg for field, value in SMALL.items() for arg in ("--set", f"{field}={value}")]
    copy = tmp_path / "copy.txt"
    copy.write_bytes(Path(source).read_bytes())
    result = CliRunner().invoke(app, ["batch", "run", str(copy), "--model", model, "--seed", "1", "--out", str(out),
                                      *sets])
    note, line = [line for line in result.stderr.splitlines() if line.strip()]
    assert note.startswith(f"note: batch {second['batch_id']} (from {source}, created ") and note.endswith(
        " UTC) had the same prompts and settings, so this run went on with it; its done videos were not rendered "
        f"again (`pixelwizard batch resume {second['batch_id']}` retries its failed jobs)"), note
    first_out = second["outputs"][0]
    assert result.exit_code == 1 and line.startswith(
        f"error: 2 of 2 video(s) not copied to {out}: the video of {first_out['prompt_id']} is not in the object store "
        f"this command uses ({(tmp_path / 'another-store').as_uri()}/videos/"), result.output
    assert line.endswith(f"; the batch recorded {first_out['uri']}): check PIXELWIZARD_STORE_URL, or 'pixelwizard "
                         f"batch resume {second['batch_id']}' makes it again")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{bad}"], "bad.jsonl:2:"),
        (["{missing}"], "missing.txt"),
        (["{good}", "--device", "tpu:9"], "bad device 'tpu:9'"),
        (["{good}", "--set", "fps=0"], "fps must lie in [1, 1000]"),
        (["{good}", "--set", "anchor_steps=100000000000000000000"], "anchor steps must lie in [1, 1000]"),
        (["{good}", "--set", "decode_chunks=50"], "decode chunks 50 do not fit"),
        (["{good}", "--preset", "8k"], "unknown preset '8k'"),
        (["{good}", "--out", "{good}"], "exists and is not a folder"),
    ],
)
def test_bad_input_fails_on_one_line_before_any_batch_is_created(env, model, tmp_path, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "ok", "prompt": "fine"}\n{"id": "x y", "prompt": "bad id"}\n')
    fill = dict(bad=bad, missing=tmp_path / "missing.txt", good=write_prompts(tmp_path / "good.txt"))
    args = [a.format(**fill) for a in args]
    result = subprocess.run([sys.executable, "-m", "cli", "batch", "run", *args, "--model", model],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    factory = open_database(env["PIXELWIZARD_DATABASE_URL"])
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Batch)) == 0


BAD_SETTINGS = [  # nothing listens on port 9 of this machine
    ({"PIXELWIZARD_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none"}, "cannot connect to database"),
    ({"PIXELWIZARD_STORE_URL": "s3://no-bucket/pw", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
      "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}, "cannot reach s3://no-bucket"),
    ({"PIXELWIZARD_LEASE_SECONDS": "abc"}, "PIXELWIZARD_LEASE_SECONDS='abc': expected a number of seconds > 0"),
    ({"PIXELWIZARD_LEASE_SECONDS": "nan"}, "PIXELWIZARD_LEASE_SECONDS='nan'"),
    ({"PIXELWIZARD_MAX_ATTEMPTS": "1.5"}, "PIXELWIZARD_MAX_ATTEMPTS='1.5': expected a whole number >= 1"),
    ({"PIXELWIZARD_MAX_ATTEMPTS": "0"}, "PIXELWIZARD_MAX_ATTEMPTS='0'"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_a_bad_setting_or_a_database_or_store_out_of_reach_is_one_line_before_any_flow_runs(env, model, tmp_path,
                                                                                          settings, message):
    out = tmp_path / "videos"
    result = subprocess.run(
        [sys.executable, "-m", "cli", "batch", "run", str(write_prompts(tmp_path / "p.txt")), "--model", model,
         "--out", str(out)],
        env={**env, **settings}, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not out.exists()
    if "PIXELWIZARD_DATABASE_URL" not in settings:  # the database was reachable: no batch was made in it
        with resources.database()() as session:
            assert session.scalar(select(func.count()).select_from(Batch)) == 0


FLOW_RAISING = """
import sys
import typer
from cli.batch import _quiet_prefect, _run_flow
_quiet_prefect()
from prefect import flow, task
from storage.errors import StorageError

@task
def stage(kind):
    raise StorageError("the store went away") if kind == "known" else RuntimeError("not a known error")

@flow
def batch(kind):
    return stage(kind)

try:
    _run_flow(lambda: batch(sys.argv[1]))
except typer.Exit as exc:
    sys.exit(exc.exit_code)
"""


@pytest.mark.parametrize("kind", ["known", "unknown"])
def test_an_error_raised_inside_a_flow_is_one_line_when_the_cli_knows_it(env, tmp_path, kind):
    """A real Prefect flow whose task raises: a known error (a storage failure) is the CLI's one line, without
    Prefect's records of it; any other error keeps Prefect's traceback, which is what a bug report needs."""
    script = tmp_path / "flow_raising.py"
    script.write_text(FLOW_RAISING)
    result = subprocess.run([sys.executable, str(script), kind], env={**env, "PYTHONPATH": str(REPO)}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if kind == "known":
        # exit 1: the store failed while the flow ran (bad input, exit 2, is refused before any flow starts)
        assert result.returncode == 1 and lines == ["error: the store went away"], result.stderr
    else:
        assert result.returncode == 1
        assert "Task run failed with exception: RuntimeError('not a known error')" in result.stderr
        assert "Traceback (most recent call last)" in result.stderr
