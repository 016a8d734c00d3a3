"""The ``pixelwizard`` command as a user runs it: a real subprocess, real ffmpeg, real files."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixelwizard.video import read_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return {**os.environ, "PIXELWIZARD_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def run(env, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_help_answers_quickly_without_importing_torch(env):
    start = time.monotonic()
    result = run(env, "--help")
    assert result.returncode == 0 and "render" in result.stdout
    assert time.monotonic() - start < 2.0
    probe = subprocess.run(
        [sys.executable, "-c", "import cli.main, sys; print('torch' in sys.modules)"],
        env=env, capture_output=True, text=True, cwd=REPO,
    )
    assert probe.stdout.strip() == "False"


def test_the_cli_gives_prefects_ephemeral_server_time_to_start_unless_told_otherwise(env):
    """Prefect itself reads the longer start-up limit the CLI sets, and a user's own value wins."""
    code = ("import cli.main; from prefect.settings import get_current_settings; "
            "print(get_current_settings().server.ephemeral.startup_timeout_seconds)")
    clean = {k: v for k, v in env.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    for extra, expected in (({}, "120"), ({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "45"}, "45")):
        probe = subprocess.run([sys.executable, "-c", code], env={**clean, **extra}, capture_output=True, text=True,
                               cwd=REPO)
        assert probe.stdout.strip() == expected, probe.stderr[-500:]


def test_render_writes_mp4s_named_by_prompt_id_with_the_right_frames_and_size(env, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "red-circle", "prompt": "a red circle moves right", "seed": 4}\n'
                       '{"id": "blue-square", "prompt": "a blue square bounces"}\n')
    out = tmp_path / "out"
    result = run(env, "render", "--prompts", str(prompts), "--out", str(out), "--width", "128", "--height", "64",
                 "--frames", "9", "--anchor-steps", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["blue-square.mp4", "red-circle.mp4"]
    video = read_video(out / "red-circle.mp4")
    assert video.shape == (9, 64, 128, 3)
    # Re-running skips finished outputs and leaves them untouched.
    before = (out / "red-circle.mp4").stat().st_mtime_ns
    again = run(env, "render", "--prompts", str(prompts), "--out", str(out), "--width", "128", "--height", "64",
                "--frames", "9", "--anchor-steps", "2")
    assert again.returncode == 0 and "skipped" in again.stdout
    assert (out / "red-circle.mp4").stat().st_mtime_ns == before


def test_single_prompt_render(env, tmp_path):
    out = tmp_path / "out"
    result = run(env, "render", "a green ring orbits", "--out", str(out), "--width", "64", "--height", "32",
                 "--frames", "5", "--anchor-steps", "2", "--steps", "2")
    assert result.returncode == 0, result.stderr
    [video] = out.iterdir()
    assert video.name.startswith("a-green-ring-orbits-") and read_video(video).shape == (5, 32, 64, 3)


@pytest.fixture
def incomplete_model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "PixelWizardPipeline"}')
    return folder


BAD = {
    "unknown preset": (["x", "--preset", "8k"], "unknown preset"),
    "width not /32": (["x", "--width", "100"], "multiple of 32"),
    "frames not 4k+1": (["x", "--frames", "16"], "4k+1"),
    "missing model": (["x", "--model", "/nonexistent/model"], "does not exist"),
    "incomplete model": (["x", "--model", "{incomplete}"], "no component"),
    "empty prompt": (["   "], "empty"),
    "bad device": (["x", "--device", "tpu:9"], "device"),
    "absent gpu": (["x", "--device", "cuda:0"], "GPU"),
    "bad prompt file": (["--prompts", "{bad_file}"], "bad.jsonl:2:"),
    "no prompt": ([], "exactly one"),
    "bad solver": (["x", "--solver", "heun"], "solver"),
    "bad offload": (["x", "--offload", "disk"], "offload"),
    "unknown attention backend": (["x", "--attention-backend", "magic"], "attention backend"),
    "gpu attention on the cpu": (["x", "--attention-backend", "_native_cudnn", "--device", "cpu"], "CUDA"),
}


@pytest.mark.parametrize("case", BAD.keys())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(env, tmp_path, incomplete_model, case):
    if case == "absent gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU, so cuda:0 is valid here")
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text('{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": \n')
    args, message = BAD[case]
    args = [a.format(incomplete=incomplete_model, bad_file=bad_file) for a in args]
    out = tmp_path / "out"
    result = run(env, "render", *args, "--out", str(out))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("args", "settings", "message"),
    [
        (["render", "x", "--out", "{file}"], {}, "exists and is not a folder"),
        (["cache", "ls"], {"PIXELWIZARD_STORE_URL": "ftp://host/path"}, "ftp"),
        (["cache", "gc"], {"PIXELWIZARD_STORE_URL": "ftp://host/path"}, "ftp"),
        (["batch", "submit", "{file}", "--preset", "8k"], {"PREFECT_API_URL": "http://127.0.0.1:9/api"}, "unknown preset"),
        (["batch", "submit", "{file}"], {"PREFECT_API_URL": "http://127.0.0.1:9/api"}, "cannot start nightly-batch"),
    ],
)
def test_more_bad_input_is_one_line(env, tmp_path, args, settings, message):
    """A file where a folder belongs, an unusable store URL, a submit with a bad preset or no server behind the API URL."""
    existing = tmp_path / "prompts.txt"
    existing.write_text("a red circle moves right\n")
    result = run({**env, **settings}, *[a.format(file=existing) for a in args], timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert existing.read_text() == "a red circle moves right\n"
