"""The card's ceilings, measured in the same run as the models: bf16 GEMM and SDPA per kernel.

Every model TFLOP/s figure is read against these (METHOD.md: measure the ceilings, don't quote
datasheets). SDPA is timed per PyTorch backend at the self-attention shape of the transformer.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.common import environment, log, pick_device, sync, write_json

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def _median_seconds(fn, device: str, warmup: int, repeat: int) -> float:
    """Median of ``repeat`` timed calls after ``warmup`` untimed ones (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            import time

            sync(device)
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def gemm(device: str, n: int) -> dict[str, Any]:
    """bf16 n x n x n matrix product on random data."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = _median_seconds(lambda: a @ b, device, warmup=3, repeat=10)
    return {"n": n, "seconds": seconds, "tflops": 2 * n**3 / seconds / 1e12}


def sdpa(device: str, tokens: int, heads: int, head_dim: int) -> list[dict[str, Any]]:
    """Non-causal self-attention (B=1) per SDPA backend; a backend that cannot run is recorded."""
    shape = (1, heads, tokens, head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * tokens * tokens * heads * head_dim
    rows = []
    for name, backend in BACKENDS.items():
        def call():
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)

        try:
            seconds = _median_seconds(call, device, warmup=1, repeat=3)
            rows.append({"backend": name, "tokens": tokens, "seconds": seconds, "tflops": flops / seconds / 1e12})
        except RuntimeError as exc:
            rows.append({"backend": name, "tokens": tokens, "error": str(exc).splitlines()[0][:200]})
        log(f"sdpa {name} N={tokens}: {rows[-1]}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ceilings.json"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized shapes, to test the script")
    args = parser.parse_args()
    device = pick_device(args.device)
    result: dict[str, Any] = {"environment": environment(device)}
    result["gemm"] = gemm(device, 256 if args.tiny else 8192)
    log(f"gemm: {result['gemm']}")
    token_counts = (64,) if args.tiny else (27_280, 111_600)
    heads, head_dim = (2, 16) if args.tiny else (24, 128)
    result["sdpa"] = [row for n in token_counts for row in sdpa(device, n, heads, head_dim)]
    write_json(args.out, result)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
