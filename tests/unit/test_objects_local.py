"""Key rules and the local store's file layout (no peers needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.errors import ConfigError
from storage.errors import InvalidObjectKey, ObjectNotFound, StorageError, StorageUnavailable
from storage.objects import (
    LocalObjectStore,
    ObjectInfo,
    S3ObjectStore,
    validate_key,
    validate_prefix,
)


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "clips/cam-1/2024-01-01T00:00:00Z.mp4",
        "..a/b..",  # dots inside a segment are fine
        ".hidden/x",
        "空格 and spaces/ü",
        "x" * 255,
        "/".join(["y" * 255] * 4),  # 1023 bytes
    ],
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "empty"),
        ("/abs", "relative"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("..", "'..' segment"),
        ("a/../b", "'..' segment"),
        ("./a", "'.' or '..' segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a\tb", "control character"),
        ("x" * 1025, "longer than 1024 bytes"),
        ("s" * 256, "segment is longer than 255 bytes"),
        ("\udc80", "UTF-8"),
    ],
)
def test_invalid_keys_name_the_rule(key: str, rule: str) -> None:
    with pytest.raises(InvalidObjectKey, match=rule) as caught:
        validate_key(key)
    assert isinstance(caught.value, ValueError)  # callers may treat it as a plain ValueError


@pytest.mark.parametrize("prefix", ["", "clips/", "clips/cam", "a/b/"])
def test_valid_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


def test_layout_keeps_data_metadata_and_temp_files_apart(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    # Keys that look like the internal folders are ordinary keys below data/.
    for key in ("meta/x", "tmp/x", "data/x", "x"):
        store.put_bytes(key, key.encode(), metadata={"k": key.replace("/", "-")})
    for key in ("meta/x", "tmp/x", "data/x", "x"):
        assert store.get_bytes(key) == key.encode()
        assert (tmp_path / "data" / key).read_bytes() == key.encode()
        recorded = json.loads((tmp_path / "meta" / key).read_text())
        assert recorded["size"] == len(key) and recorded["metadata"] == {"k": key.replace("/", "-")}
    assert list((tmp_path / "tmp").iterdir()) == []  # no temp file left behind


def test_a_key_cannot_be_object_and_prefix_at_once(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a", b"1")
    with pytest.raises(StorageError, match="conflicts"):
        store.put_bytes("a/b", b"2")
    store.put_bytes("c/d", b"3")
    with pytest.raises(StorageError, match="conflicts"):
        store.put_bytes("c", b"4")
    with pytest.raises(ObjectNotFound):
        store.stat("c")  # a folder is not an object
    store.delete("c")  # nor is deleting it an error
    assert store.get_bytes("c/d") == b"3"


def test_delete_prunes_folders_left_empty(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("clips/cam-1/2024/01/a.mp4", b"a")
    store.put_bytes("clips/cam-2/b.mp4", b"b")
    store.delete("clips/cam-1/2024/01/a.mp4")
    assert not (tmp_path / "data" / "clips" / "cam-1").exists()
    assert not (tmp_path / "meta" / "clips" / "cam-1").exists()
    assert (tmp_path / "data" / "clips" / "cam-2" / "b.mp4").exists()


def test_digest_is_unknown_without_matching_metadata(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    info = store.put_bytes("k", b"12345", content_type="text/plain")

    (tmp_path / "data" / "k").write_bytes(b"123")  # truncated behind the store's back
    assert store.stat("k").sha256 == ""
    assert not store.verify("k", info.sha256)

    (tmp_path / "meta" / "k").unlink()  # e.g. a crash between data and metadata
    assert store.stat("k") == ObjectInfo("k", 3, "", "application/octet-stream", {})

    (tmp_path / "meta" / "k").write_text("{not json")
    assert store.stat("k").sha256 == ""


def test_check_creates_the_folders(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "new" / "objects")
    store.check()
    assert sorted(p.name for p in (tmp_path / "new" / "objects").iterdir()) == [
        "data",
        "meta",
        "tmp",
    ]


def test_check_says_what_to_fix_when_the_root_is_unusable(tmp_path: Path) -> None:
    (tmp_path / "objects").write_text("a file, not a directory")
    store = LocalObjectStore(tmp_path / "objects")
    with pytest.raises(StorageUnavailable, match="XUELIANG_STORAGE__LOCAL__PATH") as caught:
        store.check()
    assert str(tmp_path / "objects") in str(caught.value)
    with pytest.raises(StorageUnavailable):
        store.put_bytes("k", b"v")


def test_put_file_of_a_missing_source_is_the_callers_oserror(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    with pytest.raises(FileNotFoundError) as caught:
        store.put_file("k", tmp_path / "missing.mp4")
    assert not isinstance(caught.value, StorageError)


@pytest.mark.parametrize(
    ("endpoint", "bucket", "problem"),
    [
        ("http://127.0.0.1:9000", "xueliang", "without a scheme"),
        ("127.0.0.1:9000/path", "xueliang", "path in endpoint"),
        ("127.0.0.1:9000", "No_Such!", "bucket name"),
    ],
)
def test_s3_settings_are_checked_at_construction(endpoint: str, bucket: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        S3ObjectStore(endpoint, "ak", "very-secret", bucket)
    assert "very-secret" not in str(caught.value)
