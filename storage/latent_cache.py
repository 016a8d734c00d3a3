"""Content-addressed cache of anchor latents, detail latents and final videos in an object store.

Each entry is a payload plus a small JSON record under the same key::

    anchors/<key>.safetensors  + anchors/<key>.json
    details/<key>.safetensors  + details/<key>.json
    videos/<key>.mp4           + videos/<key>.json

Keys are SHA-256 digests of canonical JSON over everything that determines the artifact,
so a hit can be reused across batches. A corrupt, truncated or inconsistent entry is
moved under ``quarantine/<UTC stamp>/`` (never deleted) and reported as a miss, so the
caller recomputes. torch and safetensors are imported only inside the methods using them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.enums import ArtifactKind
from storage.errors import CorruptObjectError, ObjectExistsError, ObjectNotFoundError
from storage.object_store import ObjectStore, StoredObject

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

KEY_SCHEMA = "pixelwizard-cache-v1"
QUARANTINE_PREFIX = "quarantine"

# Everything that determines the anchor video's latent, with the JSON type each must have.
ANCHOR_KEY_FIELDS: dict[str, type] = {
    "model_revision": str,
    "prompt": str,
    "negative_prompt": str,
    "seed": int,
    "anchor_width": int,
    "anchor_height": int,
    "num_frames": int,
    "steps": int,
    "shift": float,
    "guidance_scale": float,
    "sampler": str,
    "dtype": str,
}

_LAYOUT: dict[ArtifactKind, tuple[str, str]] = {
    ArtifactKind.anchor_latent: ("anchors", ".safetensors"),
    ArtifactKind.detail_latent: ("details", ".safetensors"),
    ArtifactKind.video: ("videos", ".mp4"),
}
CACHE_AREAS = (*(prefix for prefix, _ in _LAYOUT.values()), QUARANTINE_PREFIX)  # the store's top-level prefixes
_RESERVED_RECORD_FIELDS = frozenset({"kind", "key", "created_at", "object", "tensors"})


def anchor_cache_key(params: Mapping[str, Any]) -> str:
    """Cache key of an anchor latent over ``ANCHOR_KEY_FIELDS`` (other entries are ignored).

    Raises ``ValueError`` if a field is missing or has the wrong type; numbers are
    canonicalised so ``5`` and ``5.0`` give the same key.
    """
    missing = [name for name in ANCHOR_KEY_FIELDS if name not in params]
    if missing:
        raise ValueError(f"anchor cache key is missing field(s): {', '.join(missing)}")
    for name, expected in ANCHOR_KEY_FIELDS.items():
        value = params[name]
        numeric_ok = expected is float and isinstance(value, int)
        if isinstance(value, bool) or not (isinstance(value, expected) or numeric_ok):
            raise ValueError(f"anchor cache key field {name!r} must be {expected.__name__}, got {value!r}")
    return _digest(ArtifactKind.anchor_latent, {name: params[name] for name in ANCHOR_KEY_FIELDS})


def artifact_key(kind: ArtifactKind | str, params: Mapping[str, Any]) -> str:
    """Cache key of any artifact: SHA-256 of canonical JSON over ``kind`` and all of ``params``.

    Include upstream keys in ``params`` (e.g. the anchor key for a detail latent) so that a
    change upstream changes this key too.
    """
    return _digest(ArtifactKind(kind), dict(params))


def _digest(kind: ArtifactKind, fields: Mapping[str, Any]) -> str:
    document = {"schema": KEY_SCHEMA, "kind": kind.value, "fields": _canonical(fields)}
    try:
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cache key parameters must be finite JSON values: {err}") from None
    return hashlib.sha256(encoded.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """Integral floats become ints so equal numbers hash equally; containers are walked."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


