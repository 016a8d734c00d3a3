"""What a killed process left beside the file or folder it was writing: hidden temporaries, removed once stale.

A writer writes without long pauses and renames its temporary into place at once, so a temporary untouched for a
day was left by a process killed mid-write (kill -9, the OOM killer, a lost machine).
"""

from __future__ import annotations

import glob
import re
import shutil
import time
from pathlib import Path

STALE_SECONDS = 24 * 3600


def remove_stale(folder: Path, prefix: str, name: str) -> None:
    """Delete the files and folders in ``folder`` whose whole name matches the regex ``name`` (listed by the glob
    ``prefix*``), once untouched for STALE_SECONDS. Safe beside live writers (their temporaries are fresh), other
    sweepers (a vanished entry is skipped) and anything else there (only the writer's own names match)."""
    cutoff = time.time() - STALE_SECONDS
    pattern = re.compile(name)
    for old in folder.glob(glob.escape(prefix) + "*"):
        try:
            if not pattern.fullmatch(old.name) or old.lstat().st_mtime >= cutoff:
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        except FileNotFoundError:  # another writer's sweep removed it first
            pass
