"""The object-store interface shared by the local-directory and S3 backends, and ``open_store``.

Keys are '/'-separated relative names. Every stored object carries its SHA-256 and size
(S3 user metadata or a local sidecar) and every read verifies them, so a truncated or
altered object surfaces as ``CorruptObjectError`` instead of bad data.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from storage import settings
from storage.errors import CorruptObjectError, StoreConfigError

if TYPE_CHECKING:
    from storage.s3_store import S3Options

CHUNK_SIZE = 1024 * 1024
MAX_KEY_BYTES = 1024
_METADATA_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
RESERVED_METADATA = frozenset({"sha256", "size"})


@dataclass(frozen=True)
class StoredObject:
    """Where an object lives (URI, key) and what it holds (byte size, SHA-256 hex, user metadata)."""

    uri: str
    key: str
    size: int
    sha256: str
    metadata: Mapping[str, str] = field(default_factory=dict)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative '/'-separated name, else raise ``ValueError``.

    Components may not be empty, '.'/'..' or start with '.', which keeps keys portable
    between S3 and a directory tree and leaves dot-names free for the local store's internals.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"object key longer than {MAX_KEY_BYTES} bytes: {key[:60]}...")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"object key contains a backslash or NUL: {key!r}")
    for part in key.split("/"):
        if not part or part.startswith("."):
            raise ValueError(f"object key has an empty or dot-prefixed component: {key!r}")
    return key


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Check user metadata is portable to S3 (lower-case names, printable ASCII values)."""
    checked: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        if not _METADATA_NAME.match(name) or name in RESERVED_METADATA:
            raise ValueError(f"metadata name {name!r} must be lower-case [a-z0-9-] and not reserved")
        if not isinstance(value, str) or not value.isascii() or not value.isprintable():
            raise ValueError(f"metadata value for {name!r} must be a printable ASCII string")
        checked[name] = value
    return checked


def copy_hashing(source: IO[bytes], dest: IO[bytes] | None = None) -> tuple[str, int]:
    """Stream ``source`` (into ``dest`` if given) and return its SHA-256 hex digest and size."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
        if dest is not None:
            dest.write(chunk)
    return digest.hexdigest(), size


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of the file at ``path``."""
    with open(path, "rb") as fh:
        return copy_hashing(fh)


def new_temp_file(directory: Path, prefix: str) -> IO[bytes]:
    """A new uniquely named file in ``directory``, open for writing, to be renamed into place.

    Created like any new file (mode 0o666 less the umask), so that a video or object renamed from
    it is readable as the user expects; ``tempfile``'s own files are owner-only (0o600).
    """
    return open(Path(directory) / f"{prefix}{secrets.token_hex(8)}", "xb")


def verify_integrity(key: str, sha256: str, size: int, expected_sha256: str, expected_size: int) -> None:
    """Raise ``CorruptObjectError`` unless the read bytes match the recorded size and digest."""
    if size != expected_size:
        raise CorruptObjectError(f"object {key!r} is truncated or padded: read {size} bytes, recorded {expected_size}")
    if sha256 != expected_sha256:
        raise CorruptObjectError(
            f"object {key!r} failed its SHA-256 check: read {sha256[:16]}..., recorded {expected_sha256[:16]}..."
        )


class ObjectStore(ABC):
    """put / get / exists / delete / list / move / URI over '/'-separated keys, with verified reads."""

    @abstractmethod
    def put_bytes(
        self, key: str, data: bytes, *, create_only: bool = False, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        """Store ``data`` atomically under ``key``.

        With ``create_only`` an existing object with the same SHA-256 is success and a
        different one raises ``ObjectExistsError`` (for content-addressed keys).
        """

    @abstractmethod
    def put_file(
        self, key: str, path: Path, *, create_only: bool = False, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        """Store the file at ``path`` atomically under ``key``; same create-only rules as ``put_bytes``."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the object's bytes after checking size and SHA-256 (``CorruptObjectError`` if not)."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> StoredObject:
        """Write the object to ``dest`` atomically, verified; ``dest`` is untouched on failure."""

    @abstractmethod
    def stat(self, key: str) -> StoredObject:
        """Recorded size, SHA-256 and metadata of ``key`` without reading its bytes."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with the string ``prefix``, in lexicographic order."""

    @abstractmethod
    def move(self, key: str, new_key: str) -> None:
        """Rename ``key`` to ``new_key`` without verifying it (used to quarantine corrupt objects).

        Raises ``ObjectExistsError`` if ``new_key`` is taken, so nothing is overwritten.
        """

    @abstractmethod
    def uri(self, key: str) -> str:
        """A URI naming the object: ``file://`` for local, ``s3://`` for S3."""

    def presign(self, key: str, expires: int = 3600) -> str:
        """A URL a client can fetch the object from; local stores return their ``file://`` URI."""
        del expires
        return self.uri(key)


def open_store(url: str | None = None, *, s3: S3Options | None = None) -> ObjectStore:
    """Open the store at ``url`` (a path, ``file://`` or ``s3://bucket/prefix``; default from settings).

    The store is validated here (directory writable, bucket reachable) so a bad URL fails
    before any work starts, with ``StoreConfigError``.
    """
    url = url or settings.store_url()
    parts = urlsplit(url)
    if parts.scheme == "s3":
        from storage.s3_store import S3Store

        return S3Store(url, s3)
    if s3 is not None:
        raise StoreConfigError(f"S3 options given for a non-S3 store URL: {url}")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise StoreConfigError(f"unsupported file URL (use file:///absolute/path): {url}")
        path = Path(unquote(parts.path))
    elif parts.scheme == "":
        path = Path(url)
    else:
        raise StoreConfigError(
            f"unsupported object store URL scheme {parts.scheme!r} in {url} (use a path, file:// or s3://)"
        )
    from storage.local_store import LocalStore

    return LocalStore(path)
