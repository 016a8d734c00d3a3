"""The ``pixelwizard`` command as a user runs it: a real subprocess, real ffmpeg, real files."""

import os
import signal
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


def test_help_answers_without_importing_torch(env):
    result = run(env, "--help")
    assert result.returncode == 0 and "render" in result.stdout
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
    assert result.returncode == 0 and "warning:" not in result.stderr, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["blue-square.mp4", "red-circle.mp4"]
    video = read_video(out / "red-circle.mp4")
    assert video.shape == (9, 64, 128, 3)
    # Re-running skips finished outputs and leaves them untouched.
    before = (out / "red-circle.mp4").stat().st_mtime_ns
    again = run(env, "render", "--prompts", str(prompts), "--out", str(out), "--width", "128", "--height", "64",
                "--frames", "9", "--anchor-steps", "2")
    assert again.returncode == 0 and "skipped" in again.stdout
    assert (out / "red-circle.mp4").stat().st_mtime_ns == before


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_a_render_stopped_before_its_first_video_leaves_no_out_folder(env, tmp_path, sent):
    """Ctrl-C or SIGTERM while the first prompt renders: the command stops with the signal's exit code, no traceback,
    and has made no --out folder (it had made it, and its missing parents, before rendering and left them empty)."""
    out = tmp_path / "new" / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "render", "a red zebra circle moves right", "--out", str(out), "--frames", "9",
         "--width", "128", "--height", "64", "--anchor-steps", "1000", "--device", "cpu"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The warning on the word the tiny model does not know comes once the model is loaded, just before the render
        # (1000 anchor steps: most of a minute here).
        assert proc.stderr.readline().startswith("warning:")
        time.sleep(1)
        proc.send_signal(sent)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sent, stderr[-1500:]
    assert "Traceback" not in stderr, stderr[-1500:]
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", [["render", "a red circle moves right"], ["batch", "run", "{file}"]])
def test_a_2k_render_on_the_cpu_is_warned_about_before_it_starts(env, tmp_path, command):
    """The 2k preset on a CPU takes hours a video; without a GPU the command had started with no word. The warning
    comes first (then the command is stopped: it would render for hours)."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moves right\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *[a.format(file=prompts) for a in command], "--preset", "2k", "--device", "cpu",
         "--out", str(tmp_path / "out")], env={**env, "PIXELWIZARD_HOME": str(tmp_path / "home")}, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline().strip()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert first == ("warning: preset 2k on the CPU: 199 times the tiny preset's detail tokens (39715 times its "
                     "attention work), hours a video; use a GPU (--device cuda) or --preset tiny"), first + stderr
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-1500:]
    assert not (tmp_path / "out").exists()


def test_the_slow_preset_warning_is_only_for_large_work_on_the_cpu(capsys):
    from cli.device_warnings import detail_tokens_over_tiny, warn_if_slow_on_cpu
    from pixelwizard.presets import get_preset

    tiny, big = get_preset("tiny"), get_preset("4k")
    assert detail_tokens_over_tiny(tiny) == 1.0
    # 121 frames are 31 latent frames against 5; 3840x2144 pixels against 448x256.
    assert detail_tokens_over_tiny(big) == pytest.approx(31 / 5 * 3840 * 2144 / (448 * 256))
    warn_if_slow_on_cpu(tiny, "cpu")
    warn_if_slow_on_cpu(big, "cuda")
    assert capsys.readouterr().err == ""
    warn_if_slow_on_cpu(big, "cpu")
    assert capsys.readouterr().err.startswith("warning: preset 4k on the CPU: 445 times")


def test_single_prompt_render(env, tmp_path):
    from pixelwizard.prompts import prompt_id_for_text

    out = tmp_path / "out"
    result = run(env, "render", " a green ring orbits the Moon ", "--out", str(out), "--width", "64", "--height",
                 "32", "--frames", "5", "--anchor-steps", "2", "--steps", "2")
    assert result.returncode == 0, result.stderr
    [video] = out.iterdir()
    # The id is the one the same line of a .txt prompt file gets (its text stripped).
    prompt_id = prompt_id_for_text("a green ring orbits the Moon")
    assert video.name == f"{prompt_id}.mp4" and read_video(video).shape == (5, 32, 64, 3)
    # A word the tiny model does not know is named (the render goes on with the rest); known words are not.
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: prompt {prompt_id}: the model does not know 'Moon'"], result.stderr


def test_batch_run_names_the_words_the_model_does_not_know_before_it_starts(env, tmp_path):
    from pixelwizard.prompts import prompt_id_for_text

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moves right\na purple unicorn moves right\n")
    sets = [arg for pair in (("--set", "num_frames=5"), ("--set", "anchor_steps=1"), ("--set", "detail_steps=1"))
            for arg in pair]
    result = run({**env, "PIXELWIZARD_HOME": str(tmp_path / "home")}, "batch", "run", str(prompts), *sets, "--out",
                 str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    expected = f"warning: prompt {prompt_id_for_text('a purple unicorn moves right')}: the model does not know 'unicorn'"
    assert warnings == [expected], result.stderr


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
    "missing model, with a device": (["x", "--device", "cuda:0", "--model", "/nonexistent/model"], "does not exist"),
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
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "settings", "message"),
    [
        (["render", "x", "--out", "{file}"], {}, "exists and is not a folder"),
        (["cache", "ls"], {"PIXELWIZARD_STORE_URL": "ftp://host/path"}, "ftp"),
        (["cache", "gc"], {"PIXELWIZARD_STORE_URL": "ftp://host/path"}, "ftp"),
        (["batch", "submit", "{file}", "--preset", "8k"], {"PREFECT_API_URL": "http://127.0.0.1:9/api"}, "unknown preset"),
        (["batch", "submit", "{file}"], {"PREFECT_API_URL": "http://127.0.0.1:9/api"}, "cannot start nightly-batch"),
        (["batch", "status", "9223372036854775808"], {}, "no batch 9223372036854775808"),
        (["batch", "cancel", "99999999999999999999"], {}, "no batch 99999999999999999999"),
        (["batch", "resubmit", "9223372036854775808"], {"PREFECT_API_URL": "http://127.0.0.1:9/api"},
         "no batch 9223372036854775808"),
        (["jobs", "retry", "9223372036854775808"], {}, "no job 9223372036854775808"),
        (["batch", "run", "{file}", "--seed", "9223372036854775808"], {}, "--seed must be a non-negative integer"),
        (["batch", "status", "abc"], {}, "error: Invalid value for 'batch_id': Input should be a valid integer"),
        (["batch", "run", "{file}", "--workers", "0"], {}, "error: Invalid value for '--workers'"),
        (["render", "x", "--steps", "1.5"], {}, "error: Invalid value for '--steps'"),
        (["render", "x", "--seed", "-1"], {}, "--seed must be a non-negative integer below 2**63, got -1"),
        (["render", "x", "--bogus"], {}, "error: No such option: --bogus"),
        (["nosuch"], {}, "error: No such command 'nosuch'."),
    ],
)
def test_more_bad_input_is_one_line(env, tmp_path, args, settings, message):
    """A file where a folder belongs, an unusable store URL, a submit with a bad preset or no server behind the API URL
    (exit 1: the input is fine, the server is not there), ids and seeds beyond the database's 64-bit integers, and
    what the command line parser refuses (a value of the wrong type or out of range, an unknown option or command)."""
    existing = tmp_path / "prompts.txt"
    existing.write_text("a red circle moves right\n")
    result = run({**env, **settings}, *[a.format(file=existing) for a in args], timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    code = 1 if message.startswith("cannot start") else 2
    assert result.returncode == code and len(lines) == 1 and message in lines[0], result.stderr
    assert existing.read_text() == "a red circle moves right\n"


@pytest.mark.parametrize("command", [["render", "a red circle moves right"], ["batch", "run", "{file}"]])
def test_an_out_folder_that_cannot_be_written_is_refused_before_any_render(env, tmp_path, locked_folder, command):
    """render had rendered every prompt, then failed each on writing its video (exit 1)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moves right\n")
    result = run(env, *[a.format(file=prompts) for a in command], "--out", str(locked_folder), timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines == [f"error: --out {locked_folder} is not writable"], result.stderr


@pytest.fixture
def broken_bundle(tmp_path):
    """A copy of the shipped bundle, to be damaged by a test."""
    import shutil

    from pixelwizard.default_model import default_model_path

    return shutil.copytree(default_model_path(), tmp_path / "model")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("index", "not a JSON object"),
        ("config", "transformer/ has no config"),
        ("weights", "cannot be loaded"),
        ("empty weights", "cannot be loaded: Error while deserializing header"),
        ("config that the weights do not fit", "cannot be loaded"),
        ("a file", "is not a folder"),
    ],
)
def test_a_damaged_model_folder_is_one_line_exit_2(env, tmp_path, broken_bundle, damage, message):
    import json
    import shutil

    model = broken_bundle
    if damage == "index":
        (broken_bundle / "model_index.json").write_text("5")
    elif damage == "config":
        (broken_bundle / "transformer" / "config.json").unlink()
    elif damage == "weights":
        weights = broken_bundle / "vae" / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:5000])
    elif damage == "empty weights":
        (broken_bundle / "text_encoder" / "model.safetensors").write_bytes(b"")
    elif damage == "config that the weights do not fit":
        config = broken_bundle / "transformer" / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "num_layers": 9}))
    else:
        shutil.rmtree(broken_bundle)
        model.write_text("not a bundle")
    out = tmp_path / "out"
    result = run(env, "render", "x", "--model", str(model), "--out", str(out))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()  # made only once the model has loaded


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "--prompts", "{dir}/prompts[v2].txt"], "prompts[v2].txt: no such file"),
        (["render", "x", "--out", "{dir}/a-file/sub"], "a-file is not a folder"),
    ],
)
def test_errors_name_paths_as_given(env, tmp_path, args, message):
    """Square brackets in a path are printed, not read as markup; an --out that cannot be made is one line."""
    (tmp_path / "a-file").write_text("")
    result = run(env, *[a.format(dir=tmp_path) for a in args], timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batch", "list", "--limit", "-1"], "Invalid value for '--limit': Input should be greater than or equal to 1"),
        (["batch", "submit", "{dir}/p.txt", "--deployment", "nope"],
         "--deployment must be FLOW/DEPLOYMENT (as 'prefect deployment ls' shows it), got 'nope'"),
        (["batch", "submit", "{dir}/missing.txt"], "missing.txt: no such file"),
        (["batch", "submit", "{dir}/bad.jsonl"], "bad.jsonl:2:"),
        (["cache", "ls", "video"], "unknown cache area 'video'; choose anchors, details, videos, quarantine"),
    ],
)
def test_bad_batch_options_are_one_line_exit_2(env, tmp_path, args, message):
    """Checked before any database or server is reached (on PostgreSQL a negative --limit was a traceback; a submit
    of a missing prompt file was accepted and failed on a worker; `cache ls` of a misspelt area listed nothing, exit
    0)."""
    (tmp_path / "p.txt").write_text("a red circle\n")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "prompt": "a red circle"}\n{"prompt": \n')
    result = run(env, *[a.format(dir=tmp_path) for a in args], timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_one_prompt_failing_without_a_message_does_not_stop_the_others(tmp_path, monkeypatch):
    """Fault injection (a mock, no real part fails on demand): the first prompt's render raises MemoryError()."""
    from typer.testing import CliRunner

    from cli.main import app
    from pixelwizard.pipeline import PixelWizardPipeline

    real_call = PixelWizardPipeline.__call__

    def first_fails(self, prompt, **kwargs):
        if prompt.startswith("first"):
            raise MemoryError()
        return real_call(self, prompt, **kwargs)

    monkeypatch.setattr(PixelWizardPipeline, "__call__", first_fails)
    prompts = tmp_path / "p.txt"
    prompts.write_text("first a red circle\nsecond a blue square\n")
    out = tmp_path / "o[/x]"
    result = CliRunner().invoke(app, ["render", "--prompts", str(prompts), "--out", str(out), "--width", "64",
                                      "--height", "32", "--frames", "5", "--anchor-steps", "2", "--device", "cpu"])
    assert result.exit_code == 1 and "1 of 2 prompt(s) failed" in result.stderr, result.output
    assert "MemoryError" in result.output
    [video] = out.iterdir()
    assert video.name.startswith("second-a-blue-square")
