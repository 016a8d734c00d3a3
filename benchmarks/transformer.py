"""Our detail transformer against the stock diffusers one: same size, same random bf16 weights.

For each token count (anchor, 720p, 2K, 4K) both models run one forward with B=1: seconds,
model TFLOP/s and peak memory. Ours gets what the detail stage gives it (step size and anchor);
stock gets the plain Wan call. Then attention backends and regional compilation are tried on
ours, each measured (docs/performance.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from diffusers import WanTransformer3DModel

from benchmarks.common import (
    SIZES,
    TEXT_TOKENS,
    TINY_SIZES,
    Size,
    build,
    detail_extra_config,
    environment,
    log,
    peak_gb,
    pick_device,
    randomize_,
    reset_peak,
    timed,
    transformer_config,
    write_json,
)
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel

# (warm-up calls, timed calls) per size: the 4K forward alone is about 46 s.
SCHEDULE = {"anchor": (3, 10), "720p": (1, 3), "2k": (1, 2), "4k": (0, 1)}


def forward_flops(tokens: int, config: dict[str, Any], text_tokens: int = TEXT_TOKENS) -> float:
    """Model FLOPs of one forward (matrix products and attention; elementwise work left out)."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    f, layers = config["ffn_dim"], config["num_layers"]
    per_layer = (
        4 * 2 * tokens * d * d  # self-attention q, k, v, o
        + 4 * tokens * tokens * d  # self-attention scores and values
        + 2 * 2 * tokens * d * d  # cross-attention q, o
        + 2 * 2 * text_tokens * d * d  # cross-attention k, v
        + 4 * tokens * text_tokens * d  # cross-attention scores and values
        + 2 * 2 * tokens * d * f  # feed-forward
    )
    return layers * per_layer


def build_models(device: str, tiny: bool) -> tuple[PixelWizardTransformer3DModel, WanTransformer3DModel]:
    """Ours with random weights (new modules too), and stock sharing the very same backbone tensors."""
    config = transformer_config(tiny)
    ours = build(lambda: PixelWizardTransformer3DModel(**config, **detail_extra_config(tiny)), device, torch.bfloat16)
    randomize_(ours)
    stock = build(lambda: WanTransformer3DModel(**config), device, torch.bfloat16)
    backbone = {k: v for k, v in ours.state_dict().items() if not k.startswith(("dt_embedder.", "anchor_injector."))}
    stock.load_state_dict(backbone, strict=True, assign=True)
    return ours, stock


def inputs(size: Size, config: dict[str, Any], device: str, anchor_size: Size) -> dict[str, torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=torch.bfloat16)

    return {
        "hidden_states": randn(*size.latent(config["in_channels"])),
        "timestep": torch.tensor([900.0], device=device),
        "encoder_hidden_states": randn(1, TEXT_TOKENS, config["text_dim"]),
        "dt": torch.tensor([96.0], device=device),
        "anchor": randn(*anchor_size.latent(config["in_channels"])),
    }


