"""S3 object store against a moto server over real HTTP: multipart, create-only, faults."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from urllib.request import urlopen

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from conftest import S3Bucket

from storage import (
    CorruptObjectError,
    ObjectExistsError,
    ObjectNotFoundError,
    StoreConfigError,
    open_store,
)
from storage.errors import StoreUnreachableError
from storage.s3_store import S3Options, S3Store

MiB = 1024 * 1024
DEFAULTS = S3Options()
SMALL_PARTS = S3Options(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)  # multipart above 5 MiB


def _open(bucket: S3Bucket, prefix: str = "runs/test", options: S3Options = DEFAULTS) -> S3Store:
    store = open_store(bucket.url(prefix), s3=replace(options, endpoint_url=bucket.endpoint_url))
    assert isinstance(store, S3Store)
    return store


def _stored_keys(bucket: S3Bucket) -> list[str]:
    return [item["Key"] for item in bucket.client.list_objects_v2(Bucket=bucket.name).get("Contents", [])]


def test_roundtrip_with_prefix_metadata_and_listing(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = _open(s3_bucket)
    stored = store.put_bytes("anchors/a.bin", b"abc", metadata={"model-revision": "r1"})
    store.put_bytes("anchors/b.bin", b"def")
    store.put_bytes("videos/c.mp4", b"ghi")

    assert stored.uri == f"s3://{s3_bucket.name}/runs/test/anchors/a.bin"
    assert stored.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert store.get_bytes("anchors/a.bin") == b"abc"
    assert store.stat("anchors/a.bin").metadata == {"model-revision": "r1"}
    assert list(store.list("anchors/")) == ["anchors/a.bin", "anchors/b.bin"]
    assert list(store.list()) == ["anchors/a.bin", "anchors/b.bin", "videos/c.mp4"]
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="runs/test/anchors/a.bin")
    assert head["Metadata"]["sha256"] == stored.sha256
    assert store.get_file("videos/c.mp4", tmp_path / "c.mp4").size == 3
    assert (tmp_path / "c.mp4").read_bytes() == b"ghi"

    store.delete("anchors/b.bin")
    store.delete("anchors/b.bin")
    assert not store.exists("anchors/b.bin") and store.exists("anchors/a.bin")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("anchors/b.bin")


def test_presigned_url_is_fetchable_over_http(s3_bucket: S3Bucket) -> None:
    store = _open(s3_bucket, prefix="")
    store.put_bytes("v.mp4", b"video!")

    url = store.presign("v.mp4", expires=60)

    assert url.startswith(s3_bucket.endpoint_url) and "Signature" in url
    with urlopen(url) as response:
        assert response.read() == b"video!"
    assert store.uri("v.mp4") == f"s3://{s3_bucket.name}/v.mp4"


def test_endpoint_from_standard_aws_env(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint_url)
    store = open_store(s3_bucket.url("p"))

    store.put_bytes("k", b"v")

    assert _stored_keys(s3_bucket) == ["p/k"]


def test_large_object_goes_multipart_and_roundtrips(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = _open(s3_bucket, options=SMALL_PARTS)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 * MiB))

    stored = store.put_file("details/big.safetensors", source, create_only=True)

    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="runs/test/details/big.safetensors")
    assert head["ETag"].strip('"').endswith("-3")  # completed from 3 parts
    assert head["Metadata"]["sha256"] == stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "back.bin"
    store.get_file("details/big.safetensors", dest)
    assert dest.read_bytes() == source.read_bytes()


def test_fetched_file_follows_the_umask(s3_bucket: S3Bucket, tmp_path: Path, umask) -> None:
    umask(0o022)
    store = _open(s3_bucket)
    store.put_bytes("videos/v.mp4", b"mp4")
    dest = tmp_path / "v.mp4"
    store.get_file("videos/v.mp4", dest)

    assert dest.read_bytes() == b"mp4"
    assert dest.stat().st_mode & 0o777 == 0o644  # not tempfile's owner-only 0o600


@pytest.mark.parametrize("size", [1024, 11 * MiB], ids=["single-put", "multipart"])
def test_create_only_conflict(s3_bucket: S3Bucket, size: int) -> None:
    store = _open(s3_bucket, options=SMALL_PARTS)
    original = os.urandom(size)
    different = original[:-1] + bytes([original[-1] ^ 1])
    first = store.put_bytes("k", original, create_only=True)

    again = store.put_bytes("k", original, create_only=True)
    with pytest.raises(ObjectExistsError, match="different content"):
        store.put_bytes("k", different, create_only=True)

    assert again.sha256 == first.sha256
    assert store.get_bytes("k") == original
    assert s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []


def test_move_is_create_only(s3_bucket: S3Bucket) -> None:
    store = _open(s3_bucket)
    store.put_bytes("a", b"A")
    store.put_bytes("b", b"B")

    store.move("a", "quarantine/a")
    with pytest.raises(ObjectExistsError):
        store.move("b", "quarantine/a")

    assert sorted(_stored_keys(s3_bucket)) == ["runs/test/b", "runs/test/quarantine/a"]
    assert store.get_bytes("quarantine/a") == b"A"  # checksum metadata travelled with it


def test_move_onto_a_key_created_after_the_check_is_refused(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The destination appears between move()'s exists() pre-check and its copy: here the check is
    # made to miss it. moto 5.2 ignores If-None-Match on CopyObject (it would overwrite), so the
    # create-only client answers as AWS does: 412 PreconditionFailed for If-None-Match: * onto an
    # existing key; the request itself still comes from botocore with the store's own headers.
    store = _open(s3_bucket)
    store.put_bytes("a", b"A")
    store.put_bytes("b", b"B")
    really_exists = store.exists
    monkeypatch.setattr(store, "exists", lambda key: key != "b" and really_exists(key))
    refused: list[str] = []

    def aws_conditional_copy(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        key = unquote(params["url_path"].lstrip("/"))
        if params["headers"].get("If-None-Match") != "*" or key not in _stored_keys(s3_bucket):
            return None
        refused.append(key)
        error = {"Code": "PreconditionFailed", "Message": "At least one of the pre-conditions did not hold"}
        return AWSResponse(params["url"], 412, {}, None), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 412}}

    store._create_only_client.meta.events.register("before-call.s3.CopyObject", aws_conditional_copy)

    with pytest.raises(ObjectExistsError, match=r"cannot move 'a': s3://.*/runs/test/b already exists"):
        store.move("a", "b")

    assert refused == ["runs/test/b"]
    assert store.get_bytes("b") == b"B" and store.get_bytes("a") == b"A"  # nothing overwritten, nothing deleted


def test_custom_endpoint_gets_no_optional_checksum_headers(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    # botocore >= 1.36 would add x-amz-checksum-crc32 / x-amz-sdk-checksum-algorithm to uploads and
    # x-amz-checksum-mode to downloads, which MinIO (older), Backblaze B2, Ceph... reject.
    store = _open(s3_bucket, options=SMALL_PARTS)
    sent: list[tuple[str, set[str]]] = []

    def record(request: AWSPreparedRequest, event_name: str, **_: Any) -> None:
        sent.append((event_name.rsplit(".", 1)[-1], {name.lower() for name in request.headers}))

    for client in (store._client, store._create_only_client):
        client.meta.events.register("before-send.s3", record)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 * MiB))

    store.put_bytes("plain", b"plain")
    store.put_bytes("create-only", b"create-only", create_only=True)
    store.put_file("multipart", big, create_only=True)
    store.get_bytes("plain")
    store.move("plain", "moved")

    operations = [operation for operation, _ in sent]
    assert operations.count("PutObject") == 2
    assert {"UploadPart", "CompleteMultipartUpload", "GetObject", "CopyObject"} <= set(operations)
    offending = {
        (operation, name)
        for operation, names in sent
        for name in names
        if name.startswith("x-amz-checksum-") or name == "x-amz-sdk-checksum-algorithm"
    }
    assert offending == set()


def test_tampered_object_is_detected(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = _open(s3_bucket)
    stored = store.put_bytes("k", b"original content")
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name, Key="runs/test/k", Body=b"original conten", Metadata={"sha256": stored.sha256}
    )

    with pytest.raises(CorruptObjectError):
        store.get_bytes("k")
    with pytest.raises(CorruptObjectError):
        store.get_file("k", tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_object_without_checksum_metadata_is_corrupt(s3_bucket: S3Bucket) -> None:
    store = _open(s3_bucket)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="runs/test/foreign", Body=b"no checksum")

    with pytest.raises(CorruptObjectError, match="no sha256 metadata"):
        store.get_bytes("foreign")


def test_external_objects_are_read_without_checksum(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.sources import read_source

    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="inputs/prompts.txt", Body=b"a cat\na dog\n")
    store = _open(s3_bucket, prefix="inputs")

    assert store.read_external("prompts.txt") == b"a cat\na dog\n"
    with pytest.raises(ObjectNotFoundError):
        store.read_external("missing.txt")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint_url)
    assert read_source(f"s3://{s3_bucket.name}/inputs/prompts.txt") == b"a cat\na dog\n"
    for key in ("inputs/night#2.txt", "inputs/q?v=1.txt"):  # a URL parser would take these for a fragment, a query
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=key, Body=key.encode())
        assert read_source(f"s3://{s3_bucket.name}/{key}") == key.encode()


@pytest.mark.parametrize(
    "url",
    ["s3://", "s3://Bad_Bucket/x", "s3://ab", "s3://bucket/x?versionId=1", "s3://bucket/a/../b", "s3://user@bucket/x"],
)
def test_bad_s3_url_fails_on_open(url: str, moto_endpoint: str, aws_env: None) -> None:
    with pytest.raises(StoreConfigError):
        open_store(url, s3=S3Options(endpoint_url=moto_endpoint))


def test_missing_bucket_fails_on_open(s3_bucket: S3Bucket) -> None:
    with pytest.raises(StoreConfigError, match="does not exist"):
        open_store("s3://pw-no-such-bucket/prefix", s3=S3Options(endpoint_url=s3_bucket.endpoint_url))


def test_an_endpoint_without_its_scheme_is_named_with_the_fix(aws_env: None, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "127.0.0.1:5055")
    with pytest.raises(StoreConfigError) as caught:
        open_store("s3://bucket/x")
    assert str(caught.value) == ("S3 endpoint '127.0.0.1:5055' (S3 options, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL) "
                                 "must start with http:// or https://")


def test_unreachable_endpoint_fails_on_open(aws_env: None) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreConfigError, match="cannot reach"):
        open_store("s3://bucket/x", s3=S3Options(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1))


def test_an_endpoint_that_never_answers_fails_on_open_within_the_checks_own_timeouts(aws_env: None) -> None:
    """A server that accepts connections and never replies (a hung proxy). With the store's default settings a
    request may wait 5 attempts x 60 s; opening checks with 2 attempts x 10 s instead."""
    silent, held = socket.create_server(("127.0.0.1", 0)), []

    def accept_and_say_nothing() -> None:
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(StoreConfigError, match="cannot reach .*Read timeout"):
            open_store("s3://bucket/x", s3=S3Options(endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}"))
    finally:
        silent.close()
        for connection in held:
            connection.close()
    assert time.monotonic() - started < 120  # a guard against the 300 s wait, not a speed target


def test_network_failure_mid_upload_is_retried_then_reported_without_partial_object(
    s3_bucket: S3Bucket, tmp_path: Path, tcp_proxy
) -> None:
    # Fault injected: a TCP proxy between boto3 and moto resets all connections after 7 MiB of a
    # 12 MiB multipart upload (mid part 2) and keeps resetting new ones -- the network is gone.
    proxy = tcp_proxy(s3_bucket.endpoint_url, cut_after=7 * MiB)
    store = open_store(
        s3_bucket.url("runs"),
        s3=replace(SMALL_PARTS, endpoint_url=proxy.url, max_attempts=3, max_concurrency=1),
    )
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 * MiB))
    with pytest.raises(
        StoreUnreachableError, match=r"S3 upload of s3://.*/runs/video\.mp4 failed \(after up to 3 attempts\)"
    ):
        store.put_file("video.mp4", source, create_only=True)

    assert proxy.is_cut.is_set()
    assert proxy.refused >= 2  # botocore retried over fresh connections
    assert _stored_keys(s3_bucket) == []  # the incomplete multipart upload is not an object
    with pytest.raises(ObjectNotFoundError):
        _open(s3_bucket, prefix="runs").get_bytes("video.mp4")
