"""Strict state-dict loading shared by every converter: nothing missing, nothing left over."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]
_SHOWN = 8  # key names listed in an error before "(+N more)"


class ConversionError(ValueError):
    """A source that cannot be converted; the one-line message names the offending keys or files."""


def read_json(path: Path) -> Any:
    """The JSON document at ``path``, or ConversionError naming the file."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConversionError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def check_safetensors(folder: Path, what: str) -> None:
    """Every .safetensors shard of ``folder`` has a whole header and covers its tensors (a copy is not read)."""
    from safetensors import SafetensorError, safe_open

    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise ConversionError(f"{what}: no .safetensors weights in {folder}")
    for shard in shards:
        try:
            with safe_open(shard, "pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise ConversionError(f"{shard}: unreadable safetensors ({exc})") from None


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def check_keys(expected: Iterable[str], found: Iterable[str], what: str) -> None:
    """Raise ConversionError naming the missing and the unexpected keys, if any."""
    expected, found = set(expected), set(found)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
    if problems:
        raise ConversionError(f"{what}: " + "; ".join(problems))


def load_strict(model: torch.nn.Module, state_dict: StateDict, what: str) -> torch.nn.Module:
    """Load ``state_dict`` into ``model`` (built with empty weights): every key, every shape."""
    reference = model.state_dict()
    check_keys(reference.keys(), state_dict.keys(), what)
    for key, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(reference[key].shape):
            raise ConversionError(
                f"{what}: {key} has shape {tuple(tensor.shape)}, the model needs {tuple(reference[key].shape)}"
            )
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model


def build_empty(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A model whose parameters are not allocated yet (buffers are), to be filled by ``load_strict``."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return factory()


def cast(state_dict: StateDict, dtype: torch.dtype | None) -> StateDict:
    """Floating-point tensors in ``dtype`` (None keeps each tensor's own)."""
    if dtype is None:
        return state_dict
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def load_torch_file(path: Path, what: str) -> dict:
    """``torch.load`` with pickled code refused (weights_only), memory-mapped when the format allows."""
    if not path.is_file():
        raise ConversionError(f"{what}: {path} does not exist")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not a plain weight file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"{what}: {path} is not a readable tensor file ({first})") from None


def load_safetensors_folder(folder: Path, pattern: str, what: str) -> StateDict:
    """All tensors of the ``pattern`` shards in ``folder`` (a key in two shards is an error)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    shards = sorted(folder.glob(pattern))
    if not shards:
        raise ConversionError(f"{what}: no {pattern} in {folder}")
    merged: StateDict = {}
    for shard in shards:
        try:
            part = load_file(shard)
        except (SafetensorError, OSError) as exc:
            raise ConversionError(f"{shard}: unreadable safetensors ({exc})") from None
        twice = sorted(set(part) & set(merged))
        if twice:
            raise ConversionError(f"{what}: {shard.name} repeats key(s) {_names(twice)}")
        merged.update(part)
    return merged
