"""What a killed process left beside the file or folder it was writing: hidden temporaries, removed once stale.

A writer writes without long pauses and renames its temporary into place at once, so a temporary untouched for a
day was left by a process killed mid-write (kill -9, the OOM killer, a lost machine).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

STALE_SECONDS = 24 * 3600


def remove_stale(folder: Path, pattern: str) -> None:
    """Delete the files and folders in ``folder`` whose names match the glob ``pattern``, once untouched for
    STALE_SECONDS. Safe beside live writers (their temporaries are fresh) and other sweepers (a vanished entry is
    skipped)."""
    cutoff = time.time() - STALE_SECONDS
    for old in folder.glob(pattern):
        try:
            if old.lstat().st_mtime >= cutoff:
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        except FileNotFoundError:  # another writer's sweep removed it first
            pass
