"""What a killed process left beside the file or folder it was writing: hidden temporaries, removed once stale.

A writer writes without long pauses and renames its temporary into place at once, so a temporary untouched for a
day was left by a process killed mid-write (kill -9, the OOM killer, a lost machine).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import time
from pathlib import Path

STALE_SECONDS = 24 * 3600

log = logging.getLogger(__name__)


def remove_stale(folder: Path, prefix: str, name: str) -> None:
    """Delete the files and folders in ``folder`` whose whole name matches the regex ``name`` (listed by the glob
    ``prefix*``), once untouched for STALE_SECONDS and owned by this user. Safe beside live writers (their
    temporaries are fresh), other sweepers (a vanished entry is skipped), other users' leftovers in a shared folder
    such as /tmp (theirs to sweep) and anything else there (only the writer's own names match). A sweep is
    housekeeping: what cannot be removed is logged and left, never an error of the command that sweeps."""
    cutoff = time.time() - STALE_SECONDS
    pattern = re.compile(name)
    own = getattr(os, "getuid", lambda: None)()
    for old in folder.glob(glob.escape(prefix) + "*"):
        try:
            stat = old.lstat()
            if not pattern.fullmatch(old.name) or stat.st_mtime >= cutoff or own not in (None, stat.st_uid):
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        except FileNotFoundError:  # another writer's sweep removed it first
            pass
        except OSError as exc:
            log.warning("could not remove %s, left by a killed write: %s", old, exc)