def measure(model: torch.nn.Module, kwargs: dict[str, torch.Tensor], device: str, warmup: int, repeat: int) -> dict:
    """Median seconds and peak memory of ``repeat`` forwards after ``warmup`` ones."""
    with torch.no_grad():
        for _ in range(warmup):
            model(**kwargs, return_dict=False)
        reset_peak(device)
        times = [timed(lambda: model(**kwargs, return_dict=False), device)[0] for _ in range(repeat)]
    return {"seconds": sorted(times)[len(times) // 2], "all_seconds": times, "peak_gb": peak_gb(device)}


def run_size(ours, stock, size: Size, anchor_size: Size, config, device: str, warmup: int, repeat: int) -> dict:
    """Stock then ours at one size, same inputs."""
    kwargs = inputs(size, config, device, anchor_size)
    plain = {k: kwargs[k] for k in ("hidden_states", "timestep", "encoder_hidden_states")}
    flops = forward_flops(size.tokens(), config)
    row: dict[str, Any] = {"size": size.name, "tokens": size.tokens(), "tflop": flops / 1e12}
    for label, model, args in (("stock", stock, plain), ("ours", ours, kwargs)):
        result = measure(model, args, device, warmup, repeat)
        result["tflops"] = flops / result["seconds"] / 1e12
        row[label] = result
        log(f"{size.name} {label}: {result['seconds']:.3f} s, {result['tflops']:.0f} TFLOP/s, peak {result['peak_gb']}")
    row["ratio"] = row["ours"]["seconds"] / row["stock"]["seconds"]
    return row


def try_backends(ours, sizes: list[Size], anchor_size: Size, config, device: str, backends: list[str]) -> list[dict]:
    """Ours under each diffusers attention backend (one warm-up, one or two timed forwards)."""
    rows = []
    for backend in backends:
        try:
            ours.set_attention_backend(backend)
        except (ValueError, RuntimeError) as exc:
            rows.append({"backend": backend, "error": str(exc).splitlines()[0][:200]})
            continue
        for size in sizes:
            kwargs = inputs(size, config, device, anchor_size)
            warmup, repeat = (1, 3) if size.tokens() < 50_000 else (0, 1)
            try:
                result = measure(ours, kwargs, device, warmup, repeat)
            except RuntimeError as exc:
                result = {"error": str(exc).splitlines()[0][:200]}
            else:
                result["tflops"] = forward_flops(size.tokens(), config) / result["seconds"] / 1e12
            rows.append({"backend": backend, "size": size.name, "tokens": size.tokens(), **result})
            log(f"backend {backend} {size.name}: {rows[-1]}")
    ours.set_attention_backend("native")
    return rows


def try_compile(ours, size: Size, anchor_size: Size, config, device: str) -> dict:
    """Regional compilation (diffusers ``compile_repeated_blocks``) at one size: compile time and speed."""
    kwargs = inputs(size, config, device, anchor_size)
    eager = measure(ours, kwargs, device, 2, 10)
    ours.compile_repeated_blocks(fullgraph=True)
    compile_seconds, _ = timed(lambda: ours(**kwargs, return_dict=False), device)
    compiled = measure(ours, kwargs, device, 2, 10)
    result = {"size": size.name, "eager_seconds": eager["seconds"], "compiled_seconds": compiled["seconds"],
              "first_call_seconds": compile_seconds, "speedup": eager["seconds"] / compiled["seconds"]}
    log(f"compile {size.name}: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transformer.json"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized model and sizes, to test the script")
    parser.add_argument("--sizes", default="anchor,720p,2k,4k")
    parser.add_argument("--backends", default="_native_cudnn,_native_flash",
                        help="diffusers attention backends to try on ours ('' for none)")
    parser.add_argument("--backend-sizes", default="720p,2k")
    parser.add_argument("--compile", action="store_true", help="also time regional torch.compile at the anchor size")
    args = parser.parse_args()

    device = pick_device(args.device)
    sizes = TINY_SIZES if args.tiny else SIZES
    config = transformer_config(args.tiny)
    result: dict[str, Any] = {"environment": environment(device), "config": config, "batch": 1}
    elapsed, (ours, stock) = timed(lambda: build_models(device, args.tiny), device)
    result["build_seconds"] = elapsed
    log(f"built both models in {elapsed:.1f} s")

    result["sizes"] = []
    for name in args.sizes.split(","):
        warmup, repeat = SCHEDULE[name]
        result["sizes"].append(run_size(ours, stock, sizes[name], sizes["anchor"], config, device, warmup, repeat))
        write_json(args.out, result)

    backends = [b for b in args.backends.split(",") if b]
    if backends:
        targets = [sizes[n] for n in args.backend_sizes.split(",")]
        result["backends"] = try_backends(ours, targets, sizes["anchor"], config, device, backends)
        write_json(args.out, result)
    if args.compile:
        try:
            result["compile"] = try_compile(ours, sizes["anchor"], sizes["anchor"], config, device)
        except Exception as exc:  # a compiler failure is a finding, not a reason to lose the run
            result["compile"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        write_json(args.out, result)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
