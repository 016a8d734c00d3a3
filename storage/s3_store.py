"""S3 object store on boto3, for AWS or any S3-compatible endpoint (MinIO, Ceph, moto).

Configured by an ``s3://bucket/prefix`` URL plus the usual AWS environment or profile;
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (or ``S3Options.endpoint_url``) select a
non-AWS endpoint, which is then addressed path-style and sent CRC checksum headers only
where the API requires them (several S3-compatible servers reject botocore's default ones).
Uploads go through boto3's managed transfer, so objects above ``multipart_threshold`` are
multipart and only become visible when the upload completes. Create-only writes send
``If-None-Match: *`` on the PUT, the multipart completion and server-side copies. The
SHA-256 lives in user metadata ``sha256``. Transient network errors are retried by
botocore (``max_attempts``, standard mode).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError, ProfileNotFound
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError

from storage.errors import (
    CorruptObjectError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StoreConfigError,
    StoreUnreachableError,
)
from storage.object_store import (
    ObjectStore,
    StoredObject,
    copy_hashing,
    file_sha256,
    new_temp_file,
    validate_key,
    validate_metadata,
    verify_integrity,
)

MiB = 1024 * 1024
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_CONFLICT = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}
_CREATE_ONLY_EVENTS = (
    "before-parameter-build.s3.PutObject",
    "before-parameter-build.s3.CompleteMultipartUpload",
    "before-parameter-build.s3.CopyObject",
)
# botocore >= 1.36 adds CRC checksum headers to every request it can ("when_supported"), which
# several S3-compatible servers reject; off AWS send them only where the API demands them
# (integrity is already checked against our own SHA-256 metadata).
_COMPATIBLE_CHECKSUMS = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}


@dataclass(frozen=True)
class S3Options:
    """Client and transfer settings; ``None`` fields fall back to the AWS environment/profile."""

    endpoint_url: str | None = None
    region_name: str | None = None
    profile_name: str | None = None
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 8
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into bucket and prefix (no slashes at its ends)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or parts.query or parts.fragment:
        raise StoreConfigError(f"not an s3://bucket/prefix URL: {url}")
    if not _BUCKET_NAME.fullmatch(parts.netloc):
        raise StoreConfigError(f"invalid S3 bucket name {parts.netloc!r} in {url}")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except ValueError as err:
            raise StoreConfigError(f"invalid key prefix in {url}: {err}") from None
    return parts.netloc, prefix


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix``; the bucket is checked when the store is opened."""

    def __init__(self, url: str, options: S3Options | None = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.options = options or S3Options()
        self.endpoint_url = (
            self.options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise StoreConfigError(
                f"S3 endpoint {self.endpoint_url!r} (S3 options, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL) must start "
                "with http:// or https://"
            )
        try:
            session = boto3.session.Session(
                profile_name=self.options.profile_name, region_name=self.options.region_name
            )
        except ProfileNotFound as err:
            raise StoreConfigError(f"cannot open {url}: {err}") from None
        config = Config(
            retries={"max_attempts": self.options.max_attempts, "mode": "standard"},
            connect_timeout=self.options.connect_timeout,
            read_timeout=self.options.read_timeout,
            signature_version="s3v4",
            s3={"addressing_style": "path"} if self.endpoint_url else None,
            **(_COMPATIBLE_CHECKSUMS if self.endpoint_url else {}),
        )
        self._client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        # Opening is a quick check: an endpoint that accepts connections but never answers fails in seconds, not in
        # the max_attempts x read_timeout that a large transfer is allowed.
        self._probe_client = session.client("s3", endpoint_url=self.endpoint_url, config=config.merge(Config(
            retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=min(5.0, self.options.connect_timeout),
            read_timeout=min(10.0, self.options.read_timeout))))
        self._create_only_client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        for event in _CREATE_ONLY_EVENTS:
            self._create_only_client.meta.events.register(event, _require_absent)
        self._transfer = TransferConfig(
            multipart_threshold=self.options.multipart_threshold,
            multipart_chunksize=self.options.multipart_chunksize,
            max_concurrency=self.options.max_concurrency,
        )
        self._check_bucket()

    def put_bytes(
        self, key: str, data: bytes, *, create_only: bool = False, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        sha256 = hashlib.sha256(data).hexdigest()
        return self._upload(key, io.BytesIO(data), sha256, len(data), create_only, metadata)

    def put_file(
        self, key: str, path: Path, *, create_only: bool = False, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        try:
            sha256, size = file_sha256(path)
            source = open(path, "rb")
        except OSError as err:
            raise StorageError(f"cannot read {path} to store as {key!r}: {err.strerror or err}") from None
        with source:
            return self._upload(key, source, sha256, size, create_only, metadata)

    def get_bytes(self, key: str) -> bytes:
        full_key = self._full_key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=full_key)
            data = response["Body"].read()
        except (BotoCoreError, ClientError) as err:
            raise self._error("download", key, err) from None
        expected = _recorded_sha256(self.uri(key), response)
        verify_integrity(key, hashlib.sha256(data).hexdigest(), len(data), expected, response["ContentLength"])
        return data

    def get_file(self, key: str, dest: Path) -> StoredObject:
        stored = self.stat(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_file(dest.parent, f".{dest.name}.")
        try:
            with tmp:
                self._client.download_fileobj(self.bucket, self._full_key(key), tmp, Config=self._transfer)
                tmp.flush()
                os.fsync(tmp.fileno())
            with open(tmp.name, "rb") as written:
                sha256, size = copy_hashing(written)
            verify_integrity(key, sha256, size, stored.sha256, stored.size)
            os.replace(tmp.name, dest)
        except (BotoCoreError, ClientError, Boto3Error, RetriesExceededError) as err:
            raise self._error("download", key, err) from None
        finally:
            Path(tmp.name).unlink(missing_ok=True)
        return stored

    def read_external(self, key: str) -> bytes:
        """Bytes of an object this store did not write (e.g. a user's prompt file under the
        prefix), which has no recorded SHA-256 to verify; any key S3 accepts is allowed."""
        full_key = f"{self.prefix}/{key}" if self.prefix else key
        where = f"s3://{self.bucket}/{full_key}"
        try:
            return self._client.get_object(Bucket=self.bucket, Key=full_key)["Body"].read()
        except (BotoCoreError, ClientError) as err:
            raise self._error_at("download", where, err) from None

    def stat(self, key: str) -> StoredObject:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._full_key(key))
        except (BotoCoreError, ClientError) as err:
            raise self._error("stat", key, err) from None
        sha256 = _recorded_sha256(self.uri(key), head)
        user_metadata = {k: v for k, v in head["Metadata"].items() if k != "sha256"}
        return StoredObject(self.uri(key), key, head["ContentLength"], sha256, user_metadata)

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._full_key(key))
        except ClientError as err:
            if _code(err) in _NOT_FOUND:
                return False
            raise self._error("stat", key, err) from None
        except BotoCoreError as err:
            raise self._error("stat", key, err) from None
        return True

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full_key(key))
        except (BotoCoreError, ClientError) as err:
            raise self._error("delete", key, err) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][strip:]
        except (BotoCoreError, ClientError) as err:
            raise self._error_at("list", f"s3://{self.bucket}/{full_prefix}", err) from None

    def move(self, key: str, new_key: str) -> None:
        """Server-side copy then delete. The destination is checked first and the copy is also
        conditional (``If-None-Match``) where the endpoint honours it, so nothing is overwritten."""
        source = {"Bucket": self.bucket, "Key": self._full_key(key)}
        if self.exists(new_key):
            raise ObjectExistsError(f"cannot move {key!r}: {self.uri(new_key)} already exists")
        try:
            self._create_only_client.copy(source, self.bucket, self._full_key(new_key), Config=self._transfer)
        except ClientError as err:
            if _code(err) in _CONFLICT:
                raise ObjectExistsError(f"cannot move {key!r}: {self.uri(new_key)} already exists") from None
            raise self._error("move", key, err) from None
        except (BotoCoreError, Boto3Error) as err:
            raise self._error("move", key, err) from None
        self.delete(key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def presign(self, key: str, expires: int = 3600) -> str:
        """A time-limited HTTPS GET URL for the object."""
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full_key(key)}, ExpiresIn=expires
        )

    def _upload(
        self, key: str, source: BinaryIO, sha256: str, size: int, create_only: bool, metadata: Mapping[str, str] | None
    ) -> StoredObject:
        """One managed transfer (single PUT or multipart); a create-only conflict compares digests."""
        user_metadata = validate_metadata(metadata)
        client = self._create_only_client if create_only else self._client
        try:
            client.upload_fileobj(
                source,
                self.bucket,
                self._full_key(key),
                ExtraArgs={"Metadata": {**user_metadata, "sha256": sha256}},
                Config=self._transfer,
            )
        except ClientError as err:
            if not (create_only and _code(err) in _CONFLICT):
                raise self._error("upload", key, err) from None
            existing = self.stat(key)
            if existing.sha256 != sha256:
                raise ObjectExistsError(
                    f"object {self.uri(key)} already exists with different content "
                    f"(sha256 {existing.sha256[:16]}..., new {sha256[:16]}...)"
                ) from None
            return existing
        except (BotoCoreError, Boto3Error) as err:
            raise self._error("upload", key, err) from None
        return StoredObject(self.uri(key), key, size, sha256, user_metadata)

    def _check_bucket(self) -> None:
        where = f"s3://{self.bucket} at {self.endpoint_url or 'AWS'}"
        try:
            self._probe_client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise StoreConfigError(
                f"no AWS credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            ) from None
        except ClientError as err:
            code = _code(err)
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise StoreConfigError(f"S3 bucket does not exist: {where}") from None
            if code in {"403", "AccessDenied"}:
                raise StoreConfigError(f"access denied to {where}: check the credentials") from None
            raise StoreConfigError(f"cannot open {where}: {code} {_message(err)}") from None
        except BotoCoreError as err:
            raise StoreConfigError(f"cannot reach {where}: {err}") from None

    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, action: str, key: str, err: Exception) -> StorageError:
        """Map a boto error on ``key`` to the store's exceptions, with a one-line message."""
        return self._error_at(action, self.uri(key), err)

    def _error_at(self, action: str, where: str, err: Exception) -> StorageError:
        if isinstance(err, ClientError):
            if _code(err) in _NOT_FOUND:
                return ObjectNotFoundError(f"no object {where}")
            return StorageError(f"S3 {action} of {where} failed: {_code(err)} {_message(err)}")
        detail = str(err).replace("\n", " ")
        # No answer: refused, dropped, timed out (s3transfer's RetriesExceededError: a download cut off that often).
        unreachable = isinstance(err, (BotoConnectionError, HTTPClientError, RetriesExceededError))
        return (StoreUnreachableError if unreachable else StorageError)(
            f"S3 {action} of {where} failed (after up to {self.options.max_attempts} attempts): {detail}"
        )


def _require_absent(params: dict[str, Any], **_: Any) -> None:
    """botocore hook: make the write conditional on the key not existing yet."""
    params["IfNoneMatch"] = "*"


def _recorded_sha256(uri: str, response: Mapping[str, Any]) -> str:
    sha256 = response.get("Metadata", {}).get("sha256")
    if not sha256:
        raise CorruptObjectError(f"object {uri} has no sha256 metadata")
    return sha256


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _message(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Message", "")).replace("\n", " ")
