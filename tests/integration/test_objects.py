"""Both object stores against real storage: a directory and a SeaweedFS S3 server."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from storage.errors import (
    InvalidObjectKey,
    InvalidObjectMetadata,
    ObjectNotFound,
    StorageAuthError,
    StorageUnavailable,
)
from storage.objects import (
    CHUNK_SIZE,
    LocalObjectStore,
    ObjectStore,
    S3HttpPolicy,
    S3ObjectStore,
)
from tests.peers.seaweedfs import SeaweedS3

MIB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """Each test runs once per backend."""
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    s3: S3ObjectStore = request.getfixturevalue("s3_store")
    return s3


@pytest.fixture
def reopen(store: ObjectStore, request: pytest.FixtureRequest) -> Callable[[], ObjectStore]:
    """A new instance on the same storage: nothing may come from the first one's memory."""
    if isinstance(store, LocalObjectStore):
        root = store.root
        return lambda: LocalObjectStore(root)
    assert isinstance(store, S3ObjectStore)
    seaweedfs: SeaweedS3 = request.getfixturevalue("seaweedfs")
    bucket = store.bucket
    return lambda: seaweedfs.store(bucket)


def write_random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# --- round trips -------------------------------------------------------------------------


def test_put_bytes_round_trip_keeps_sha256_and_metadata(
    store: ObjectStore, reopen: Callable[[], ObjectStore]
) -> None:
    data = b"snapshot bytes \x00\xff"
    info = store.put_bytes(
        "snapshots/cam-1/1.jpg", data, content_type="image/jpeg", metadata={"camera": "cam-1"}
    )
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)

    again = reopen()
    assert again.stat("snapshots/cam-1/1.jpg") == info
    assert again.get_bytes("snapshots/cam-1/1.jpg") == data


def test_put_file_of_12_mib_streams_and_keeps_sha256(
    store: ObjectStore, reopen: Callable[[], ObjectStore], tmp_path: Path
) -> None:
    source = tmp_path / "clip.mp4"
    expected = write_random_file(source, 12 * MIB + 123)

    info = store.put_file("clips/cam-1/big.mp4", source, content_type="video/mp4")

    assert (info.size, info.sha256, info.content_type) == (12 * MIB + 123, expected, "video/mp4")
    stat = reopen().stat("clips/cam-1/big.mp4")
    assert (stat.size, stat.sha256, stat.content_type) == (info.size, expected, "video/mp4")
    digest = hashlib.sha256()
    with store.open("clips/cam-1/big.mp4") as stream:
        assert stream.info.sha256 == expected and stream.info.size == info.size
        for chunk in stream:
            assert 0 < len(chunk) <= CHUNK_SIZE  # streamed, never the whole object at once
            digest.update(chunk)
    assert digest.hexdigest() == expected


def test_overwrite_replaces_content_and_digest(store: ObjectStore) -> None:
    store.put_bytes("k/v", b"first version", metadata={"n": "1"})
    second = store.put_bytes("k/v", b"second", metadata={"n": "2"})
    assert store.stat("k/v") == second
    assert store.get_bytes("k/v") == b"second"
    assert list(store.list("k/")) == ["k/v"]


def test_unicode_and_space_keys_round_trip(store: ObjectStore) -> None:
    key = "clips/摄像头-1/2024 01 01+x.mp4"
    store.put_bytes(key, b"x")
    assert store.get_bytes(key) == b"x"
    assert list(store.list("clips/")) == [key]


