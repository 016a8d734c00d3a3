"""Markdown tables (and the target checks) from the suite's JSON files.

The native baseline is derived here: the base model sampling the 2K/4K latent natively in 50
steps with CFG is 100 stock forwards at that size, each timed in transformer.json, plus the same
text, decode and encode stages as the PixelWizard render (pipeline.json). It is extrapolated, not
run end to end, and the tables say so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NATIVE_STEPS = 50
TARGET_RATIO = 1.05
TARGET_2K_SECONDS = 90.0
TARGET_SPEEDUP = 10.0


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _f(value: Any, digits: int = 1) -> str:
    if isinstance(value, str):
        return value if len(value) <= 80 else value[:77] + "..."
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return lines + [""]


def environment_lines(env: dict[str, Any]) -> list[str]:
    keys = ("gpu", "gpu_memory_gb", "torch", "cuda", "cudnn", "diffusers", "transformers", "python", "date")
    return ["Environment: " + ", ".join(f"{k} {env[k]}" for k in keys if env.get(k) is not None), ""]


def ceilings_lines(data: dict[str, Any]) -> list[str]:
    lines = ["### Ceilings of the card (same session)", ""]
    gemm = data["gemm"]
    rows = [[f"bf16 GEMM {gemm['n']}^3", "-", gemm["tflops"]]]
    for row in data["sdpa"]:
        rows.append([f"SDPA {row['backend']}", row["tokens"], row.get("tflops", row.get("error", "-"))])
    return lines + _table(["kernel", "tokens (24 heads x 128)", "TFLOP/s"], rows)


def transformer_lines(data: dict[str, Any]) -> list[str]:
    lines = ["### Transformer forward, B=1: ours (detail model, with dt and anchor) vs stock diffusers", ""]
    rows = []
    for r in data["sizes"]:
        rows.append([r["size"], f"{r['tokens']:,}", r["tflop"], _f(r["stock"]["seconds"], 3), _f(r["ours"]["seconds"], 3),
                     _f(r["ratio"], 3), r["stock"]["tflops"], r["ours"]["tflops"], r["stock"]["peak_gb"],
                     r["ours"]["peak_gb"]])
    lines += _table(["size", "tokens", "TFLOP/fwd", "stock s", "ours s", "ours/stock", "stock TFLOP/s",
                     "ours TFLOP/s", "stock peak GB", "ours peak GB"], rows)
    if data.get("backends"):
        lines += ["Attention backends (ours; default row above is diffusers' `native`, i.e. PyTorch's SDPA choice):", ""]
        rows = [[b["backend"], b.get("size", "-"), _f(b.get("seconds"), 3), b.get("tflops", b.get("error", "-")),
                 b.get("peak_gb")] for b in data["backends"]]
        lines += _table(["backend", "size", "seconds", "TFLOP/s", "peak GB"], rows)
    if data.get("compile"):
        c = data["compile"]
        if "error" in c:
            lines += [f"Regional torch.compile: failed ({c['error']}).", ""]
        else:
            lines += [f"Regional torch.compile at the anchor size: eager {c['eager_seconds']:.4f} s, compiled "
                      f"{c['compiled_seconds']:.4f} s (x{c['speedup']:.2f}); first call {c['first_call_seconds']:.0f} s.", ""]
    return lines


def decode_lines(data: dict[str, Any]) -> list[str]:
    lines = [f"### VAE decode variants: one whole 2K width chunk, latent {data['latent']} (bf16)", ""]
    rows = [[name, v["seconds"], v["peak_gb"]] for name, v in data["variants"].items()]
    return lines + _table(["Conv3d weight layout", "seconds", "peak GB"], rows)


def merge_runs(first: dict[str, Any], later: dict[str, Any] | None) -> dict[str, Any]:
    """One view of two pipeline runs: the later run's text and anchor rows replace the first's,
    its detail and decode rows join them; every row keeps the number of its run."""
    merged = json.loads(json.dumps(first))
    for row in [*merged["anchor"], *[r for p in merged["presets"].values() for r in p["detail"] + p["decode"]]]:
        row["run"] = 1
    merged["text"]["run"] = 1
    if later is None:
        return merged
    merged["text"] = {**later["text"], "run": 2}
    merged["anchor"] = [{**row, "run": 2} for row in later["anchor"]]
    for name, rows in later["presets"].items():
        target = merged["presets"].setdefault(name, {"preset": name, "detail": [], "decode": []})
        target["detail"] += [{**row, "run": 2} for row in rows.get("detail", [])]
        target["decode"] = [{**row, "run": 2} for row in rows.get("decode", [])] + target["decode"]
    return merged


def _planned(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of the default plan (sequential CFG) if measured, else the fastest measured one."""
    ok = [r for r in rows if "seconds" in r]
    planned = [r for r in ok if not r.get("batch_cfg", False)]
    return min(planned or ok, key=lambda r: r["seconds"]) if ok else None


