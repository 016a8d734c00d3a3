"""Turning a prompt file into a batch and its jobs, once: the same input gives the same batch."""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any

from flows import resources
from pixelwizard.presets import get_preset
from pixelwizard.prompts import PromptFileError, PromptSpec, parse_prompts
from storage.jobs import JobSpec, add_jobs, ensure_batch
from storage.sources import absolute_source, read_source

FORMATS = {".txt": "txt", ".jsonl": "jsonl"}


def prompt_format(source: str) -> str:
    """The prompt file's suffix, one of ``FORMATS``; PromptFileError for any other."""
    suffix = PurePosixPath(source).suffix.lower()
    if suffix not in FORMATS:
        raise PromptFileError(f"{source}: unknown prompt file type {suffix or '(none)'}; use .txt or .jsonl")
    return suffix


def read_batch_input(
    source: str, preset: str, model: str | None, overrides: dict[str, Any]
) -> tuple[bytes, list[PromptSpec], str]:
    """The prompt file's bytes and prompts and the model's revision, every input checked (one-line errors)."""
    suffix = prompt_format(source)
    data = read_source(source)
    specs = parse_prompts(data, source, FORMATS[suffix])
    get_preset(preset).with_overrides(**overrides)
    return data, specs, resources.revision(model)


def create_batch_from_source(
    source: str, preset: str, model: str | None, seed: int, name: str | None, overrides: dict[str, Any]
) -> int:
    """Validate everything first (prompts, preset, model), then write the batch and jobs in one transaction."""
    data, specs, revision = read_batch_input(source, preset, model, overrides)
    identity = {
        "content": hashlib.sha256(data).hexdigest(),
        "preset": preset,
        "model_revision": revision,
        "seed": seed,
        "overrides": overrides,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    with resources.database().begin() as session:
        batch = ensure_batch(
            session, idempotency_key=key, name=name or PurePosixPath(source).stem, source=absolute_source(source),
            preset=preset,
        )
        add_jobs(
            session,
            batch.id,
            [
                JobSpec(
                    prompt_id=spec.id,
                    prompt=spec.prompt,
                    seed=seed if spec.seed is None else spec.seed,
                    preset=preset,
                    model_revision=revision,
                    negative_prompt=spec.negative_prompt or "",
                    parameters=overrides,
                )
                for spec in specs
            ],
        )
        return batch.id
