"""The real deployment path, end to end: a Prefect server, work pools, `prefect deploy` of the
project's own prefect.yaml, process workers on the `gpu` and `cpu` pools, and one nightly-batch
run that fans out to render-worker deployment runs on the `gpu` pool (then a resume-batch run that does too).

Everything runs as separate processes on 127.0.0.1, isolated from the developer's Prefect
profile (own PREFECT_HOME) and PixelWizard data (own PIXELWIZARD_HOME and SQLite database).
Renders use a tiny random model and small preset overrides so the run takes about a minute.
On failure the server's and workers' logs are printed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psutil
from sqlalchemy import select

from pixelwizard.bundle import write_bundle
from pixelwizard.default_model import build_tiny_pipeline
from pixelwizard.video import read_video
from storage.database import open_database
from storage.models import Artifact, ArtifactKind, Batch, Job, JobStatus

REPO = Path(__file__).resolve().parents[1]
SMALL = {"num_frames": 5, "anchor_width": 64, "anchor_height": 32, "anchor_steps": 3,
         "detail_width": 128, "detail_height": 64}
PROMPTS = [
    {"id": "red-circle", "prompt": "a red circle moves right", "seed": 1},
    {"id": "blue-square", "prompt": "a blue square bounces", "seed": 2},
]
GPUS = 2  # render-worker runs get CUDA_VISIBLE_DEVICES 0 and 1 (no GPU is needed: they fall back to the CPU)
RUN_TIMEOUT_S = 300
SERVER_START_TIMEOUT_S = 120
CLI_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Services:
    """Long-running subprocesses (server, workers) with their logs; stopped with all their
    descendants on exit, logs printed if the block failed."""

    def __init__(self, logs: Path, env: dict[str, str]):
        self.logs, self.env = logs, env
        self.processes: dict[str, subprocess.Popen] = {}
        self.cli_outputs: list[str] = []
        logs.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Services:
        return self

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen([sys.executable, "-m", "prefect", *args], cwd=REPO, env=env or self.env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def prefect(self, *args: str) -> str:
        """Run a prefect CLI command to completion; its output, asserting it succeeded."""
        done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
        output = done.stdout + done.stderr
        self.cli_outputs.append(f"$ prefect {' '.join(args)}\n(rc={done.returncode})\n{output}")
        assert done.returncode == 0, f"prefect {' '.join(args)} failed (rc={done.returncode}):\n{output}"
        return output

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}"

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.print_logs()
        finally:
            self.stop()

    def print_logs(self, tail_lines: int = 300) -> None:
        for output in self.cli_outputs:
            print(f"\n===== {output[-5000:]}")
        for name in self.processes:
            lines = self.log(name).splitlines()
            print(f"\n===== {name} log (last {tail_lines} of {len(lines)} lines) =====")
            print("\n".join(lines[-tail_lines:]))

    def stop(self) -> None:
        """SIGTERM every started process and its descendants (the workers' flow-run processes run
        in sessions of their own), workers before the server; SIGKILL what is left after 20 s."""
        tree: list[psutil.Process] = []
        for process in reversed(list(self.processes.values())):
            try:
                root = psutil.Process(process.pid)
                tree += [*root.children(recursive=True), root]
            except psutil.NoSuchProcess:
                pass
        for member in tree:
            try:
                member.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=20)
        for member in alive:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for process in self.processes.values():
            process.wait(timeout=10)


def wait_for_health(services: Services, api: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        services.check_alive()
        try:
            if httpx.get(f"{api}/health", timeout=2).json() is True:
                return
        except (httpx.HTTPError, ValueError):
            pass
        assert time.monotonic() < deadline, f"Prefect server not healthy after {SERVER_START_TIMEOUT_S} s"
        time.sleep(0.5)


def call(method: str, url: str, **kwargs) -> Any:
    """One request to the server's API and its JSON answer (None if empty), asked again while the server answers 503:
    it does so for errors a client may retry, such as its SQLite database being busy on a loaded machine (seen on a
    PATCH and a DELETE with two other processes on the 2 cores)."""
    for _ in range(10):
        response = httpx.request(method, url, timeout=30, **kwargs)
        if response.status_code != 503:
            break
        time.sleep(1)
    response.raise_for_status()
    return response.json() if response.content else None


def flow_runs(api: str, **flow_run_filter) -> list[dict]:
    return call("POST", f"{api}/flow_runs/filter", json={"flow_runs": flow_run_filter, "limit": 200})


def deployment(api: str, name: str) -> dict:
    return call("GET", f"{api}/deployments/name/{name}")


def final_state(services: Services, api: str, run_id: str) -> dict:
    """The flow run once it has ended, polled every second for up to RUN_TIMEOUT_S while the services run."""
    deadline, state = time.monotonic() + RUN_TIMEOUT_S, "not yet read"
    while True:
        try:
            run = call("GET", f"{api}/flow_runs/{run_id}")
        except httpx.TransportError as error:
            # On a loaded 2-core machine the server, the workers and two render processes share the
            # cores, and one poll can time out (seen in CI); the run's own deadline decides.
            print(f"poll of flow run {run_id} failed, polling again: {error!r}")
        else:
            state = run["state_name"]
            if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
        services.check_alive()
        assert time.monotonic() < deadline, f"flow run {run_id} still {state} after {RUN_TIMEOUT_S} s"
        time.sleep(1)


def cli(env: dict[str, str], *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``pixelwizard ARGS`` as a process of its own, with ``env``, and return what it printed."""
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)


