"""Local-directory object store: atomic verified put/get, create-only, corruption, URLs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.request import urlopen

import pytest

from storage import (
    CorruptObjectError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StoreConfigError,
    open_store,
)
from storage.local_store import STALE_TEMP_SECONDS, LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    opened = open_store(str(tmp_path / "store"))
    assert isinstance(opened, LocalStore)
    return opened


def _internal_files(store: LocalStore, sub: str) -> list[Path]:
    return [p for p in (store.root / sub).rglob("*") if p.is_file()]


def test_put_get_roundtrip_records_sha256_and_metadata(store: LocalStore) -> None:
    data = b"latent bytes" * 1000
    stored = store.put_bytes("anchors/abc.bin", data, metadata={"model-revision": "r1"})

    assert stored.key == "anchors/abc.bin"
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("anchors/abc.bin") == data
    assert store.stat("anchors/abc.bin").metadata == {"model-revision": "r1"}
    assert store.exists("anchors/abc.bin") and not store.exists("anchors/other.bin")
    with urlopen(store.uri("anchors/abc.bin")) as response:  # file:// URI points at the plain file
        assert response.read() == data
    assert _internal_files(store, ".tmp") == []


def test_put_file_and_get_file_are_verified_and_atomic(store: LocalStore, tmp_path: Path) -> None:
    source = tmp_path / "video.mp4"
    source.write_bytes(b"\x00mp4" * 300_000)
    stored = store.put_file("videos/v.mp4", source)
    dest = tmp_path / "out" / "copy.mp4"

    fetched = store.get_file("videos/v.mp4", dest)

    assert dest.read_bytes() == source.read_bytes()
    assert fetched.sha256 == stored.sha256
    assert [p.name for p in dest.parent.iterdir()] == ["copy.mp4"]  # no temp file left next to it


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_stored_and_fetched_files_follow_the_umask(store: LocalStore, tmp_path: Path, umask, mask: int, mode: int) -> None:
    umask(mask)
    source = tmp_path / "video.mp4"
    source.write_bytes(b"mp4")
    store.put_file("videos/v.mp4", source)
    dest = tmp_path / "out" / "v.mp4"
    store.get_file("videos/v.mp4", dest)

    assert (store.root / "videos" / "v.mp4").stat().st_mode & 0o777 == mode
    assert dest.stat().st_mode & 0o777 == mode


def test_list_prefix_is_sorted_and_hides_internal_files(store: LocalStore) -> None:
    for key in ("b/2", "a/1", "a/0", "ab", "c"):
        store.put_bytes(key, key.encode())

    assert list(store.list()) == ["a/0", "a/1", "ab", "b/2", "c"]
    assert list(store.list("a/")) == ["a/0", "a/1"]
    assert list(store.list("a")) == ["a/0", "a/1", "ab"]
    assert list(store.list("missing/")) == []


def test_delete_removes_object_and_is_idempotent(store: LocalStore) -> None:
    store.put_bytes("x/y", b"1")
    store.delete("x/y")
    store.delete("x/y")

    assert not store.exists("x/y")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("x/y")


def test_create_only_same_content_succeeds_different_content_conflicts(store: LocalStore) -> None:
    first = store.put_bytes("k", b"same", create_only=True)
    again = store.put_bytes("k", b"same", create_only=True)

    with pytest.raises(ObjectExistsError, match="different content"):
        store.put_bytes("k", b"other", create_only=True)

    assert again.sha256 == first.sha256
    assert store.get_bytes("k") == b"same"
    assert store.put_bytes("k", b"other").size == 5  # a plain put overwrites
    assert store.get_bytes("k") == b"other"


def test_a_put_killed_between_its_renames_is_repaired_by_the_create_only_retry(store: LocalStore) -> None:
    """The overwriting put dies (a real process exit) after its new sidecar is in place but before its data."""
    store.put_bytes("k", b"old content")
    child = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from storage.local_store import LocalStore\n"
        "real = os.replace\n"
        "def dying(src, dst):\n"
        "    real(src, dst)\n"
        "    os._exit(9)\n"
        "os.replace = dying\n"
        "LocalStore(Path(sys.argv[1])).put_bytes('k', b'new content!')\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(store.root)], cwd=Path(__file__).parents[1])
    assert done.returncode == 9
    with pytest.raises(CorruptObjectError):
        store.get_bytes("k")  # new sidecar, old data: detected

    retried = store.put_bytes("k", b"new content!", create_only=True)

    assert retried.size == 12 and store.get_bytes("k") == b"new content!"



def test_the_temporary_file_of_a_put_killed_with_sigkill_goes_when_the_store_is_next_opened_a_day_later(
    store: LocalStore, tmp_path: Path
) -> None:
    """A real process, killed with SIGKILL while its put copies from a pipe, leaves its temporary file in .tmp."""
    source = tmp_path / "source"
    os.mkfifo(source)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from storage.local_store import LocalStore; "
         "LocalStore(Path(sys.argv[1])).put_file('videos/v.mp4', Path(sys.argv[2]))", str(store.root), str(source)],
        cwd=Path(__file__).parents[1],
    )
    with open(source, "wb") as pipe:
        pipe.write(b"the first part of a video")
        pipe.flush()
        deadline = time.monotonic() + 60
        while not _internal_files(store, ".tmp"):  # the put has made its temporary file and copies into it
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    [left] = _internal_files(store, ".tmp")

    LocalStore(store.root)
    assert left.exists()  # a day has not passed: it could be a live put's
    a_day_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(left, (a_day_ago, a_day_ago))
    live = store.root / ".tmp" / "a-live-put"
    live.write_bytes(b"being written")
    LocalStore(store.root)
    assert not left.exists() and live.exists()
    assert not store.exists("videos/v.mp4")

def test_concurrent_create_only_writers_have_one_winner(store: LocalStore) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        try:
            store.put_bytes("race", f"writer {i}".encode(), create_only=True)
            result = "won"
        except ObjectExistsError:
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("won") == 1 and outcomes.count("conflict") == 7
    assert store.get_bytes("race").startswith(b"writer ")


def test_flipped_byte_is_detected_on_read(store: LocalStore, tmp_path: Path) -> None:
    store.put_bytes("obj", b"0123456789" * 100)
    path = store.root / "obj"
    damaged = bytearray(path.read_bytes())
    damaged[500] ^= 0xFF
    path.write_bytes(bytes(damaged))

    with pytest.raises(CorruptObjectError, match="SHA-256"):
        store.get_bytes("obj")
    dest = tmp_path / "dest.bin"
    with pytest.raises(CorruptObjectError):
        store.get_file("obj", dest)
    assert not dest.exists()


def test_truncated_object_is_detected_on_read(store: LocalStore) -> None:
    store.put_bytes("obj", b"x" * 4096)
    (store.root / "obj").write_bytes(b"x" * 1000)

    with pytest.raises(CorruptObjectError, match="truncated"):
        store.get_bytes("obj")


def test_object_without_checksum_record_is_corrupt(store: LocalStore) -> None:
    store.put_bytes("obj", b"data")
    (store.root / ".meta" / "obj.json").unlink()

    with pytest.raises(CorruptObjectError, match="no checksum record"):
        store.get_bytes("obj")


def test_move_renames_and_never_overwrites(store: LocalStore) -> None:
    store.put_bytes("a", b"A")
    store.put_bytes("b", b"B")

    store.move("a", "quarantine/a")
    with pytest.raises(ObjectExistsError):
        store.move("b", "quarantine/a")

    assert not store.exists("a")
    assert store.get_bytes("quarantine/a") == b"A"
    assert store.get_bytes("b") == b"B"
    with pytest.raises(ObjectNotFoundError):
        store.move("a", "elsewhere")


def test_move_works_for_an_object_missing_its_sidecar(store: LocalStore) -> None:
    store.put_bytes("broken", b"?")
    (store.root / ".meta" / "broken.json").unlink()

    store.move("broken", "quarantine/broken")

    assert (store.root / "quarantine" / "broken").read_bytes() == b"?"


def test_unreadable_source_file_leaves_nothing_behind(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read"):
        store.put_file("k", tmp_path / "does-not-exist")

    assert not store.exists("k")
    assert _internal_files(store, ".tmp") == []


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", ".hidden", "a/.meta/b", "trailing/", "a\\b"])
def test_unsafe_keys_are_rejected(store: LocalStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")


def test_metadata_must_be_portable(store: LocalStore) -> None:
    with pytest.raises(ValueError):
        store.put_bytes("k", b"x", metadata={"Upper": "v"})
    with pytest.raises(ValueError):
        store.put_bytes("k", b"x", metadata={"sha256": "forged"})
    assert not store.exists("k")


def test_open_store_accepts_path_and_file_url(tmp_path: Path) -> None:
    by_url = open_store((tmp_path / "s").as_uri())
    by_url.put_bytes("k", b"v")

    assert open_store(str(tmp_path / "s")).get_bytes("k") == b"v"
    sidecar = json.loads((tmp_path / "s" / ".meta" / "k.json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(b"v").hexdigest()


@pytest.mark.parametrize("url", ["gs://bucket/x", "file://otherhost/tmp/x", "file:///tmp/x?query=1"])
def test_open_store_rejects_unsupported_urls(url: str) -> None:
    with pytest.raises(StoreConfigError):
        open_store(url)


def test_open_store_rejects_a_file_as_directory(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")

    with pytest.raises(StoreConfigError, match="cannot use"):
        open_store(str(not_a_dir))
