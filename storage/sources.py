"""Reading input files (prompt lists) that users put somewhere: a path, file:// or s3:// URI.

Unlike store objects, these carry no SHA-256 of ours, so they are read as they are.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.errors import ObjectNotFoundError, StoreConfigError


def absolute_source(uri: str) -> str:
    """A plain path made absolute (a URI unchanged): what a batch records as its source, so that it names the file
    from any folder, and what a submitted run is given, so that a worker (in another folder) reads the same file."""
    if urlsplit(uri).scheme:  # s3:// or file://
        return uri
    return str(Path(uri).absolute())


def read_source(uri: str) -> bytes:
    """The bytes at ``uri``; ``ObjectNotFoundError``/``StoreConfigError`` with one-line messages."""
    if uri[:5].lower() == "s3://":  # split by hand: an S3 key may hold '#' and '?', which a URL parser cuts off
        from storage.s3_store import S3Store

        bucket, _, key = uri[5:].partition("/")
        if not bucket or not key.lstrip("/"):
            raise StoreConfigError(f"bad S3 URI {uri!r}: use s3://bucket/key")
        return S3Store(f"s3://{bucket}").read_external(key.lstrip("/"))
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file"):
        raise StoreConfigError(f"unsupported source {uri!r}: use a path, file:// or s3:// URI")
    path = Path(unquote(parts.path) if parts.scheme == "file" else uri)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ObjectNotFoundError(f"{uri}: no such file") from None
    except OSError as exc:
        raise StoreConfigError(f"{uri}: cannot read ({exc.strerror or exc})") from None