def test_nightly_batch_deployment_fans_out_to_render_worker_runs_on_the_gpu_pool(tmp_path):
    model = str(write_bundle(build_tiny_pipeline(seed=3), tmp_path / "model" / "tiny"))
    prompts = tmp_path / "nightly.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    database_url = f"sqlite:///{tmp_path / 'pixelwizard.db'}"
    open_database(database_url)  # schema created once, before several processes open it

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PIXELWIZARD_"))}
    base.update({
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_CLI_PROMPT": "false",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",  # keep the CLI's rich output on one line per field
    })
    client_env = {
        **base,
        "PREFECT_API_URL": api,
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # workers pick up new runs within a second
        "PIXELWIZARD_REPO": str(REPO),
        "PIXELWIZARD_HOME": str(tmp_path / "pixelwizard-home"),
        "PIXELWIZARD_DATABASE_URL": database_url,
        "OMP_NUM_THREADS": "1",  # several flow-run processes share this machine's cores
    }

    with Services(tmp_path / "logs", client_env) as services:
        services.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui", env=base)
        wait_for_health(services, api)

        for pool in ("gpu", "cpu", "anchor"):
            services.prefect("work-pool", "create", pool, "--type", "process")
        services.prefect("work-pool", "set-concurrency-limit", "gpu", str(GPUS))
        services.prefect("--no-prompt", "deploy", "--all")

        # What prefect.yaml declares is what the server holds.
        nightly = deployment(api, "nightly-batch/nightly-batch")
        render = deployment(api, "render-worker/render-worker")
        assert deployment(api, "anchors/anchors")["work_pool_name"] == "anchor"
        assert nightly["work_pool_name"] == "cpu" and nightly["entrypoint"] == "flows/batch.py:nightly_batch"
        [schedule] = nightly["schedules"]
        assert schedule["active"] is True
        assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("0 1 * * *", "Europe/Berlin")
        assert render["work_pool_name"] == "gpu"
        assert render["global_concurrency_limit"]["limit"] == 8
        assert render["job_variables"] == {"env": {"CUDA_VISIBLE_DEVICES": "0"}}
        for spec in (nightly, render):
            assert spec["pull_steps"] == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        pool = call("GET", f"{api}/work_pools/gpu")
        assert (pool["type"], pool["concurrency_limit"]) == ("process", GPUS)

        services.start("worker-gpu", "worker", "start", "--pool", "gpu", "--name", "gpu-test")
        services.start("worker-cpu", "worker", "start", "--pool", "cpu", "--name", "cpu-test")

        parameters = {"source": str(prompts), "preset": "tiny", "workers": GPUS, "gpus": GPUS, "model": model,
                      "overrides": SMALL, "name": "deployment-test"}
        submitted = services.prefect("deployment", "run", "nightly-batch/nightly-batch",
                                     "--params", json.dumps(parameters))
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", submitted)
        assert match, submitted
        run_id = match.group(1)

        run = final_state(services, api, run_id)
        assert run["state_type"] == "COMPLETED", run["state"]
        assert run["deployment_id"] == nightly["id"] and run["work_pool_name"] == "cpu"
        assert f"submitting flow run '{run_id}'" in services.log("worker-cpu")

        # The render workers ran as their own runs of the render-worker deployment, taken by the
        # gpu pool's worker, linked to the nightly run as subflows, one per GPU slot.
        renders = flow_runs(api, deployment_id={"any_": [render["id"]]})
        assert len(renders) == GPUS, renders
        batch_ids = set()
        for render_run in renders:
            assert render_run["state_type"] == "COMPLETED", render_run["state"]
            assert render_run["work_pool_name"] == "gpu"
            assert f"submitting flow run '{render_run['id']}'" in services.log("worker-gpu")
            parent = call("GET", f"{api}/task_runs/{render_run['parent_task_run_id']}")
            assert parent["flow_run_id"] == run_id
            assert render_run["parameters"]["model"] == model
            batch_ids.add(render_run["parameters"]["batch_id"])
        assert sorted(r["job_variables"]["env"]["CUDA_VISIBLE_DEVICES"] for r in renders) == ["0", "1"]
        assert sorted(r["idempotency_key"] for r in renders) == [f"{run_id}-render-{i}" for i in range(GPUS)]

        # `pixelwizard batch submit` sends only what it is given: GPU slots stay the deployment's (prefect.yaml: 8).
        # A path relative to where it runs is sent absolute (the worker, in the checkout, had found no such file).
        sets = [arg for field, value in SMALL.items() for arg in ("--set", f"{field}={value}")]
        submit = cli(client_env, "batch", "submit", prompts.name, "--preset", "tiny", "--workers", "1",
                     "--model", model, *sets, cwd=prompts.parent)
        assert submit.returncode == 0, submit.stderr
        submitted_id = re.search(r"submitted flow run ([0-9a-f-]{36})", submit.stdout).group(1)
        assert submit.stdout.rstrip().endswith(f"of nightly-batch/nightly-batch for {prompts}"), submit.stdout
        missing = cli(client_env, "batch", "submit", str(prompts), "--deployment", "nightly-batch/nope")
        assert missing.returncode == 1 and missing.stderr.strip() == (
            f"error: no deployment nightly-batch/nope on {api}: deploy it first ('prefect deploy --all', see "
            "docs/deployment.md)"), missing.stderr
        again = call("GET", f"{api}/flow_runs/{submitted_id}")
        assert (again["parameters"]["workers"], again["parameters"]["gpus"]) == (1, 8)
        assert again["parameters"]["source"] == str(prompts)
        again = final_state(services, api, submitted_id)  # the same batch: no work
        assert again["state_type"] == "COMPLETED", again["state"]

        # Options not given are the deployment's: here a model set on the server (as prefect.yaml may) and its preset
        # (2k) stay, where submit had sent preset 2k, no model and seed 0 over them. The cpu pool is paused meanwhile,
        # so that the run is only read, then deleted.
        services.prefect("work-pool", "pause", "cpu")
        stored = {**nightly["parameters"], "model": model}
        call("PATCH", f"{api}/deployments/{nightly['id']}", json={"parameters": stored})
        bare = cli(client_env, "batch", "submit", str(prompts), "--seed", "7")
        assert bare.returncode == 0, bare.stderr
        bare_id = re.search(r"submitted flow run ([0-9a-f-]{36})", bare.stdout).group(1)
        assert call("GET", f"{api}/flow_runs/{bare_id}")["parameters"] == {
            **stored, "source": str(prompts), "seed": 7}
        call("DELETE", f"{api}/flow_runs/{bare_id}")
        unfit = cli(client_env, "batch", "submit", str(prompts), "--set", "num_frames=6")
        assert (unfit.returncode, unfit.stderr.strip()) == (2, "error: the deployment's preset 2k: frame count 6 is not "
                                                               "of the form 4k+1 (e.g. 17, 121)"), unfit.stderr
        call("PATCH", f"{api}/deployments/{nightly['id']}", json={"parameters": nightly["parameters"]})
        services.prefect("work-pool", "resume", "cpu")

        # `batch run` and `batch resume` render where they run, also with a server that has the render-worker deployment: here with a
        # SQLite database of its own, which the gpu pool's worker does not share (its render runs had taken the work
        # and failed, or rendered the shared database's batch of the same id).
        render_runs = len(flow_runs(api, deployment_id={"any_": [render["id"]]}))
        local = tmp_path / "local"
        local_env = {**client_env, "PIXELWIZARD_HOME": str(local),
                     "PIXELWIZARD_DATABASE_URL": f"sqlite:///{local}/pw.db"}
        here = cli(local_env, "batch", "run", str(prompts), "--model", model, "--out", str(local / "out"), "--json",
                   *sets)
        assert here.returncode == 0, here.stdout[-2000:] + here.stderr[-2000:]
        local_report = json.loads(here.stdout[here.stdout.index("{"):])
        assert local_report["status"] == "done"
        assert sorted(p.name for p in (local / "out").iterdir()) == sorted(f"{p['id']}.mp4" for p in PROMPTS)
        again_here = cli(local_env, "batch", "resume", str(local_report["batch_id"]), "--model", model,
                         "--out", str(local / "out"))
        assert again_here.returncode == 0, again_here.stdout[-2000:] + again_here.stderr[-2000:]
        assert len(flow_runs(api, deployment_id={"any_": [render["id"]]})) == render_runs  # neither ran on the pool

        # A render-worker run sent a batch its worker's database did not make fails on one line, before the model
        # loads; the nightly run sends the batch's creation time with its id.
        with open_database(database_url, migrate=False)() as session:
            [shared] = session.scalars(select(Batch)).all()
        foreign = services.prefect("deployment", "run", "render-worker/render-worker", "--params", json.dumps(
            {"batch_id": shared.id, "model": model, "batch_created": "2000-01-01T00:00:00+00:00"}))
        foreign_id = re.search(r"UUID:\s*([0-9a-f-]{36})", foreign).group(1)
        failed = final_state(services, api, foreign_id)
        assert failed["state_type"] == "FAILED", failed["state"]
        assert (f"ForeignBatchError: batch {shared.id} sent here was made in another database than this worker's "
                f"run database {database_url}") in failed["state"]["message"], failed["state"]

        # `batch resubmit` resumes the shared batch on the pools: a video lost from the store is encoded again by a
        # render-worker run on the gpu pool, started by a resume-batch run on the cpu pool; only the options given
        # are sent (gpus stays the deployment's), with the batch's creation time from this machine's database. The gpu
        # pool is paused until the resume run has requeued the job and started its render run.
        resume = deployment(api, "resume-batch/resume-batch")
        assert (resume["work_pool_name"], resume["entrypoint"]) == ("cpu", "flows/batch.py:resume_batch")
        with open_database(database_url, migrate=False)() as session:
            lost = session.scalars(select(Artifact).where(Artifact.kind == ArtifactKind.video)).first()
        lost_path = Path(lost.uri.removeprefix("file://"))
        lost_path.unlink()
        services.prefect("work-pool", "pause", "gpu")
        resubmit = cli(client_env, "batch", "resubmit", str(shared.id), "--workers", "1", "--model", model)
        assert resubmit.returncode == 0, resubmit.stderr
        assert resubmit.stdout.rstrip().endswith(f"of resume-batch/resume-batch for batch {shared.id}"), resubmit.stdout
        resume_id = re.search(r"submitted flow run ([0-9a-f-]{36})", resubmit.stdout).group(1)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not (children := [r for r in flow_runs(api, deployment_id={"any_": [render["id"]]})
                                if r["parent_task_run_id"] and call(
                                    "GET", f"{api}/task_runs/{r['parent_task_run_id']}")["flow_run_id"] == resume_id]):
            services.check_alive()
            assert time.monotonic() < deadline, f"resume run {resume_id} started no render run in {RUN_TIMEOUT_S} s"
            time.sleep(1)

        # Meanwhile: without --model, and none in the deployment, a run would take the embedded model, which did not
        # make the requeued job: refused here, before a run is created. An unknown batch or deployment: one line.
        resumes = len(flow_runs(api, deployment_id={"any_": [resume["id"]]}))
        no_model = cli(client_env, "batch", "resubmit", str(shared.id))
        assert no_model.returncode == 2 and no_model.stderr.strip().startswith(
            f"error: the deployment has no model: batch {shared.id} was submitted for model revision "), no_model.stderr
        assert no_model.stderr.strip().endswith("pass --model with the batch's model"), no_model.stderr
        assert len(flow_runs(api, deployment_id={"any_": [resume["id"]]})) == resumes
        unknown = cli(client_env, "batch", "resubmit", "999")
        assert (unknown.returncode, unknown.stderr.strip()) == (2, "error: no batch 999"), unknown.stderr
        nope = cli(client_env, "batch", "resubmit", str(shared.id), "--deployment", "resume-batch/nope")
        assert (nope.returncode, nope.stderr.strip()) == (
            1, f"error: no deployment resume-batch/nope on {api}: deploy it first ('prefect deploy --all', see "
               "docs/deployment.md)"), nope.stderr

        services.prefect("work-pool", "resume", "gpu")
        resumed = final_state(services, api, resume_id)
        assert resumed["state_type"] == "COMPLETED", resumed["state"]
        assert resumed["work_pool_name"] == "cpu"
        assert resumed["parameters"] == {"batch_id": shared.id, "batch_created": shared.created_at.isoformat(),
                                         "workers": 1, "gpus": 8, "model": model}
        [resume_render] = [call("GET", f"{api}/flow_runs/{child['id']}") for child in children]
        assert (resume_render["state_type"], resume_render["work_pool_name"]) == ("COMPLETED", "gpu")
        assert resume_render["parameters"]["batch_created"] == shared.created_at.isoformat()
        assert read_video(lost_path).shape == (SMALL["num_frames"], SMALL["detail_height"], SMALL["detail_width"], 3)

        # The cron schedule is live: the server's scheduler has queued nightly runs at 01:00 Berlin time.
        berlin = ZoneInfo("Europe/Berlin")
        deadline = time.monotonic() + 30
        while not (scheduled := flow_runs(api, deployment_id={"any_": [nightly["id"]]},
                                          state={"type": {"any_": ["SCHEDULED"]}})):
            errors = [line for line in services.log("server").splitlines() if "Error" in line]
            assert time.monotonic() < deadline, (
                "the server's scheduler queued no run of the nightly-batch cron schedule; "
                f"server errors: {errors[-5:]}")
            time.sleep(1)
        for scheduled_run in scheduled:
            start = datetime.fromisoformat(scheduled_run["expected_start_time"]).astimezone(berlin)
            assert (start.hour, start.minute) == (1, 0), scheduled_run["expected_start_time"]

    # The batch's records and videos, in the database the workers shared.
    factory = open_database(database_url, migrate=False)
    with factory() as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
        videos = session.scalars(select(Artifact).where(Artifact.kind == ArtifactKind.video)).all()
    assert batch_ids == {jobs[0].batch_id}
    assert sorted(j.prompt_id for j in jobs) == sorted(p["id"] for p in PROMPTS)
    assert [j.status for j in jobs] == [JobStatus.done] * len(PROMPTS)
    assert sorted(v.job_id for v in videos) == [j.id for j in jobs]
    for video in videos:
        path = Path(video.uri.removeprefix("file://"))
        assert path.is_relative_to(tmp_path / "pixelwizard-home")
        assert read_video(path).shape == (SMALL["num_frames"], SMALL["detail_height"], SMALL["detail_width"], 3)
