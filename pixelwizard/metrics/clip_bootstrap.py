"""Percentile bootstrap over evaluation clips: how far a table's number could move with other clips.

Hand-written (scipy.stats.bootstrap does the same, but scipy is not a dependency): the statistic gets
the indices of a resample of the clips, drawn with replacement, so that paired statistics (two models
on the same clips) resample both sides alike.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

RESAMPLES = 1000
LEVEL = 0.9


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float], clips: int, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0,
) -> tuple[float, float]:
    """The central ``level`` interval of ``statistic(indices)`` over ``resamples`` resamples of ``clips`` clips."""
    if clips < 2:
        raise ValueError(f"a bootstrap needs at least 2 clips, got {clips}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, clips, clips)) for _ in range(resamples)]
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
