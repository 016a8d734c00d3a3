"""The quality-table script (pixelwizard/training/quality.py) on the shipped tiny bundle, CPU, one clip."""

import json
import math
import subprocess
import sys

import pytest

from pixelwizard.training.quality import main


def test_detail_only_table_on_the_random_cells_world(tmp_path):
    variants = tmp_path / "variants"  # empty: only the bundle's own (shortcut) detail model is measured
    variants.mkdir()
    out = tmp_path / "docs" / "quality-test.md"
    main(["--variants", str(variants), "--out", str(out), "--clips", "1", "--steps", "1,2",
          "--data", "synthetic-random-cells", "--release-factor", "--detail-only"])
    report = out.read_text()
    raw = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["model"], r["steps"]): r for r in raw["detail"]}
    assert set(rows) == {("ground truth", "-"), ("VAE reconstruction", "-"), ("anchor only, upsampled", "-"),
                         ("shortcut (shipped)", 1), ("shortcut (shipped)", 2)}
    assert math.isinf(rows[("ground truth", "-")]["PSNR"]) and rows[("ground truth", "-")]["SSIM"] == 1
    two = rows[("shortcut (shipped)", 2)]
    assert 10 < two["PSNR"] < 60 and two["HD-MSE"] > 0
    assert f"| shortcut (shipped) | 2 | {two['PSNR']:.2f} | {two['SSIM']:.4f} |" in report  # the table shows the JSON
    assert "random background cells" in report and "downsample factor [8, 16]" in report
    assert "## 2." not in report and raw["adherence"] is None
    assert (out.parent / "samples" / "quality-test-detail-comparison.png").stat().st_size > 0
    assert "samples/quality-test-detail-comparison.png" in report


def test_a_missing_variants_folder_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pixelwizard.training.quality", "--variants", str(tmp_path / "none"),
                             "--out", str(tmp_path / "q.md")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == f"error: variants folder {tmp_path / 'none'} does not exist"
    assert not (tmp_path / "q.md").exists()


def test_table_1_copied_from_an_earlier_run_and_text_to_video_measured(tmp_path):
    """--detail-from: table 1 comes from the earlier JSON as it was; tables 2 and 3 are measured on the bundle."""
    earlier = tmp_path / "earlier.json"
    rows = [{"model": "ground truth", "steps": "-", "PSNR": float("inf"), "SSIM": 1.0, "HD-MSE": 0.0307, "flicker": 0.0091},
            {"model": "shortcut (shipped)", "steps": 4, "PSNR": 23.85, "SSIM": 0.8345, "HD-MSE": 0.0258, "flicker": 0.00919}]
    note = "Preset `tiny` (...). Detail table: 10 clips, anchors with SPEC.md's downsample factor [8, 16]; text-to-video: 40 prompts."
    measured_by = "python -m pixelwizard.training.quality --variants v --out docs/quality.md --clips 10"
    earlier.write_text(json.dumps({"command": measured_by, "detail": rows, "settings": {"note": note}}))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moves right over a plain blue background\n")
    out = tmp_path / "docs" / "quality.md"
    main(["--detail-from", str(earlier), "--out", str(out), "--prompts", "1", "--samples", str(prompts),
          "--compare-guidance", "1"])
    report = out.read_text()
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["detail"] == rows and raw["command"] == measured_by  # copied as they were, with what measured them
    assert f"It was measured with `{measured_by}`." in report
    assert "| shortcut (shipped) | 4 | 23.85 | 0.8345 | 0.0258 |" in report and f"Copied from `{earlier}`" in report
    assert "10 clips" in report and "text-to-video: 1 prompts" in report
    assert set(raw["adherence"]) == {"pipeline, detail CFG 1", "ground truth clips"}
    assert raw["adherence"]["ground truth clips"]["all three"] == 1.0  # the analysis reads the real clip right
    assert (out.parent / "samples" / "heldout-text-to-video.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--detail-from", "{missing}"], "error: {missing} does not exist"),
        (["--detail-from", "{bad}"], "error: {bad}: not a quality table's JSON"),
        (["--detail-from", "{bad}", "--detail-only"], "error: --detail-from copies table 1, and --detail-only makes nothing else"),
        ([], "error: --variants is needed to measure table 1 (or copy it with --detail-from)"),
    ],
)
def test_bad_table_sources_are_one_line_errors(tmp_path, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text('{"detail": [{"model": "x"}]}')
    fill = dict(missing=tmp_path / "missing.json", bad=bad)
    args = [a.format(**fill) for a in args]
    result = subprocess.run([sys.executable, "-m", "pixelwizard.training.quality", *args, "--out", str(tmp_path / "q.md")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().startswith(message.format(**fill)), result.stderr
    assert not (tmp_path / "q.md").exists()
