"""Model bundles: diffusers-layout folders holding every component of a PixelWizard pipeline."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pixelwizard.leftovers import remove_stale

COMPONENTS = ("tokenizer", "text_encoder", "vae", "transformer", "detail_transformer", "scheduler")
_REVISION_FILE = "pixelwizard_revision.json"


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or unreadable."""


def check_bundle(path: str | os.PathLike) -> Path:
    """Raise ModelFolderError naming what is missing, else return the folder as a Path."""
    root = Path(path)
    if not root.is_dir():
        raise ModelFolderError(f"model folder {root} " + ("is not a folder" if root.exists() else "does not exist"))
    index = root / "model_index.json"
    if not index.is_file():
        raise ModelFolderError(f"model folder {root} has no model_index.json")
    try:
        listed = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{index}: unreadable ({exc})") from None
    if not isinstance(listed, dict):
        raise ModelFolderError(f"{index}: not a JSON object")
    for name in COMPONENTS:
        if name not in listed:
            raise ModelFolderError(f"{index}: no component {name!r}")
        folder = root / name
        if not folder.is_dir() or not any(folder.iterdir()):
            raise ModelFolderError(f"model folder {root} is incomplete: {name}/ is missing or empty")
        if name not in ("tokenizer", "scheduler") and not any(folder.glob("*.safetensors")):
            raise ModelFolderError(f"model folder {root} is incomplete: {name}/ holds no .safetensors weights")
        if name != "tokenizer" and not any(folder.glob("*config.json")):
            raise ModelFolderError(f"model folder {root} is incomplete: {name}/ has no config")
    return root


def bundle_revision(path: str | os.PathLike) -> str:
    """A content hash of the bundle (configs and weights), cached beside it keyed by sizes and times.

    The anchor cache keys on it, so two bundles that differ in any byte never share anchors.
    """
    root = check_bundle(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith((Path(_REVISION_FILE).stem, ".")))
    stamp = [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    cache = root / _REVISION_FILE
    try:
        cached = json.loads(cache.read_text())
        if cached.get("files") == stamp:
            return cached["revision"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(root)).encode() + b"\0")
        with p.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    revision = digest.hexdigest()[:16]
    try:
        tmp = cache.with_name(f".{cache.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps({"revision": revision, "files": stamp}))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only bundle just hashes again next time
    return revision


def check_replaceable(destination: str | os.PathLike) -> Path:
    """``destination`` as a Path if a bundle may be written there: nothing yet, or a bundle folder (replaced
    whole); anything else there is a ModelFolderError, so that writing a bundle never deletes other files."""
    destination = Path(destination)
    if destination.name in ("", ".", ".."):
        raise ModelFolderError(f"{destination} names no folder to write a bundle to")
    if destination.exists() and not (destination / "model_index.json").is_file():
        raise ModelFolderError(f"{destination} exists and is not a model bundle; refusing to replace it")
    return destination


def _restore_interrupted_swap(destination: Path) -> None:
    """A write killed between its two renames leaves no ``destination`` but the previous bundle retired
    beside it (``.NAME.old-PID``): put the newest such back before anything else happens there."""
    if destination.exists() or not destination.parent.is_dir():
        return
    retired = sorted(destination.parent.glob(f".{destination.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if retired:
        os.replace(retired[-1], destination)


@contextmanager
def staged_folder(destination: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling folder to fill; renamed onto ``destination`` only if the block succeeds.

    A bundle already at ``destination`` is swapped out and removed after the new one is in place,
    so a failed or interrupted write never leaves half a bundle or damages the previous one;
    anything else there is refused (``check_replaceable``). What killed writes left beside it goes once a day old.
    """
    destination = Path(destination)
    _restore_interrupted_swap(destination)
    destination = check_replaceable(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # The staging folders and retired bundles of killed writes (a retired one is put back above when it is all
    # there is): only these names, never another file or bundle beside it.
    remove_stale(destination.parent, f".{destination.name}.", rf"\.{re.escape(destination.name)}\.([0-9a-f]{{16}}|old-\d+)")
    staging = destination.with_name(f".{destination.name}.{secrets.token_hex(8)}")
    staging.mkdir()  # mode 0o777 less the umask, as the renamed bundle should have (mkdtemp: 0o700)
    try:
        yield staging
        if destination.exists():
            retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.replace(destination, retired)
            os.replace(staging, destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_bundle(pipe, destination: str | os.PathLike, dtype=None) -> Path:
    """``save_pretrained`` the pipeline as a bundle folder, atomically (``staged_folder``).

    ``dtype`` (float16 for the shipped bundle) converts the pipeline's weights before saving.
    """
    with staged_folder(destination) as staging:
        if dtype is not None:
            pipe.to(dtype=dtype)
        pipe.save_pretrained(staging, safe_serialization=True)
    return Path(destination)


def load_bundle(path: str | os.PathLike, device: str = "cpu", dtype=None):
    """Load a PixelWizardPipeline from a bundle folder, offline, onto ``device``."""
    import torch

    from pixelwizard.pipeline import PixelWizardPipeline

    root = check_bundle(path)
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        pipe = PixelWizardPipeline.from_pretrained(root, dtype=dtype, local_files_only=True)
    except Exception as exc:  # unreadable configs or weights, or weights that do not fit a config: all say "damaged"
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise ModelFolderError(f"model folder {root} cannot be loaded: {lines[0]}") from exc
    unfilled = [f"{name}/{param}" for name, part in pipe.components.items() if isinstance(part, torch.nn.Module)
                for param, tensor in part.named_parameters() if tensor.is_meta]
    if unfilled:  # a config asking for more weights than its files hold (diffusers leaves those unallocated)
        raise ModelFolderError(f"model folder {root} cannot be loaded: its weights lack {len(unfilled)} tensor(s) "
                               f"that its configs ask for, {unfilled[0]} first")
    return pipe.to(device)
