"""Anchor/detail latent and video cache: keys, round trips, and quarantine of corrupt entries."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from conftest import S3Bucket

from storage import ObjectStore, open_store
from storage.latent_cache import ANCHOR_KEY_FIELDS, LatentCache, anchor_cache_key, artifact_key
from storage.local_store import LocalStore
from storage.s3_store import S3Options, S3Store

ANCHOR_PARAMS: dict[str, Any] = {
    "model_revision": "wan2.2-t2v-a14b@5f8c3e1",
    "prompt": "a lighthouse at dusk, waves crashing",
    "negative_prompt": "blurry",
    "seed": 42,
    "anchor_width": 832,
    "anchor_height": 480,
    "num_frames": 81,
    "steps": 40,
    "shift": 5.0,
    "guidance_scale": 4.0,
    "sampler": "unipc",
    "dtype": "bfloat16",
}
CHANGED_VALUES: dict[str, Any] = {
    "model_revision": "other",
    "prompt": "a lighthouse at dawn",
    "negative_prompt": "",
    "seed": 43,
    "anchor_width": 1280,
    "anchor_height": 720,
    "num_frames": 49,
    "steps": 30,
    "shift": 3.0,
    "guidance_scale": 4.5,
    "sampler": "euler",
    "dtype": "float16",
}


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return open_store(bucket.url("cache"), s3=S3Options(endpoint_url=bucket.endpoint_url))


def _latents() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "latent": torch.randn(16, 21, 60, 104, generator=generator).to(torch.bfloat16),
        "sigmas": torch.linspace(1, 0, 41),
    }


def _record() -> dict[str, Any]:
    return {
        "prompt": ANCHOR_PARAMS["prompt"],
        "parameters": ANCHOR_PARAMS,
        "model_revision": ANCHOR_PARAMS["model_revision"],
    }


def test_anchor_key_is_stable_and_canonical() -> None:
    key = anchor_cache_key(ANCHOR_PARAMS)

    assert len(key) == 64 and key == anchor_cache_key(dict(reversed(list(ANCHOR_PARAMS.items()))))
    assert anchor_cache_key({**ANCHOR_PARAMS, "shift": 5, "guidance_scale": 4}) == key  # 5 == 5.0
    assert anchor_cache_key({**ANCHOR_PARAMS, "output_fps": 24}) == key  # not part of the anchor


@pytest.mark.parametrize("field", list(ANCHOR_KEY_FIELDS))
def test_anchor_key_changes_with_every_field(field: str) -> None:
    assert anchor_cache_key({**ANCHOR_PARAMS, field: CHANGED_VALUES[field]}) != anchor_cache_key(ANCHOR_PARAMS)


def test_anchor_key_rejects_missing_and_mistyped_fields() -> None:
    params = {k: v for k, v in ANCHOR_PARAMS.items() if k not in ("seed", "sampler")}
    with pytest.raises(ValueError, match="seed, sampler"):
        anchor_cache_key(params)
    with pytest.raises(ValueError, match="'seed' must be int"):
        anchor_cache_key({**ANCHOR_PARAMS, "seed": "42"})
    with pytest.raises(ValueError, match="'steps' must be int"):
        anchor_cache_key({**ANCHOR_PARAMS, "steps": True})


def test_artifact_key_depends_on_kind_and_params() -> None:
    params = {"anchor_key": anchor_cache_key(ANCHOR_PARAMS), "width": 3840, "height": 2160, "steps": 4}

    assert artifact_key("detail_latent", params) == artifact_key("detail_latent", dict(params))
    assert artifact_key("detail_latent", params) != artifact_key("video", params)
    assert artifact_key("detail_latent", params) != artifact_key("detail_latent", {**params, "steps": 8})
    with pytest.raises(ValueError):
        artifact_key("detail_latent", {"bad": float("nan")})
    with pytest.raises(ValueError):
        artifact_key("not-a-kind", params)


def test_latent_roundtrip_with_record(store: ObjectStore) -> None:
    cache = LatentCache(store)
    key = anchor_cache_key(ANCHOR_PARAMS)
    tensors = _latents()

    assert cache.get("anchor_latent", key) is None
    stored = cache.put("anchor_latent", key, tensors, _record())
    hit = cache.get("anchor_latent", key)

    assert hit is not None
    loaded, record = hit
    assert set(loaded) == {"latent", "sigmas"}
    assert torch.equal(loaded["latent"], tensors["latent"]) and loaded["latent"].dtype == torch.bfloat16
    assert torch.equal(loaded["sigmas"], tensors["sigmas"])
    assert record["prompt"] == ANCHOR_PARAMS["prompt"]
    assert record["model_revision"] == ANCHOR_PARAMS["model_revision"]
    assert record["tensors"]["latent"] == {"shape": [16, 21, 60, 104], "dtype": "bfloat16"}
    assert record["created_at"].endswith("+00:00")
    assert record["object"]["sha256"] == stored.sha256
    assert stored.key == f"anchors/{key}.safetensors"
    assert sorted(store.list()) == [f"anchors/{key}.json", f"anchors/{key}.safetensors"]


def test_first_writer_wins_for_the_same_key(store: ObjectStore) -> None:
    cache = LatentCache(store)
    key = artifact_key("detail_latent", {"anchor": "x"})
    first = cache.put("detail_latent", key, {"latent": torch.zeros(4)}, {})

    second = cache.put("detail_latent", key, {"latent": torch.ones(4)}, {})

    hit = cache.get("detail_latent", key)
    assert hit is not None and torch.equal(hit[0]["latent"], torch.zeros(4))
    assert second.sha256 == first.sha256


def _corrupt_payload(store: ObjectStore, key: str, how: str) -> None:
    payload = f"anchors/{key}.safetensors"
    data = bytearray(store.get_bytes(payload))
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 3 :]
    if isinstance(store, LocalStore):  # damage the file on disk behind the store's back
        (store.root / payload).write_bytes(bytes(data))
    else:  # S3: overwrite the object with a plain client, keeping the old checksum metadata
        assert isinstance(store, S3Store)
        client = boto3.client("s3", endpoint_url=store.endpoint_url)
        sha256 = store.stat(payload).sha256
        client.put_object(
            Bucket=store.bucket, Key=f"{store.prefix}/{payload}", Body=bytes(data), Metadata={"sha256": sha256}
        )


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupt_payload_is_quarantined_and_reported_as_miss(
    store: ObjectStore, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = LatentCache(store)
    key = anchor_cache_key(ANCHOR_PARAMS)
    cache.put("anchor_latent", key, _latents(), _record())
    _corrupt_payload(store, key, how)

    with caplog.at_level(logging.WARNING, logger="storage.latent_cache"):
        assert cache.get("anchor_latent", key) is None

    assert "corrupt" in caplog.text and key in caplog.text
    remaining = list(store.list())
    assert not any(k.startswith("anchors/") for k in remaining)
    quarantined = sorted(k for k in remaining if k.startswith("quarantine/"))
    assert [k.split("/", 2)[2] for k in quarantined] == [f"anchors/{key}.json", f"anchors/{key}.safetensors"]
    # The caller recomputes and stores again; the next read is a hit.
    cache.put("anchor_latent", key, _latents(), _record())
    assert cache.get("anchor_latent", key) is not None


def test_unparseable_record_is_quarantined(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    cache = LatentCache(store)
    key = anchor_cache_key(ANCHOR_PARAMS)
    cache.put("anchor_latent", key, _latents(), _record())
    store.put_bytes(f"anchors/{key}.json", b"{not json")  # valid checksum, broken content

    assert cache.get("anchor_latent", key) is None
    assert [k for k in store.list() if not k.startswith("quarantine/")] == []


def test_record_without_payload_is_quarantined_payload_without_record_is_a_plain_miss(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    cache = LatentCache(store)
    key = anchor_cache_key(ANCHOR_PARAMS)
    cache.put("anchor_latent", key, _latents(), _record())

    store.delete(f"anchors/{key}.safetensors")
    assert cache.get("anchor_latent", key) is None
    assert any(k.startswith("quarantine/") and k.endswith(".json") for k in store.list())

    store.put_bytes(f"anchors/{key}.safetensors", b"unfinished write")  # crash before the record
    assert cache.get("anchor_latent", key) is None
    assert store.exists(f"anchors/{key}.safetensors")  # left in place: a miss, nothing quarantined
    cache.put("anchor_latent", key, _latents(), _record())  # no reader could use that leftover: replaced
    hit = cache.get("anchor_latent", key)
    assert hit is not None and torch.equal(hit[0]["sigmas"], _latents()["sigmas"])


def test_a_payload_already_there_is_kept_and_named_by_the_record(store: ObjectStore, tmp_path: Path) -> None:
    """Writer A has stored its payload but not yet its record when writer B puts other bytes under the key."""
    cache = LatentCache(store)
    key = artifact_key("detail_latent", {"anchor": "race"})
    first = cache.put("detail_latent", key, {"latent": torch.zeros(4)}, {})
    store.delete(f"details/{key}.json")  # A's record not written yet

    second = cache.put("detail_latent", key, {"latent": torch.ones(4)}, {})  # B finds no record

    assert second.sha256 == first.sha256  # B kept A's payload instead of overwriting it
    hit = cache.get("detail_latent", key)
    assert hit is not None and torch.equal(hit[0]["latent"], torch.zeros(4))
    assert not any(k.startswith("quarantine/") for k in store.list())


def test_a_video_that_does_not_match_its_record_leaves_dest_alone(store: ObjectStore, tmp_path: Path) -> None:
    cache = LatentCache(store)
    key = artifact_key("video", {"detail_key": "e" * 64})
    mp4 = tmp_path / "final.mp4"
    mp4.write_bytes(b"video bytes")
    cache.put_video(key, mp4, {})
    store.delete(f"videos/{key}.mp4")
    store.put_bytes(f"videos/{key}.mp4", b"other video bytes")  # valid object, not the record's
    dest = tmp_path / "out" / "final.mp4"
    dest.parent.mkdir()
    dest.write_bytes(b"kept")

    assert cache.get_video(key, dest) is None
    assert dest.read_bytes() == b"kept" and sorted(p.name for p in dest.parent.iterdir()) == ["final.mp4"]


def test_video_put_get_and_uri(store: ObjectStore, tmp_path: Path) -> None:
    cache = LatentCache(store)
    key = artifact_key("video", {"detail_key": "d" * 64, "fps": 24, "crf": 18})
    mp4 = tmp_path / "final.mp4"
    mp4.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))

    assert cache.get_video_uri(key) is None
    stored = cache.put_video(key, mp4, {"prompt": "p"})
    dest = tmp_path / "fetched" / "final.mp4"
    record = cache.get_video(key, dest)

    assert record is not None and record["prompt"] == "p" and record["object"]["size"] == stored.size
    assert dest.read_bytes() == mp4.read_bytes()
    uri = cache.get_video_uri(key)
    assert uri is not None and (uri.startswith("file://") or "Signature" in uri)


def test_put_rejects_reserved_record_fields_and_bad_keys(tmp_path: Path) -> None:
    cache = LatentCache(open_store(str(tmp_path / "store")))
    with pytest.raises(ValueError, match="reserved"):
        cache.put("anchor_latent", "ab" * 32, {"x": torch.zeros(1)}, {"created_at": "yesterday"})
    with pytest.raises(ValueError, match="hex digest"):
        cache.get("anchor_latent", "../../etc/passwd")
    with pytest.raises(ValueError, match="not a latent kind"):
        cache.get("video", "ab" * 32)


def test_record_is_plain_json(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    key = anchor_cache_key(ANCHOR_PARAMS)
    LatentCache(store).put("anchor_latent", key, _latents(), _record())

    document = json.loads(store.get_bytes(f"anchors/{key}.json"))

    assert document["kind"] == "anchor_latent" and document["key"] == key
    assert document["parameters"]["seed"] == 42
