"""The quality-table script (pixelwizard/training/quality.py) on the shipped tiny bundle, CPU, one clip."""

import json
import math
import shutil
import subprocess
import sys

import pytest

from pixelwizard.default_model import default_model_path
from pixelwizard.training.quality import main


def test_detail_only_table_on_the_random_cells_world(tmp_path):
    variants = tmp_path / "variants"  # empty: only the bundle's own (shortcut) detail model is measured
    variants.mkdir()
    out = tmp_path / "docs" / "quality-test.md"
    main(["--model", str(default_model_path()), "--variants", str(variants), "--out", str(out), "--clips", "1",
          "--steps", "1,2", "--data", "synthetic-random-cells", "--release-factor", "--detail-only"])
    report = out.read_text()
    raw = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["model"], r["steps"]): r for r in raw["detail"]}
    # --model names the bundle, so its model is labelled as the --model's, not as the shipped one
    assert set(rows) == {("ground truth", "-"), ("VAE reconstruction", "-"), ("anchor only, upsampled", "-"),
                         ("shortcut (--model)", 1), ("shortcut (--model)", 2)}
    assert math.isinf(rows[("ground truth", "-")]["PSNR"]) and rows[("ground truth", "-")]["SSIM"] == 1
    two = rows[("shortcut (--model)", 2)]
    assert 10 < two["PSNR"] < 60 and two["HD-MSE"] > 0
    # HD-FD: the truth's own detail distribution is at distance 0, a render's is not
    assert rows[("ground truth", "-")]["HD-FD"] == pytest.approx(0, abs=1e-6) and two["HD-FD"] > 0.01
    assert (f"| shortcut (--model) | 2 | {two['PSNR']:.2f} | {two['SSIM']:.4f} | {two['HD-MSE']:.3g} | {two['HD-FD']:.3g} |"
            in report)  # the table shows the JSON
    assert "random background cells" in report and "downsample factor [8, 16]" in report
    assert "## 2." not in report and raw["adherence"] is None
    assert (out.parent / "samples" / "quality-test-detail-comparison.png").stat().st_size > 0
    assert "samples/quality-test-detail-comparison.png" in report


def test_shortcut_against_flow_matching_on_the_same_clips(tmp_path):
    """Two clips, one step: the paired differences are those of the table's own rows, with resampled intervals."""
    variants = tmp_path / "variants"
    variants.mkdir()  # flow matching only: the bundle's own weights, called with dt = 0 as such a model is
    shutil.copytree(default_model_path() / "detail_transformer", variants / "fm_only")
    out = tmp_path / "docs" / "q.md"
    main(["--variants", str(variants), "--out", str(out), "--clips", "2", "--steps", "1", "--release-factor",
          "--detail-only"])
    raw = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["model"], r["steps"]): r for r in raw["detail"]}
    first, second = rows[("shortcut (shipped)", 1)], rows[("flow matching only", 1)]
    [gap] = raw["differences"]
    assert (gap["first"], gap["second"], gap["steps"]) == ("shortcut (shipped)", "flow matching only", 1)
    assert gap["PSNR"] == pytest.approx(first["PSNR"] - second["PSNR"]) and gap["PSNR"] != 0  # dt 1 against dt 0
    assert gap["HD-FD"] == pytest.approx(first["HD-FD"] - second["HD-FD"])
    (p_low, p_high), (f_low, f_high) = gap["PSNR interval"], gap["HD-FD interval"]
    assert p_low <= p_high and f_low <= f_high and (p_low, p_high) != (f_low, f_high)
    assert (f"| 1 | {gap['PSNR']:+.2f} ({p_low:+.2f} to {p_high:+.2f}) | {gap['HD-FD']:+.3g} ({f_low:+.3g} to "
            f"{f_high:+.3g}) |") in out.read_text()


def test_a_missing_variants_folder_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pixelwizard.training.quality", "--variants", str(tmp_path / "none"),
                             "--out", str(tmp_path / "q.md")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == f"error: variants folder {tmp_path / 'none'} does not exist"
    assert not (tmp_path / "q.md").exists()


