"""The quality-table script (pixelwizard/training/quality.py) on the shipped tiny bundle, CPU, one clip."""

import json
import math
import subprocess
import sys

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