def _decode_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole-chunk measurement when there is one, else the fastest extrapolated one."""
    measured = [r for r in rows if not r.get("extrapolated", True) and not r["cudnn_benchmark"]]
    return measured[0] if measured else min(rows, key=lambda r: r["seconds"])


def preset_summary(name: str, pipe: dict[str, Any], transformer: dict[str, Any] | None) -> dict[str, Any]:
    """Stage times of one preset's render, its native baseline and the checks against the targets."""
    rows = pipe["presets"][name]
    anchor = _planned(pipe["anchor"])
    detail = _planned(rows["detail"])
    decode = _decode_row(rows["decode"])
    encode = rows.get("encode", {}).get("seconds", 0.0)
    text = pipe["text"]["seconds"]
    summary: dict[str, Any] = {"preset": name, "text": text, "anchor": anchor, "detail": detail, "decode": decode,
                               "encode": encode}
    if detail is None:
        return summary
    summary["total"] = text + anchor["seconds"] + detail["seconds"] + decode["seconds"] + encode
    summary["peak_gb"] = max(x for x in (pipe["text"]["peak_gb"], anchor["peak_gb"], detail["peak_gb"],
                                         decode["peak_gb"]) if x is not None) if pipe["text"]["peak_gb"] else None
    sizes = {r["size"]: r for r in (transformer or {}).get("sizes", [])}
    if name in sizes:
        native_sampling = NATIVE_STEPS * 2 * sizes[name]["stock"]["seconds"]
        summary["native_sampling"] = native_sampling
        summary["native_total"] = text + native_sampling + decode["seconds"] + encode
        summary["speedup"] = summary["native_total"] / summary["total"]
        summary["sampling_speedup"] = native_sampling / (anchor["seconds"] + detail["seconds"])
    return summary


