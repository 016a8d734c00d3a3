"""Prompt files: plain-text (one prompt a line) and JSON Lines, parsed into PromptSpec records.

Every problem is reported as one ``<file>:<line>: <problem>`` line so a batch can be fixed
before any GPU time is spent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PromptFileError",
    "PromptFormat",
    "PromptSpec",
    "load_prompts",
    "parse_prompts",
    "prompt_id_for_text",
    "validate_prompt_id",
]

PromptFormat = Literal["txt", "jsonl"]

# Ids become output file names, so they are restricted to a portable, path-free alphabet.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SEED_LIMIT = 2**63  # seeds are stored in the run database's signed 64-bit columns
_JSONL_KEYS = ("id", "prompt", "seed", "negative_prompt")
_EXTENSIONS: dict[str, PromptFormat] = {".txt": "txt", ".jsonl": "jsonl"}
# Derived ids: a slug of the first few words (readable) plus a hash of the text (unique).
_SLUG_WORDS = 6
_SLUG_MAX_CHARS = 48
_HASH_HEX = 8
# Longest user-supplied value quoted back in an error message.
_SHOW_MAX_CHARS = 60


class PromptFileError(ValueError):
    """A prompt file is unusable; the message is one ``<file>:<line>: <problem>`` line."""


def _show(value: Any) -> str:
    """A short single-line rendering of a user-supplied value for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = ascii(value)
    return text if len(text) <= _SHOW_MAX_CHARS else text[: _SHOW_MAX_CHARS - 3] + "..."


def validate_prompt_id(prompt_id: str) -> str:
    """Return ``prompt_id`` if it is safe to use as a file name, else raise ValueError.

    Allowed: ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` without ``..``.
    """
    if not isinstance(prompt_id, str):
        raise TypeError(f"id must be a string, got {_show(prompt_id)}")
    if not _ID_RE.fullmatch(prompt_id) or ".." in prompt_id:
        raise ValueError(
            f"invalid id {_show(prompt_id)}: use 1-128 of A-Z a-z 0-9 . _ -, starting with a "
            "letter or digit, without '..'"
        )
    return prompt_id


@dataclass(frozen=True)
class PromptSpec:
    """One video to render: its output id, prompt text, optional seed and negative prompt."""

    id: str
    prompt: str
    seed: int | None = None
    negative_prompt: str | None = None

    def __post_init__(self) -> None:
        """Reject values that would fail later, mid-batch (bad id, blank prompt, bad seed)."""
        validate_prompt_id(self.id)
        if not isinstance(self.prompt, str):
            raise TypeError(f"prompt must be a string, got {_show(self.prompt)}")
        if not self.prompt.strip():
            raise ValueError("prompt is empty")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < SEED_LIMIT
        ):
            raise ValueError(
                f"seed must be a non-negative integer below 2**63, got {_show(self.seed)}"
            )
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise TypeError(f"negative_prompt must be a string, got {_show(self.negative_prompt)}")


def prompt_id_for_text(prompt: str) -> str:
    """Stable id for a prompt from its text alone, e.g. ``a-red-cube-bounces-1a2b3c4d``.

    Used for .txt files so an id survives lines being added or removed around it.
    """
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:_HASH_HEX]
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())[:_SLUG_WORDS]
    slug = "-".join(words)[:_SLUG_MAX_CHARS].rstrip("-")
    return f"{slug or 'prompt'}-{digest}"


def _decode(data: bytes, name: str) -> str:
    """UTF-8 text of ``data`` (a leading BOM dropped); bad bytes are reported by line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PromptFileError(
            f"{name}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column})"
        ) from None


def _lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped content) of each non-blank line.

    Splits on newlines only (not ``str.splitlines``' extra separators) so numbers match editors.
    """
    numbered = enumerate(text.removeprefix("\ufeff").split("\n"), start=1)
    return [(number, line.strip()) for number, line in numbered if line.strip()]


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a repeated key would otherwise silently keep only the last value."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {_show(key)}")
        result[key] = value
    return result


def _parse_txt(text: str, name: str) -> list[tuple[int, PromptSpec]]:
    """Specs from a text file: one prompt a line, ``#`` comments, ids derived from the text."""
    specs: list[tuple[int, PromptSpec]] = []
    first_seen: dict[str, int] = {}
    for number, line in _lines(text):
        if line.startswith("#"):
            continue
        if line in first_seen:
            raise PromptFileError(
                f"{name}:{number}: duplicate prompt (same text as line {first_seen[line]})"
            )
        first_seen[line] = number
        specs.append((number, PromptSpec(id=prompt_id_for_text(line), prompt=line)))
    return specs


def _jsonl_spec(line: str, where: str) -> PromptSpec:
    """One JSONL record as a PromptSpec; problems raise PromptFileError prefixed by ``where``."""
    try:
        record = json.loads(line, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    except ValueError as exc:  # from _reject_duplicate_keys
        raise PromptFileError(f"{where}: {exc}") from None
    if not isinstance(record, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = [key for key in record if key not in _JSONL_KEYS]
    if unknown:
        raise PromptFileError(
            f"{where}: unknown key(s) {', '.join(_show(k) for k in unknown)} "
            f"(allowed: {', '.join(_JSONL_KEYS)})"
        )
    for key in ("id", "prompt"):
        if key not in record:
            raise PromptFileError(f"{where}: missing {key!r}")
    try:
        return PromptSpec(**record)
    except (TypeError, ValueError) as exc:
        raise PromptFileError(f"{where}: {exc}") from None


def _parse_jsonl(text: str, name: str) -> list[tuple[int, PromptSpec]]:
    """Specs from JSON Lines: one object a line with ``id``, ``prompt`` and optional fields."""
    return [(number, _jsonl_spec(line, f"{name}:{number}")) for number, line in _lines(text)]


def parse_prompts(text: str | bytes, name: str, fmt: PromptFormat) -> list[PromptSpec]:
    """Parse prompt-file content fetched from anywhere; ``name`` labels error messages.

    Bytes are decoded as UTF-8 (with per-line errors). Ids must be unique, ignoring letter
    case, since they become file names and some file systems fold case.
    """
    if fmt not in ("txt", "jsonl"):
        raise ValueError(f"fmt must be 'txt' or 'jsonl', got {fmt!r}")
    if isinstance(text, bytes):
        text = _decode(text, name)
    numbered = _parse_txt(text, name) if fmt == "txt" else _parse_jsonl(text, name)
    if not numbered:
        raise PromptFileError(f"{name}: no prompts")
    seen: dict[str, tuple[int, str]] = {}
    for number, spec in numbered:
        key = spec.id.casefold()
        if key in seen:
            earlier_line, earlier_id = seen[key]
            same = "" if earlier_id == spec.id else f" as {_show(earlier_id)}"
            raise PromptFileError(
                f"{name}:{number}: duplicate id {_show(spec.id)} (already used on line "
                f"{earlier_line}{same})"
            )
        seen[key] = (number, spec.id)
    return [spec for _, spec in numbered]


def load_prompts(path: str | os.PathLike[str]) -> list[PromptSpec]:
    """Read a ``.txt`` or ``.jsonl`` prompt file; every problem raises PromptFileError."""
    path = Path(path)
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise PromptFileError(
            f"{path}: unsupported prompt file type {path.suffix or '(no extension)'!r}; "
            "use .txt or .jsonl"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PromptFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise PromptFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_prompts(data, str(path), fmt)
