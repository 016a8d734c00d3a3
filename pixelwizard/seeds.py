"""Per-stage seeds derived from (base seed, prompt id), never from a prompt's position (SPEC.md 3)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class StageSeeds:
    anchor: int
    detail: int


def derive_seed(base_seed: int, prompt_id: str, stage: str) -> int:
    """A 63-bit seed from a SHA-256 of the base seed, the prompt id and the stage name."""
    digest = hashlib.sha256(f"{base_seed}\x00{prompt_id}\x00{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def stage_seeds(base_seed: int, prompt_id: str) -> StageSeeds:
    """The anchor and detail seeds of one prompt."""
    return StageSeeds(derive_seed(base_seed, prompt_id, "anchor"), derive_seed(base_seed, prompt_id, "detail"))
