"""VAE decode variants on one whole 2K width chunk: the memory layout of the 3D convolutions.

The decode is a fifth of a 2K render (docs/performance.md); this times the Wan2.2 VAE decoder
as the pipeline runs it (bf16, channels-first) against channels-last-3d convolution weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan

from benchmarks.common import build, environment, log, peak_gb, pick_device, reset_peak, timed, vae_config, write_json
from pixelwizard.decoding import DECODE_OVERLAP, chunk_spans


def channels_last(vae: AutoencoderKLWan) -> None:
    """Conv3d weights in channels-last-3d layout (cuDNN's preferred layout for 3D convolutions)."""
    for module in vae.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)


def decode_once(vae: AutoencoderKLWan, latent: torch.Tensor, device: str) -> dict[str, Any]:
    with torch.no_grad():
        vae.decode(latent[:, :, :1], return_dict=False)  # warm-up
        reset_peak(device)
        seconds, _ = timed(lambda: vae.decode(latent, return_dict=False), device)
    return {"seconds": seconds, "peak_gb": peak_gb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decode.json"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    device = pick_device(args.device)
    vae = build(lambda: AutoencoderKLWan(**vae_config(args.tiny)), device, torch.bfloat16)
    height, width, frames, chunks = (8, 16, 3, 3) if args.tiny else (90, 160, 31, 3)
    start, end = chunk_spans(width, chunks, DECODE_OVERLAP)[0]
    latent = torch.randn(1, 48, frames, height, end - start, device=device, dtype=torch.bfloat16)
    result: dict[str, Any] = {"environment": environment(device), "latent": list(latent.shape), "variants": {}}
    result["variants"]["channels_first"] = decode_once(vae, latent, device)
    log(f"channels_first: {result['variants']['channels_first']}")
    channels_last(vae)
    result["variants"]["channels_last_3d"] = decode_once(vae, latent, device)
    log(f"channels_last_3d: {result['variants']['channels_last_3d']}")
    torch.backends.cudnn.benchmark = True
    result["variants"]["channels_last_3d_cudnn_benchmark"] = decode_once(vae, latent, device)
    log(f"channels_last_3d + cudnn.benchmark: {result['variants']['channels_last_3d_cudnn_benchmark']}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