def test_open_missing_object_raises_before_streaming(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.open("missing/object")
    with pytest.raises(ObjectNotFound):
        store.stat("missing/object")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("missing/object")


def test_stream_can_be_closed_early(store: ObjectStore) -> None:
    store.put_bytes("big", os.urandom(3 * CHUNK_SIZE))
    stream = store.open("big")
    assert len(next(stream)) == CHUNK_SIZE
    stream.close()
    stream.close()
    assert list(stream) == []
    assert store.get_bytes("big")  # the connection / file handle was released cleanly


# --- verify ------------------------------------------------------------------------------


def test_verify_checks_recorded_digest_and_size(store: ObjectStore) -> None:
    data = b"evidence"
    sha = hashlib.sha256(data).hexdigest()
    store.put_bytes("clips/e.mp4", data)

    assert store.verify("clips/e.mp4", sha)
    assert store.verify("clips/e.mp4", sha.upper(), size=len(data))
    assert store.verify("clips/e.mp4", sha, rehash=True)
    assert not store.verify("clips/e.mp4", hashlib.sha256(b"other").hexdigest())
    assert not store.verify("clips/e.mp4", sha, size=len(data) + 1)
    assert not store.verify("clips/missing.mp4", sha)


def test_verify_rehash_catches_bytes_changed_behind_the_store(
    store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    original = b"A" * 1000
    sha = store.put_bytes("clips/t.mp4", original).sha256
    tampered = b"B" * 1000  # same size: invisible to the cheap check
    if isinstance(store, LocalObjectStore):
        (store.root / "data" / "clips" / "t.mp4").write_bytes(tampered)
    else:
        assert isinstance(store, S3ObjectStore)
        seaweedfs: SeaweedS3 = request.getfixturevalue("seaweedfs")
        seaweedfs.client().put_object(
            store.bucket, "clips/t.mp4", io.BytesIO(tampered), 1000, metadata={"sha256": sha}
        )
    assert store.verify("clips/t.mp4", sha, size=1000)
    assert not store.verify("clips/t.mp4", sha, size=1000, rehash=True)


# --- delete and list ---------------------------------------------------------------------


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes("clips/cam-1/d.mp4", b"x")
    store.delete("clips/cam-1/d.mp4")
    store.delete("clips/cam-1/d.mp4")
    store.delete("never/existed")
    with pytest.raises(ObjectNotFound):
        store.stat("clips/cam-1/d.mp4")
    assert list(store.list("")) == []


def test_list_is_a_plain_prefix_in_key_order(store: ObjectStore) -> None:
    for key in ("cam1/b", "cam1/a", "cam10/c", "cam2/d", "cam1/x/y"):
        store.put_bytes(key, key.encode())
    assert list(store.list("cam1/")) == ["cam1/a", "cam1/b", "cam1/x/y"]
    assert list(store.list("cam1")) == ["cam1/a", "cam1/b", "cam1/x/y", "cam10/c"]
    assert list(store.list("cam1/x")) == ["cam1/x/y"]
    assert list(store.list("")) == ["cam1/a", "cam1/b", "cam1/x/y", "cam10/c", "cam2/d"]
    assert list(store.list("nothing/")) == []


# --- validation --------------------------------------------------------------------------

BAD_KEYS = [
    "",
    "../escape",
    "a/../../escape",
    "..",
    ".",
    "a/./b",
    "a/..",
    "/etc/passwd",
    "a//b",
    "a/",
    "a\\..\\b",
    "a\x00b",
    "a\nb",
    "x" * 1025,
    "é" * 513,  # 1026 UTF-8 bytes
    "s" * 256 + "/b",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_by_every_operation(
    store: ObjectStore, key: str, tmp_path: Path
) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    calls: list[Callable[[], object]] = [
        lambda: store.put_bytes(key, b"payload"),
        lambda: store.put_file(key, source),
        lambda: store.stat(key),
        lambda: store.open(key),
        lambda: store.get_bytes(key),
        lambda: store.delete(key),
        lambda: store.verify(key, "0" * 64),
        lambda: store.presigned_get_url(key, timedelta(minutes=1)),
    ]
    for call in calls:
        with pytest.raises(InvalidObjectKey):
            call()
    # Nothing was written anywhere: not in the store, not next to it.
    assert list(store.list("")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) in (["objects", "src.bin"], ["src.bin"])


@pytest.mark.parametrize("prefix", ["../", "/abs", "a//", "a/../b/", "\\"])
def test_bad_list_prefixes_are_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidObjectKey):
        store.list(prefix)


@pytest.mark.parametrize(
    ("metadata", "content_type"),
    [
        ({"sha256": "0" * 64}, "video/mp4"),
        ({"Camera": "x"}, "video/mp4"),
        ({"camera": "摄像头"}, "video/mp4"),
        ({"camera": "a\r\nx-evil: 1"}, "video/mp4"),
        (None, "video/mp4\r\nx-evil: 1"),
        (None, ""),
    ],
)
def test_bad_metadata_is_rejected(
    store: ObjectStore, metadata: dict[str, str] | None, content_type: str
) -> None:
    with pytest.raises(InvalidObjectMetadata):
        store.put_bytes("k", b"x", content_type=content_type, metadata=metadata)
    assert list(store.list("")) == []


# --- S3 specifics ------------------------------------------------------------------------


def test_s3_metadata_seen_by_a_raw_client_and_multipart_used(
    s3_store: S3ObjectStore, seaweedfs: SeaweedS3, tmp_path: Path
) -> None:
    source = tmp_path / "clip.mp4"
    expected = write_random_file(source, 12 * MIB)
    s3_store.put_file("clips/raw.mp4", source, content_type="video/mp4", metadata={"cam": "7"})

    raw = seaweedfs.client().stat_object(s3_store.bucket, "clips/raw.mp4")
    headers = {name.lower(): value for name, value in (raw.metadata or {}).items()}
    assert headers["x-amz-meta-sha256"] == expected
    assert headers["x-amz-meta-cam"] == "7"
    assert raw.size == 12 * MIB
    assert raw.etag is not None and "-" in raw.etag  # "<md5>-<parts>": a multipart upload


def test_s3_creates_missing_bucket_on_check_and_on_first_write(seaweedfs: SeaweedS3) -> None:
    client = seaweedfs.client()
    checked = seaweedfs.store()
    checked.check()
    assert client.bucket_exists(checked.bucket)

    written = seaweedfs.store()
    written.put_bytes("k", b"v")
    assert client.bucket_exists(written.bucket)


def test_s3_presigned_url_downloads_and_wrong_key_is_rejected(
    s3_store: S3ObjectStore, seaweedfs: SeaweedS3
) -> None:
    s3_store.put_bytes("clips/p.mp4", b"presigned body", content_type="video/mp4")

    url = s3_store.presigned_get_url("clips/p.mp4", timedelta(minutes=5))
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"presigned body"

    forged = seaweedfs.client(secret_key="not-the-secret").presigned_get_object(
        s3_store.bucket, "clips/p.mp4", expires=timedelta(minutes=5)
    )
    assert httpx.get(forged, timeout=10).status_code == 403

    tampered = url.replace("clips/p.mp4", "clips/other.mp4")
    assert httpx.get(tampered, timeout=10).status_code == 403


@pytest.mark.slow
def test_s3_expired_presigned_url_is_rejected(s3_store: S3ObjectStore) -> None:
    s3_store.put_bytes("clips/e.mp4", b"x")
    url = s3_store.presigned_get_url("clips/e.mp4", timedelta(seconds=1))
    time.sleep(2.1)
    assert httpx.get(url, timeout=10).status_code == 403


def test_local_store_has_no_presigned_url(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("k", b"v")
    assert store.presigned_get_url("k", timedelta(minutes=5)) is None


def test_s3_check_against_unreachable_endpoint_fails_fast_with_a_hint() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3ObjectStore(f"127.0.0.1:{port}", "ak", "sk-secret", "xueliang")

    with pytest.raises(StorageUnavailable) as caught:
        store.check()
    message = str(caught.value)
    assert f"cannot reach S3 endpoint 127.0.0.1:{port}: connection refused" in message
    assert "XUELIANG_STORAGE__S3__ENDPOINT" in message
    with pytest.raises(StorageUnavailable):
        store.put_bytes("k", b"v")


@pytest.mark.slow
def test_s3_outage_then_recovery(seaweedfs_isolated: SeaweedS3) -> None:
    store = seaweedfs_isolated.store()
    store.put_bytes("clips/before.mp4", b"kept")

    seaweedfs_isolated.stop()
    with pytest.raises(StorageUnavailable, match="connection refused"):
        store.check()
    with pytest.raises(StorageUnavailable):
        store.put_bytes("clips/during.mp4", b"lost?")
    with pytest.raises(StorageUnavailable):
        store.stat("clips/before.mp4")

    seaweedfs_isolated.start()
    store.check()
    assert store.get_bytes("clips/before.mp4") == b"kept"
    store.put_bytes("clips/after.mp4", b"ok")
    assert list(store.list("clips/")) == ["clips/after.mp4", "clips/before.mp4"]


@pytest.mark.slow
def test_s3_frozen_server_times_out_instead_of_hanging(seaweedfs_isolated: SeaweedS3) -> None:
    store = seaweedfs_isolated.store(policy=S3HttpPolicy(read_timeout_s=1.0, retries=0))
    store.put_bytes("k", b"v")

    seaweedfs_isolated.freeze()  # port open, nothing answers
    with pytest.raises(StorageUnavailable, match="no answer within 1 s"):
        store.stat("k")
    seaweedfs_isolated.thaw()
    # A thawed server catches up for a moment: read back with the default, patient policy.
    assert seaweedfs_isolated.store(store.bucket).get_bytes("k") == b"v"


@pytest.mark.parametrize("which", ["secret", "access"])
def test_s3_wrong_credentials_say_so(seaweedfs: SeaweedS3, which: str) -> None:
    seaweedfs.ensure_running()
    secret = "wrong-secret-value" if which == "secret" else seaweedfs.credentials.secret_key
    access = "unknown-key" if which == "access" else seaweedfs.credentials.access_key
    store = S3ObjectStore(seaweedfs.endpoint, access, secret, "xueliang-auth")

    with pytest.raises(StorageAuthError) as caught:
        store.check()
    message = str(caught.value)
    assert isinstance(caught.value, StorageUnavailable)
    assert "rejected the credentials" in message
    assert "XUELIANG_STORAGE__S3__SECRET_KEY" in message
    assert secret not in message
    with pytest.raises(StorageAuthError):
        store.put_bytes("k", b"v")


def test_describe_names_the_place_without_secrets(seaweedfs: SeaweedS3, tmp_path: Path) -> None:
    store = seaweedfs.store("xueliang-describe")
    assert store.describe() == f"s3://xueliang-describe@{seaweedfs.endpoint}"
    assert seaweedfs.credentials.secret_key not in store.describe()
    assert LocalObjectStore(tmp_path).describe() == f"local:{tmp_path}"