def pipeline_lines(pipe: dict[str, Any], transformer: dict[str, Any] | None) -> tuple[list[str], list[dict]]:
    lines = [f"### Whole pipeline, random weights, real sizes (offload `{pipe['offload']}`, attention "
             f"`{pipe.get('attention_backend') or 'native'}`)", ""]
    lines += ["Rows name their run (r1, r2: two sessions on the same kind of card). End to end = text + anchor + "
              "detail + decode + encode under the default plan (sequential CFG; a whole-chunk decode where measured).",
              ""]
    summaries = []
    rows = []
    for name in pipe["presets"]:
        s = preset_summary(name, pipe, transformer)
        summaries.append(s)
        for d in pipe["presets"][name]["detail"]:
            mode = "batched" if d["batch_cfg"] else "sequential"
            if "error" in d:
                rows.append([name, f"detail, CFG {mode}", "-", d["error"], "-"])
            else:
                rows.append([name, f"detail, CFG {mode}", d["seconds"],
                             f"r{d['run']}: 1 step timed ({d['seconds_per_step']:.1f} s) x {d['steps']} + model move "
                             f"{d['move_seconds']:.1f} s", d["peak_gb"]])
        for d in pipe["presets"][name]["decode"]:
            how = (f"r{d['run']}: 1 of {d['chunks']} chunks decoded whole, x {d['chunks']}" if not d["extrapolated"] else
                   f"r{d['run']}: 1 of {d['chunks']} chunks over 2 and 4 latent frames, read at 31, x {d['chunks']}")
            rows.append([name, f"decode{' (cudnn.benchmark)' if d['cudnn_benchmark'] else ''}", d["seconds"], how,
                         d["peak_gb"]])
        if "encode" in pipe["presets"][name]:
            e = pipe["presets"][name]["encode"]
            rows.append([name, "encode (h264, CPU)", e["seconds"], f"synthetic {e['frames']}-frame clip", "-"])
        if "total" in s:
            rows.append([name, "**end to end**", s["total"], "text + anchor + detail + decode + encode (default plan)",
                         s.get("peak_gb")])
    head = [["all", "text", pipe["text"]["seconds"], f"r{pipe['text']['run']}: 2 x 512 tokens, model move included",
             pipe["text"]["peak_gb"]]]
    head += [["all", f"anchor, CFG {'batched' if r['batch_cfg'] else 'sequential'}", r["seconds"],
              f"r{r['run']}: 2 and 5 steps timed ({r['seconds_per_step']:.3f} s/step), read at {r['steps']}",
              r["peak_gb"]] for r in pipe["anchor"]]
    lines += _table(["preset", "stage", "seconds", "how", "peak GB"], head + rows)
    compiled = pipe.get("compiled")
    if compiled and "error" not in compiled:
        lines += [f"Regional torch.compile (r1): anchor {compiled['anchor']['seconds_per_step']:.3f} s/step (CFG batched), "
                  f"first call {compiled['anchor_first_call_seconds']:.1f} s; 2K detail step (CFG batched) "
                  f"{compiled['detail_seconds_per_step']:.2f} s, first call {compiled['detail_first_call_seconds']:.1f} s.",
                  ""]
    native = [[s["preset"], s["total"], s["native_sampling"], s["native_total"], s["sampling_speedup"], s["speedup"]]
              for s in summaries if "speedup" in s]
    if native:
        lines += ["Native baseline: the base model sampling the same latent in 50 steps with CFG = 100 stock forwards "
                  "(transformer table) + the same text, decode and encode. Extrapolated from timed forwards.", ""]
        lines += _table(["preset", "PixelWizard s", "native sampling s", "native end to end s", "sampling speed-up",
                         "end-to-end speed-up"], native)
    return lines, summaries


def load_end_to_end(folder: Path) -> list[dict[str, Any]]:
    """Every uninterrupted render in ``end_to_end*.json``, each with the device it ran on."""
    renders = []
    for path in sorted(folder.glob("end_to_end*.json")):
        data = json.loads(path.read_text())
        for render in data["renders"]:
            renders.append({**render, "gpu": data["environment"].get("gpu") or "cpu",
                            "gpu_memory_gb": data["environment"].get("gpu_memory_gb"), "file": path.name})
    return renders


def end_to_end_native(render: dict[str, Any], transformer: dict[str, Any] | None) -> dict[str, float] | None:
    """Native 50-step baseline for a measured render: its own text, decode and encode + 100 stock forwards."""
    sizes = {r["size"]: r for r in (transformer or {}).get("sizes", [])}
    if render["preset"] not in sizes:
        return None
    st = render["stages"]
    sampling = NATIVE_STEPS * 2 * sizes[render["preset"]]["stock"]["seconds"]
    total = st["text"]["seconds"] + sampling + st["decode"]["seconds"] + st["encode"]["seconds"]
    return {"native_total": total, "speedup": total / render["seconds"],
            "sampling_speedup": sampling / (st["anchor"]["seconds"] + st["detail"]["seconds"])}


def end_to_end_lines(renders: list[dict[str, Any]], transformer: dict[str, Any] | None) -> list[str]:
    lines = ["### Uninterrupted renders (`benchmarks/end_to_end.py`)", "",
             "One call of the pipeline in a fresh process (nothing warmed up), default plan, then the MP4 encoded "
             "and decoded back to check its size and frame count. Seconds per stage (peak GB).", ""]
    rows = []
    for r in renders:
        st = r["stages"]
        cells = [f"{st[k]['seconds']:.1f} ({_f(st[k]['peak_gb'])})" for k in ("text", "anchor", "detail", "decode")]
        native = end_to_end_native(r, transformer)
        check = r["video_checked"]
        rows.append([r["gpu"], r["preset"], r["run"], *cells, _f(st["encode"]["seconds"]), _f(r["seconds"]),
                     _f(r["peak_gb"]), f"{check['width']}x{check['height']}, {check['frames']} frames",
                     _f(native["speedup"]) if native else "-"])
    lines += _table(["device", "preset", "run", "text", "anchor", "detail", "decode", "encode (CPU)", "end to end s",
                     "peak GB", "MP4 decoded", "speed-up vs native"], rows)
    return lines + ["Speed-up vs native: the render's own text, decode and encode plus 100 stock forwards of the "
                    "transformer table (timed on that table's card), over the render's measured time.", ""]


