"""The benchmark suite stays runnable: every script end to end at tiny sizes on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


def test_suite_runs_at_tiny_sizes_and_reports(tmp_path):
    run("benchmarks.ceilings", "--tiny", "--device", "cpu", "--out", str(tmp_path / "ceilings.json"))
    run("benchmarks.transformer", "--tiny", "--device", "cpu", "--sizes", "anchor,2k", "--backends", "",
        "--out", str(tmp_path / "transformer.json"))
    run("benchmarks.pipeline", "--tiny", "--device", "cpu", "--presets", "2k", "--detail-cfg", "sequential",
        "--skip-encode", "--out", str(tmp_path / "pipeline.json"))
    run("benchmarks.end_to_end", "--tiny", "--device", "cpu", "--presets", "2k", "--out", str(tmp_path / "end_to_end.json"))
    run("benchmarks.report", "--results", str(tmp_path), "--out", str(tmp_path / "results.md"))
    transformer = json.loads((tmp_path / "transformer.json").read_text())
    assert [row["size"] for row in transformer["sizes"]] == ["anchor", "2k"]
    report = (tmp_path / "results.md").read_text()
    assert "ours/stock" in report and "end to end" in report and "### Targets" in report
    render = json.loads((tmp_path / "end_to_end.json").read_text())["renders"][0]
    assert list(render["stages"]) == ["text", "anchor", "detail", "decode", "encode"]
    assert render["video_checked"] == {"width": 256, "height": 128, "frames": 9}  # the MP4 decoded back
    assert render["seconds"] >= sum(stage["seconds"] for stage in render["stages"].values()) * 0.99
    assert "Uninterrupted renders" in report and "256x128, 9 frames" in report


def test_training_step_benchmark_times_both_step_kinds_and_profiles(tmp_path):
    run("benchmarks.training_step", "--tiny", "--device", "cpu", "--modes", "off", "--out", str(tmp_path))
    result = json.loads((tmp_path / "training_step_tiny.json").read_text())
    assert [(r["compile"], r["step"]) for r in result["rows"]] == [("off", "fm"), ("off", "sc")]
    assert all(r["steps_per_s"] > 0 for r in result["rows"])
    assert "Name" in result["profile_eager"] and "| off | sc |" in (tmp_path / "training_step_tiny.md").read_text()
