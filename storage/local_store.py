"""Local-directory object store: the embedded default under the project's data directory.

Each object is a plain file at ``<root>/<key>`` (so its ``file://`` URI is directly usable)
with a JSON sidecar ``<root>/.meta/<key>.json`` holding its SHA-256, size and metadata.
Writes go to ``<root>/.tmp`` and are renamed into place; the sidecar/data pair is committed
under a striped ``flock`` (``<root>/.locks``) so readers and other processes never see a
half-committed pair. Temporary files of a put that was killed are removed when the store is next
opened a day later. POSIX only.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

from storage.errors import (
    CorruptObjectError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StoreConfigError,
)
from storage.object_store import (
    ObjectStore,
    StoredObject,
    copy_hashing,
    new_temp_file,
    validate_key,
    validate_metadata,
    verify_integrity,
)

_META_DIR = ".meta"
_TMP_DIR = ".tmp"
_LOCK_DIR = ".locks"
_LOCK_STRIPES = 256
# A put writes its temporary file without pause and renames it at once; one untouched for a day was left by a
# process that was killed mid-put (kill -9, the OOM killer, a lost machine), and goes.
STALE_TEMP_SECONDS = 24 * 3600

log = logging.getLogger(__name__)


class LocalStore(ObjectStore):
    """Objects as files under ``root`` with checksum sidecars; atomic via temp file + rename."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        try:
            for sub in (_META_DIR, _TMP_DIR, _LOCK_DIR):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreConfigError(f"cannot use {self.root} as an object store: {err.strerror or err}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreConfigError(f"object store directory is not writable: {self.root}")
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        """Delete the temporary files of puts killed before they finished (untouched for STALE_TEMP_SECONDS)."""
        cutoff, removed = time.time() - STALE_TEMP_SECONDS, 0
        for path in (self.root / _TMP_DIR).iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # another process opening the store removed it first
                pass
        if removed:
            log.info("removed %d temporary file(s) of unfinished puts from %s", removed, self.root / _TMP_DIR)

    def put_bytes(
        self, key: str, data: bytes, *, create_only: bool = False, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        return self._put_stream(key, io.BytesIO(data), create_only, metadata)

    def put_file(
        self, key: str, path: Path, *, create_only: bool = False, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        try:
            source = open(path, "rb")
        except OSError as err:
            raise StorageError(f"cannot read {path} to store as {key!r}: {err.strerror or err}") from None
        with source:
            return self._put_stream(key, source, create_only, metadata)

    def get_bytes(self, key: str) -> bytes:
        record, handle = self._open_with_record(key)
        with handle:
            data = handle.read()
        verify_integrity(key, hashlib.sha256(data).hexdigest(), len(data), record["sha256"], record["size"])
        return data

    def get_file(self, key: str, dest: Path) -> StoredObject:
        record, handle = self._open_with_record(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_file(dest.parent, f".{dest.name}.")
        try:
            with handle, tmp:
                sha256, size = copy_hashing(handle, tmp)
                _fsync(tmp)
            verify_integrity(key, sha256, size, record["sha256"], record["size"])
            os.replace(tmp.name, dest)
        finally:
            Path(tmp.name).unlink(missing_ok=True)
        return self._stored(key, record)

    def stat(self, key: str) -> StoredObject:
        validate_key(key)
        with self._locked([key], exclusive=False):
            return self._stored(key, self._read_record(key))

    def exists(self, key: str) -> bool:
        return self._data_path(validate_key(key)).is_file()

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._locked([key]):
            self._data_path(key).unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[str]:
        directory = prefix.rpartition("/")[0]
        base = self.root / validate_key(directory) if directory else self.root
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not name.startswith(".") and key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def move(self, key: str, new_key: str) -> None:
        validate_key(key)
        validate_key(new_key)
        with self._locked([key, new_key]):
            src, dst = self._data_path(key), self._data_path(new_key)
            if not src.is_file():
                raise ObjectNotFoundError(f"no object {key!r} in {self.root}")
            if dst.exists():
                raise ObjectExistsError(f"cannot move {key!r}: {new_key!r} already exists in {self.root}")
            src_meta, dst_meta = self._meta_path(key), self._meta_path(new_key)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src_meta.exists():
                dst_meta.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src_meta, dst_meta)
            os.replace(src, dst)

    def uri(self, key: str) -> str:
        return self._data_path(validate_key(key)).as_uri()

    def _put_stream(
        self, key: str, source: BinaryIO, create_only: bool, metadata: Mapping[str, str] | None
    ) -> StoredObject:
        """Copy ``source`` to a temp file, then rename it and a fresh sidecar into place under the key's lock."""
        validate_key(key)
        record: dict[str, Any] = {"metadata": validate_metadata(metadata)}
        tmp_data = self._new_tmp()
        try:
            with tmp_data:
                record["sha256"], record["size"] = copy_hashing(source, tmp_data)
                _fsync(tmp_data)
            sha256 = record["sha256"]
            tmp_meta = self._new_tmp()
            with tmp_meta:
                tmp_meta.write(json.dumps(record, sort_keys=True).encode())
                _fsync(tmp_meta)
            try:
                with self._locked([key]):
                    data_path, meta_path = self._data_path(key), self._meta_path(key)
                    existing = self._committed_record(key) if create_only and data_path.exists() else None
                    if existing is not None:  # a pair that does not verify is a put killed mid-commit: replaced
                        if existing["sha256"] != sha256:
                            raise ObjectExistsError(
                                f"object {key!r} already exists in {self.root} with different content "
                                f"(sha256 {existing['sha256'][:16]}..., new {sha256[:16]}...)"
                            )
                        return self._stored(key, existing)
                    data_path.parent.mkdir(parents=True, exist_ok=True)
                    meta_path.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp_meta.name, meta_path)
                    os.replace(tmp_data.name, data_path)
            finally:
                Path(tmp_meta.name).unlink(missing_ok=True)
        except OSError as err:
            raise StorageError(f"cannot write object {key!r} in {self.root}: {err.strerror or err}") from None
        finally:
            Path(tmp_data.name).unlink(missing_ok=True)
        return self._stored(key, record)

    def _open_with_record(self, key: str) -> tuple[dict[str, Any], BinaryIO]:
        """The key's checksum record and an open handle on its data, taken as a consistent pair."""
        validate_key(key)
        with self._locked([key], exclusive=False):
            record = self._read_record(key)
            try:
                return record, open(self._data_path(key), "rb")
            except FileNotFoundError:
                raise ObjectNotFoundError(f"no object {key!r} in {self.root}") from None

    def _committed_record(self, key: str) -> dict[str, Any] | None:
        """The sidecar of an existing object if its data verifies against it, else None (caller holds the lock)."""
        try:
            record = self._read_record(key)
            with open(self._data_path(key), "rb") as handle:
                sha256, size = copy_hashing(handle, None)
        except (CorruptObjectError, ObjectNotFoundError, FileNotFoundError):
            return None
        return record if (sha256, size) == (record["sha256"], record["size"]) else None

    def _read_record(self, key: str) -> dict[str, Any]:
        """The sidecar of an existing object; a missing or unreadable sidecar means corruption."""
        if not self._data_path(key).is_file():
            raise ObjectNotFoundError(f"no object {key!r} in {self.root}")
        meta_path = self._meta_path(key)
        if not meta_path.exists():
            raise CorruptObjectError(f"object {key!r} in {self.root} has no checksum record")
        return self._read_json(meta_path)

    def _read_json(self, meta_path: Path) -> dict[str, Any]:
        try:
            record = json.loads(meta_path.read_bytes())
            if isinstance(record["sha256"], str) and isinstance(record["size"], int):
                return record
        except (ValueError, KeyError, TypeError):
            pass
        raise CorruptObjectError(f"checksum record {meta_path} is unreadable")

    def _stored(self, key: str, record: Mapping[str, Any]) -> StoredObject:
        return StoredObject(self.uri(key), key, record["size"], record["sha256"], record.get("metadata", {}))

    def _data_path(self, key: str) -> Path:
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self.root / _META_DIR / f"{key}.json"

    def _new_tmp(self) -> IO[bytes]:
        return new_temp_file(self.root / _TMP_DIR, "")

    @contextmanager
    def _locked(self, keys: Sequence[str], *, exclusive: bool = True) -> Iterator[None]:
        """Hold the lock stripes of ``keys`` (in a fixed order, so two keys cannot deadlock)."""
        stripes = sorted({int(hashlib.sha256(k.encode()).hexdigest(), 16) % _LOCK_STRIPES for k in keys})
        with ExitStack() as stack:
            for stripe in stripes:
                handle = stack.enter_context(open(self.root / _LOCK_DIR / f"{stripe:02x}.lock", "a+b"))
                fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield


def _fsync(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