class LatentCache:
    """Get/put cached latents and videos in ``store``; misses and corrupt entries return ``None``."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def put(
        self, kind: ArtifactKind | str, key: str, tensors: Mapping[str, Tensor], record: Mapping[str, Any]
    ) -> StoredObject:
        """Store ``tensors`` as safetensors with a JSON ``record`` (prompt, parameters, model revision)."""
        from safetensors.torch import save_file

        kind = _latent_kind(kind)
        cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        shapes = {
            name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for name, t in cpu.items()
        }
        with tempfile.TemporaryDirectory(prefix="pixelwizard-cache-") as tmp:
            path = Path(tmp) / "latent.safetensors"
            save_file(cpu, str(path))
            return self._put_entry(kind, key, path, record, {"tensors": shapes})

    def get(self, kind: ArtifactKind | str, key: str) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """The cached tensors (on CPU) and record, or ``None`` on a miss or a quarantined entry."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        kind = _latent_kind(kind)
        with tempfile.TemporaryDirectory(prefix="pixelwizard-cache-") as tmp:
            path = Path(tmp) / "latent.safetensors"
            record = self._fetch_entry(kind, key, path)
            if record is None:
                return None
            try:
                tensors = load_file(str(path))
                if set(tensors) != set(record["tensors"]):
                    raise CorruptObjectError("tensor names differ from the record")
            except (SafetensorError, CorruptObjectError, KeyError, TypeError) as err:
                self._quarantine(kind, key, f"unreadable safetensors: {err}")
                return None
        return tensors, record

    def put_video(self, key: str, path: Path, record: Mapping[str, Any]) -> StoredObject:
        """Store a finished MP4 with its JSON record."""
        return self._put_entry(ArtifactKind.video, key, Path(path), record, {})

    def get_video(self, key: str, dest: Path) -> dict[str, Any] | None:
        """Download the cached MP4 to ``dest`` (verified) and return its record, or ``None``."""
        return self._fetch_entry(ArtifactKind.video, key, Path(dest))

    def entry_object(self, kind: ArtifactKind | str, key: str) -> StoredObject | None:
        """The payload of a complete entry (record and payload), else ``None``; not verified here (a read is)."""
        payload_key, record_key = self._keys(ArtifactKind(kind), key)
        if not (self.store.exists(record_key) and self.store.exists(payload_key)):
            return None
        return self.payload_object(kind, key)

    def payload_object(self, kind: ArtifactKind | str, key: str) -> StoredObject:
        """The stored payload of an entry known to exist (e.g. just read with ``get``)."""
        return self.store.stat(self._keys(ArtifactKind(kind), key)[0])

    def payload_uri(self, kind: ArtifactKind | str, key: str) -> str:
        """Where the entry's payload is, or would be, in this cache's store (whether or not it exists)."""
        return self.store.uri(self._keys(ArtifactKind(kind), key)[0])

    def get_video_uri(self, key: str, *, expires: int = 3600) -> str | None:
        """A fetchable URI of the cached MP4 (presigned for S3) or ``None``; not verified here."""
        stored = self.entry_object(ArtifactKind.video, key)
        return None if stored is None else self.store.presign(stored.key, expires)

    def _put_entry(
        self, kind: ArtifactKind, key: str, path: Path, record: Mapping[str, Any], extra: Mapping[str, Any]
    ) -> StoredObject:
        """Write the payload create-only, then the record; a payload already there wins.

        Puts are atomic, so a payload already stored is another writer's complete one (a concurrent put of the
        same key, or one that stopped before its record). It is kept, never overwritten, and the record names it,
        so that record and payload agree whichever writer's record lands first; only a leftover that no reader
        could use (``_usable``), which no live writer leaves, is replaced.
        """
        clash = _RESERVED_RECORD_FIELDS & set(record)
        if clash:
            raise ValueError(f"record uses reserved field(s): {', '.join(sorted(clash))}")
        payload_key, record_key = self._keys(kind, key)
        try:
            stored = self.store.put_file(payload_key, path, create_only=True)
        except ObjectExistsError:
            try:
                stored = self.store.stat(payload_key)
            except CorruptObjectError:  # no usable checksum: nothing to keep
                stored = self.store.put_file(payload_key, path)
            else:
                if self.store.exists(record_key):
                    log.info("cache entry %s already stored by another writer; keeping it", payload_key)
                    return stored
                if not self._usable(kind, payload_key):
                    stored = self.store.put_file(payload_key, path)
        document = {
            **record,
            **extra,
            "kind": kind.value,
            "key": key,
            "created_at": datetime.now(UTC).isoformat(),
            "object": {"key": payload_key, "size": stored.size, "sha256": stored.sha256},
        }
        try:
            self.store.put_bytes(record_key, json.dumps(document, indent=2).encode(), create_only=True)
        except ObjectExistsError:
            log.info("cache record %s already written by another writer", record_key)
        return stored

    def _usable(self, kind: ArtifactKind, payload_key: str) -> bool:
        """Whether a payload stored without its record can be kept: a latent's safetensors header must read
        (an MP4 is kept as it is; the encoder only renames a finished one into place)."""
        if kind == ArtifactKind.video:
            return True
        from safetensors import SafetensorError, safe_open

        with tempfile.TemporaryDirectory(prefix="pixelwizard-cache-") as tmp:
            path = Path(tmp) / "kept.safetensors"
            try:
                self.store.get_file(payload_key, path)
                with safe_open(str(path), "pt"):
                    return True
            except (SafetensorError, CorruptObjectError, ObjectNotFoundError):
                return False

    def _fetch_entry(self, kind: ArtifactKind, key: str, dest: Path) -> dict[str, Any] | None:
        """Read the record and download the payload to ``dest``; quarantine and miss on any mismatch."""
        payload_key, record_key = self._keys(kind, key)
        try:
            record = json.loads(self.store.get_bytes(record_key))
        except ObjectNotFoundError:
            return None  # a payload without its record is an unfinished put; the next put keeps it if usable
        except (CorruptObjectError, ValueError) as err:
            self._quarantine(kind, key, str(err))
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
            fetched = Path(tmp) / dest.name  # beside dest, renamed onto it only once it matches the record
            try:
                stored = self.store.get_file(payload_key, fetched)
                if stored.sha256 != record["object"]["sha256"]:
                    raise CorruptObjectError(f"payload {payload_key} does not match its record")
            except ObjectNotFoundError:
                self._quarantine(kind, key, "record without payload")
                return None
            except (CorruptObjectError, KeyError, TypeError) as err:
                self._quarantine(kind, key, str(err))
                return None
            fetched.replace(dest)
        return record

    def _quarantine(self, kind: ArtifactKind, key: str, reason: str) -> None:
        """Move whatever exists of the entry under ``quarantine/<stamp>/`` and log why."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        for object_key in self._keys(kind, key):
            try:
                self.store.move(object_key, f"{QUARANTINE_PREFIX}/{stamp}/{object_key}")
            except ObjectNotFoundError:
                continue
        log.warning(
            "cache entry %s/%s is corrupt (%s); moved under %s/%s/ and treated as a miss",
            kind.value,
            key,
            reason,
            QUARANTINE_PREFIX,
            stamp,
        )

    @staticmethod
    def _keys(kind: ArtifactKind, key: str) -> tuple[str, str]:
        """(payload key, record key) of an entry; ``key`` must be a hex digest."""
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a lower-case hex digest, got {key!r}")
        prefix, suffix = _LAYOUT[kind]
        return f"{prefix}/{key}{suffix}", f"{prefix}/{key}.json"


def _latent_kind(kind: ArtifactKind | str) -> ArtifactKind:
    kind = ArtifactKind(kind)
    if kind not in (ArtifactKind.anchor_latent, ArtifactKind.detail_latent):
        raise ValueError(f"{kind.value} is not a latent kind")
    return kind
