"""Checking a user's device string before any model is loaded, and the GPU math settings training uses."""

from __future__ import annotations


class DeviceError(ValueError):
    """A device string that is malformed or names hardware this machine does not have."""


def resolve_device(name: str | None) -> str:
    """'cuda' when there is a GPU and no name is given, else the named device, checked."""
    import torch

    if name is None or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"bad device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise DeviceError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")
    count = torch.cuda.device_count()
    if count == 0:
        raise DeviceError(f"device {name!r} asked for, but no CUDA GPU is available")
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device {name!r} asked for, but only {count} CUDA GPU(s) are present")
    return str(device)


def allow_tf32() -> None:
    """TF32 matrix products and convolutions for float32 work on a GPU (training runs bf16 autocast around it)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
