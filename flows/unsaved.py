"""Results a stage computed but could not store, kept in this process for the stage's next try.

A stage's result is expensive (a 4K detail latent is minutes of GPU) and a store outage is often short: the next try,
which the worker loop usually makes in this same process, stores the kept result instead of computing it again.
Latents are kept in memory and videos as their encoded file; only the newest ``KEEP`` are held, so a store that stays
down cannot fill the worker's memory or disk.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from storage.object_store import StoredObject

log = logging.getLogger(__name__)

KEEP = 2

T = TypeVar("T")
_kept: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()


def store_once(key: str, compute: Callable[[], T], put: Callable[[T], StoredObject]) -> StoredObject:
    """``put(compute())``, except that a result whose put under ``key`` failed earlier in this process is put
    again instead of being computed again. A result is kept whenever its put raises, and let go once stored (or when
    the process exits)."""
    with _lock:
        value = _kept.pop(key, None)
    if value is None:
        value = compute()
    else:
        log.info("storing %s, kept from a put that failed, instead of computing it again", key)
    try:
        stored = put(value)
    except BaseException:
        _keep(key, value)
        raise
    _let_go(value)
    return stored


def kept_keys() -> list[str]:
    """The keys of the results held now, oldest first."""
    with _lock:
        return list(_kept)


def _keep(key: str, value: Any) -> None:
    with _lock:
        replaced = _kept.pop(key, None)  # another thread's result for the same key: the same content
        _kept[key] = value
        dropped = [_kept.popitem(last=False)[1] for _ in range(len(_kept) - KEEP)]
    for old in ([replaced] if replaced is not None else []) + dropped:
        _let_go(old)


@atexit.register
def _let_all_go() -> None:
    """Kept videos are temporary files: none outlives the process."""
    with _lock:
        values = list(_kept.values())
        _kept.clear()
    for value in values:
        _let_go(value)


def _let_go(value: Any) -> None:
    """A kept video is a file alone in its own temporary folder: the folder goes with it."""
    if isinstance(value, Path):
        shutil.rmtree(value.parent, ignore_errors=True)