def earlier_run(tmp_path):
    """An earlier run's JSON (table 1 only, as a --detail-from source) and its contact sheet beside docs/."""
    rows = [{"model": "ground truth", "steps": "-", "PSNR": float("inf"), "SSIM": 1.0, "HD-MSE": 0.0307, "flicker": 0.0091},
            {"model": "shortcut (shipped)", "steps": 4, "PSNR": 23.85, "SSIM": 0.8345, "HD-MSE": 0.0258, "flicker": 0.00919}]
    record = {"detail_command": "python -m pixelwizard.training.quality --variants v --out docs/quality.md --clips 10",
              "detail_settings": "Detail table: 10 clips, anchors with SPEC.md's downsample factor [8, 16].",
              "sheets": {"detail sheet": ["detail-comparison.png"], "detail rows": ["truth, shortcut (shipped), 4 steps"]},
              "detail": rows}
    (tmp_path / "docs" / "samples").mkdir(parents=True)
    (tmp_path / "docs" / "samples" / "detail-comparison.png").write_bytes(b"earlier sheet")
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(record))
    return path, record


def test_table_1_copied_from_an_earlier_run_and_text_to_video_measured(tmp_path):
    """--detail-from: table 1, how it was measured and its sheet come from the earlier run; tables 2 and 3 are measured."""
    earlier, record = earlier_run(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moves right over a plain blue background\n")
    out = tmp_path / "docs" / "quality.md"
    other = tmp_path / "quality-grain.json"  # another world's detail table (--also)
    other_rows = [{**record["detail"][1], "model": "flow matching only", "HD-MSE": 0.0123},
                  {**record["detail"][1], "model": "shortcut (--model)", "HD-FD": 1.25}]  # a run that measured HD-FD
    differences = [{"first": "shortcut (--model)", "second": "flow matching only", "steps": 4, "PSNR": -0.5,
                    "PSNR interval": [-0.75, -0.25], "HD-FD": -1.5, "HD-FD interval": [-2.25, -0.5], "level": 0.9,
                    "resamples": 1000}]
    other.write_text(json.dumps({**record, "detail": other_rows, "detail_settings": "Detail table: 3 clips of grain.",
                                 "differences": differences,
                                 "sheets": {"detail sheet": ["grain.png"], "detail rows": ["truth, grain rows"]}}))
    (tmp_path / "docs" / "samples" / "grain.png").write_bytes(b"grain sheet")
    main(["--detail-from", str(earlier), "--out", str(out), "--prompts", "1", "--samples", str(prompts),
          "--compare-guidance", "1", "--also", str(other)])
    report = out.read_text()
    section = report[report.index("## 4. Detail stage on other worlds"):]  # the last section, after the samples
    assert "## 3. README sample prompts" in report[: report.index("## 4.")]
    assert "### `quality-grain.json`" in section and "Detail table: 3 clips of grain." in section
    assert "| flow matching only | 4 | 23.85 | 0.8345 | 0.0123 | - |" in section and "0.0123" not in report[: report.index("## 4.")]
    assert "| shortcut (--model) | 4 | 23.85 | 0.8345 | 0.0258 | 1.25 |" in section
    assert "shortcut (--model) minus flow matching only on the same clips" in section  # the run's differences, kept
    assert "central 90% of 1000 resamples" in section and "| 4 | -0.50 (-0.75 to -0.25) | -1.5 (-2.25 to -0.5) |" in section
    assert "minus" not in report[: report.index("## 4.")]  # table 1's run had none
    assert "| shortcut (shipped) | 4 | 23.85 | 0.8345 | 0.0258 | - |" in report  # table 1 from a run before HD-FD
    assert "rows are: truth, grain rows" in section and "(samples/grain.png)" in section
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["detail"] == record["detail"]  # copied as they were, with how they were measured
    for key in ("detail_command", "detail_settings", "sheets"):
        assert raw[key] == record[key], key
    assert "| shortcut (shipped) | 4 | 23.85 | 0.8345 | 0.0258 |" in report and f"Copied from `{earlier}`" in report
    assert f"Its settings: {record['detail_settings']} It was measured with `{record['detail_command']}`." in report
    assert "Detail table: copied from an earlier run" in report and "text-to-video: 1 prompts" in report
    assert "rows are: truth, shortcut (shipped), 4 steps" in report
    assert (out.parent / "samples" / "detail-comparison.png").read_bytes() == b"earlier sheet"  # not redrawn
    assert set(raw["adherence"]) == {"pipeline, detail CFG 1", "ground truth clips"}
    assert raw["adherence"]["ground truth clips"]["all three"] == 1.0  # the analysis reads the real clip right
    assert (out.parent / "samples" / "heldout-text-to-video.png").stat().st_size > 0


def test_the_text_to_video_prompts_come_from_the_given_seed():
    from pixelwizard.bundle import load_bundle
    from pixelwizard.default_model import default_model_path
    from pixelwizard.presets import get_preset
    from pixelwizard.training.datasets import SyntheticClips
    from pixelwizard.training.quality import EVAL_SEED, adherence_table

    pipe = load_bundle(default_model_path())
    pipe.set_progress_bar_config(disable=True)
    captions = {}
    for seed in (EVAL_SEED + 1, 7000):
        _, examples = adherence_table(pipe, get_preset("tiny"), 1, [1.0], lambda _: None, seed=seed)
        captions[seed] = examples[0][0]
        assert captions[seed] == SyntheticClips(seed, 1, 17, 448, 256, "heldout").caption(0)
    assert captions[EVAL_SEED + 1] != captions[7000]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--detail-from", "{missing}"], "error: {missing} does not exist"),
        (["--detail-from", "{folder}"], "error: {folder}: cannot be read (Is a directory)"),
        (["--detail-from", "{bad}"], "error: {bad}: not a quality table's JSON (KeyError: 'PSNR')"),
        (["--detail-from", "{text_metric}"], "error: {text_metric}: not a quality table's JSON (TypeError: the metrics"),
        (["--detail-from", "{no_sheet}"], "error: {no_sheet}: its contact sheet"),
        (["--detail-from", "{good}", "--detail-only"], "error: --detail-from copies table 1, and --detail-only makes nothing else"),
        (["--detail-from", "{good}", "--variants", "{folder}"], "error: --variants names the models table 1 measures"),
        ([], "error: --variants is needed to measure table 1 (or copy it with --detail-from)"),
        (["--detail-from", "{good}", "--also", "{missing}"], "error: {missing} does not exist"),
        (["--detail-from", "{good}", "--also", "{no_sheet}"], "error: {no_sheet}: its contact sheet"),
        (["--detail-from", "{good}", "--prompts", "0"], "error: --prompts must be at least 1, got 0"),
        (["--variants", "{folder}", "--clips", "-1"], "error: --clips must be at least 1, got -1"),
        (["--variants", "{folder}", "--threads", "0"], "error: --threads must be at least 1, got 0"),
        (["--variants", "{folder}", "--steps", "1,x"], "error: bad --steps '1,x'"),
        (["--variants", "{folder}", "--steps", "0,4"], "error: --steps '0,4' must name step counts of at least 1"),
    ],
)
def test_bad_table_sources_are_one_line_errors(tmp_path, args, message):
    good, record = earlier_run(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"detail": [{"model": "x"}]}')
    text_metric = tmp_path / "text.json"
    text_metric.write_text(json.dumps({**record, "detail": [{**record["detail"][1], "PSNR": "high"}]}))
    no_sheet = tmp_path / "no-sheet.json"
    no_sheet.write_text(json.dumps({**record, "sheets": {"detail sheet": ["gone.png"], "detail rows": ["x"]}}))
    fill = dict(missing=tmp_path / "missing.json", folder=tmp_path, bad=bad, text_metric=text_metric, no_sheet=no_sheet,
                good=good)
    args = [a.format(**fill) for a in args]
    out = tmp_path / "docs" / "q.md"
    result = subprocess.run([sys.executable, "-m", "pixelwizard.training.quality", *args, "--out", str(out)],
                            capture_output=True, text=True)
    error = result.stderr.strip()
    assert result.returncode == 2 and "\n" not in error and error.startswith(message.format(**fill)), result.stderr
    assert not out.exists() and not (tmp_path / "docs" / "samples" / "heldout-text-to-video.png").exists()