def target_lines(transformer: dict[str, Any] | None, summaries: list[dict], env: dict[str, Any],
                 renders: list[dict[str, Any]] | None = None) -> list[str]:
    lines = ["### Targets", ""]
    rows = []
    for r in (transformer or {}).get("sizes", []):
        if r["size"] in ("2k", "4k"):
            rows.append([f"ours <= {TARGET_RATIO}x stock forward at {r['size']}", f"{r['ratio']:.3f}x",
                         "met" if r["ratio"] <= TARGET_RATIO else "NOT met"])
    card = env.get("gpu_memory_gb")
    for r in renders or []:
        native = end_to_end_native(r, transformer)
        if r["preset"] == "2k":
            rows.append([f"2K end to end <= {TARGET_2K_SECONDS:.0f} s, one uninterrupted render on {r['gpu']}",
                         f"{r['seconds']:.0f} s", "met" if r["seconds"] <= TARGET_2K_SECONDS else "NOT met"])
        if r["preset"] == "4k" and r.get("gpu_memory_gb"):
            rows.append([f"4K end to end on one {r['gpu']} ({r['gpu_memory_gb']:.1f} GB), one uninterrupted render",
                         f"{r['seconds']:.0f} s, peak {r['peak_gb']:.1f} GB",
                         "met" if r["peak_gb"] < r["gpu_memory_gb"] else "NOT met"])
        if native:
            rows.append([f"{r['preset']} end-to-end speed-up vs native >= {TARGET_SPEEDUP:.0f}x ({r['gpu']} render)",
                         f"{native['speedup']:.1f}x", "met" if native["speedup"] >= TARGET_SPEEDUP else "NOT met"])
    for s in summaries:
        if "total" not in s:
            continue
        if s["preset"] == "2k":
            rows.append([f"2K end to end <= {TARGET_2K_SECONDS:.0f} s, stage sum on {env.get('gpu')}",
                         f"{s['total']:.0f} s", "met" if s["total"] <= TARGET_2K_SECONDS else "NOT met"])
        if s["preset"] == "4k" and s.get("peak_gb") is not None:
            rows.append([f"4K on one {env.get('gpu')} ({card:.1f} GB), stage by stage", f"peak {s['peak_gb']:.1f} GB (largest stage)",
                         "met (stage by stage)" if s["peak_gb"] < card else "NOT met"])
        if "speedup" in s:
            rows.append([f"{s['preset']} end-to-end speed-up vs native >= {TARGET_SPEEDUP:.0f}x (stage sum)", f"{s['speedup']:.1f}x",
                         "met" if s["speedup"] >= TARGET_SPEEDUP else "NOT met"])
    return lines + _table(["target", "measured", "status"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    ceilings, transformer, pipe = (_load(args.results, n) for n in ("ceilings", "transformer", "pipeline"))
    if pipe:
        pipe = merge_runs(pipe, _load(args.results, "pipeline_extra"))
    env = next((d["environment"] for d in (ceilings, transformer, pipe) if d), {})
    lines = ["## Results", ""] + environment_lines(env)
    if ceilings:
        lines += ceilings_lines(ceilings)
    if transformer:
        lines += transformer_lines(transformer)
    summaries: list[dict] = []
    if pipe:
        more, summaries = pipeline_lines(pipe, transformer)
        lines += more
    decode = _load(args.results, "decode")
    if decode:
        lines += decode_lines(decode)
    renders = load_end_to_end(args.results)
    if renders:
        lines += end_to_end_lines(renders, transformer)
    lines += target_lines(transformer, summaries, env, renders)
    text = "\n".join(lines)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
