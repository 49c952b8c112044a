"""Hostile names: no id, key or file name leaves its folder, the store's root or the spool.

Object keys are built from ids (camera, incident) and read back from manifests and the
database; the local store maps keys to files and the spool names files after incidents.
Each is fed traversal (``..``, absolute paths, backslashes, NUL, URL-encoded and look-alike
dots) and must refuse with a clear error or keep the name literal and inside its folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.errors import InvalidObjectKey
from storage.incidents import clip_key, snapshot_key
from storage.objects import LocalObjectStore, key_segment, validate_key
from storage.spool import ClipSpool, SpoolEntry, SpoolPathError, check_name

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

# Ids that would move a key into another folder (or out of the bucket's key space).
TRAVERSING_IDS = [
    "..",
    ".",
    "../x",
    "../../etc/passwd",
    "a/b",
    "/abs",
    "x/",
    "",
    "a\\..\\b",
    "..\\x",
    "x\x00y",
    "x\ny",
    "x\ry",
    "\t",
    "a\x7fb",
    "s" * 256,
    "\udc80",  # not encodable as UTF-8
]

# Names that look like traversal but are literal: they must stay one segment, where put.
LITERAL_IDS = [
    "%2e%2e",
    "..%2f..%2fetc",
    "%2e%2e%5c%2e%2e",
    "%00",
    "．．",  # fullwidth full stops
    "..\u2215x",  # division slash, not '/'
    "cam_0123456789ab",
    "inc_..",
    "$(id);`id`|id",
]


# -- key builders -----------------------------------------------------------------------


def test_builders_give_the_documented_layout() -> None:
    assert clip_key("cam_1", T0, "inc_2") == "clips/cam_1/2024/05/06/inc_2.mp4"
    assert clip_key("cam_1", T0, "inc_2", "mkv") == "clips/cam_1/2024/05/06/inc_2.mkv"
    assert snapshot_key("cam_1", T0, "inc_2") == "snapshots/cam_1/2024/05/06/inc_2.jpg"


@pytest.mark.parametrize("bad", TRAVERSING_IDS)
def test_builders_refuse_ids_that_would_leave_their_folder(bad: str) -> None:
    with pytest.raises(InvalidObjectKey, match="camera id"):
        clip_key(bad, T0, "inc_1")
    with pytest.raises(InvalidObjectKey, match="camera id"):
        snapshot_key(bad, T0, "inc_1")
    with pytest.raises(InvalidObjectKey, match="incident id"):
        clip_key("cam_1", T0, bad)
    with pytest.raises(InvalidObjectKey, match="incident id"):
        snapshot_key("cam_1", T0, bad)
    with pytest.raises(InvalidObjectKey, match="extension"):
        clip_key("cam_1", T0, "inc_1", bad)


@pytest.mark.parametrize("odd", LITERAL_IDS)
def test_literal_look_alikes_stay_one_segment(odd: str) -> None:
    for key, top in (
        (clip_key(odd, T0, odd), "clips"),
        (snapshot_key(odd, T0, odd), "snapshots"),
    ):
        assert validate_key(key) == key
        segments = key.split("/")
        assert segments[:2] == [top, odd] and len(segments) == 6
        assert segments[-1].startswith(odd + ".")


@pytest.mark.parametrize("bad", TRAVERSING_IDS)
def test_key_segment_names_what_is_wrong(bad: str) -> None:
    with pytest.raises(InvalidObjectKey, match=r"invalid camera id|camera id must be") as caught:
        key_segment(bad, "camera id")
    assert isinstance(caught.value, ValueError)
    assert "\x00" not in str(caught.value) and "\n" not in str(caught.value)  # shown escaped


@pytest.mark.parametrize(
    "key",
    [
        "clips/../../../etc/passwd",
        "clips/cam/../../x",
        "/etc/passwd",
        "//etc/passwd",
        "clips\\..\\..\\x",
        "clips/cam\x00.mp4",
        "clips/./x",
        "clips/x/",
        "..",
    ],
)
def test_validate_key_refuses_traversal(key: str) -> None:
    with pytest.raises(InvalidObjectKey):
        validate_key(key)


# -- the local object store ---------------------------------------------------------------


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def store_and_outside(tmp_path: Path) -> tuple[LocalObjectStore, Path]:
    """A store at tmp/store beside a folder it must never touch (tmp/outside)."""
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("root:x:0:0")
    (tmp_path / "store").mkdir()
    store = LocalObjectStore(tmp_path / "store")
    store.check()
    return store, outside


HOSTILE_KEYS = [
    "../outside/etc/passwd",
    "data/../../outside/etc/passwd",
    "../../store-evil",
    str(Path("/tmp").resolve() / "xl-abs-key"),
    "..\\outside\\etc\\passwd",
    "clips/\x00/x",
    "clips/x\x00.mp4",
    "meta/../../outside/x",
    "clips/%2e%2e/../../outside/x",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_local_store_refuses_every_operation_on_a_traversing_key(
    store_and_outside: tuple[LocalObjectStore, Path], key: str, tmp_path: Path
) -> None:
    store, outside = store_and_outside
    before = _tree(tmp_path)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"evil")
    operations: list[Callable[[], object]] = [
        lambda: store.put_bytes(key, b"evil"),
        lambda: store.put_file(key, payload),
        lambda: store.stat(key),
        lambda: store.open(key),
        lambda: store.get_bytes(key),
        lambda: store.delete(key),
        lambda: store.verify(key, "0" * 64),
        lambda: store.presigned_get_url(key, timedelta(minutes=5)),
        lambda: list(store.list(key)),
    ]
    for operation in operations:
        with pytest.raises(InvalidObjectKey):
            operation()
    payload.unlink()
    assert _tree(tmp_path) == before  # nothing written, nothing removed, anywhere
    assert (outside / "etc" / "passwd").read_text() == "root:x:0:0"
    assert not Path("/tmp/xl-abs-key").exists()


@pytest.mark.parametrize(
    "key",
    [
        "%2e%2e/%2e%2e/outside/etc/passwd",
        "..%2f..%2foutside%2fetc%2fpasswd",
        "..%5c..%5coutside",
        "clips/%00/x",
        "．．/．．/outside",
        "..\u2215..\u2215outside",
        "clips/...",
        "clips/..a/b..",
    ],
)
def test_local_store_keeps_encoded_traversal_literal_and_inside(
    store_and_outside: tuple[LocalObjectStore, Path], key: str
) -> None:
    store, outside = store_and_outside
    info = store.put_bytes(key, b"literal")
    assert info.key == key
    data_file = store.root / "data" / key
    assert data_file.read_bytes() == b"literal"
    assert store.root / "data" in data_file.resolve().parents
    assert store.get_bytes(key) == b"literal"
    assert list(store.list()) == [key]
    store.delete(key)
    assert list(store.list()) == []
    assert (outside / "etc" / "passwd").read_text() == "root:x:0:0"
    assert _tree(store.root / "data") == set()  # emptied folders pruned, not the root


def test_local_store_lists_no_file_that_is_not_a_valid_key(
    store_and_outside: tuple[LocalObjectStore, Path],
) -> None:
    store, _ = store_and_outside
    store.put_bytes("clips/ok.mp4", b"ok")
    # Files put there by something else, with names no key may have.
    (store.root / "data" / "clips" / "back\\slash").write_bytes(b"x")
    (store.root / "data" / "clips" / "new\nline").write_bytes(b"x")
    assert list(store.list()) == ["clips/ok.mp4"]
    assert list(store.list("clips/")) == ["clips/ok.mp4"]


# -- the spool ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", "a/b", "/etc/passwd", "..\\x", "a\\b", "x\x00", "x\n", ".hidden"],
)
def test_spool_file_names_are_single_safe_segments(tmp_path: Path, name: str) -> None:
    spool = ClipSpool(tmp_path / "spool")
    with pytest.raises(SpoolPathError, match="bad spool file name") as caught:
        spool.file_path(name)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(SpoolPathError):
        check_name("x" * 201)
    assert spool.file_path("inc_1.jpg") == tmp_path / "spool" / "inc_1.jpg"
    assert spool.file_path("%2e%2e") == tmp_path / "spool" / "%2e%2e"  # literal


def _entry(spool: ClipSpool, **changes: object) -> SpoolEntry:
    clip = spool.file_path("cam_1-20240506T070809-0001-abcdef.mp4")
    clip.write_bytes(b"mp4")
    snap = spool.file_path("inc_1.jpg")
    snap.write_bytes(b"jpg")
    fields: dict[str, object] = {
        "incident_id": "inc_1",
        "camera_id": "cam_1",
        "clip_path": str(clip),
        "clip_key": clip_key("cam_1", T0, "inc_1"),
        "clip_sha256": "0" * 64,
        "clip_size": 3,
        "duration_s": 1.0,
        "snapshot_path": str(snap),
        "snapshot_key": snapshot_key("cam_1", T0, "inc_1"),
        "snapshot_sha256": "1" * 64,
    }
    fields.update(changes)
    return SpoolEntry(**fields)  # type: ignore[arg-type]


def test_a_good_entry_round_trips(tmp_path: Path) -> None:
    spool = ClipSpool(tmp_path / "spool")
    entry = _entry(spool)
    spool.add(entry)
    assert spool.entries() == [entry]
    spool.remove(entry)
    assert spool.entries() == [] and list(spool.root.iterdir()) == []


def _outside_paths(tmp_path: Path, spool: ClipSpool) -> list[str]:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (spool.root / "sub").mkdir(exist_ok=True)
    link = spool.root / "link.mp4"
    if not link.exists():
        link.symlink_to(victim)
    return [
        str(victim),
        str(spool.root / ".." / "victim.txt"),
        str(spool.root / "sub" / ".." / ".." / "victim.txt"),
        str(link),  # a symlink in the spool pointing out of it
        "victim.txt",  # relative: resolved against the working directory, not the spool
        "",
        "x\x00y",
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("incident_id", "../evil", "bad incident id"),
        ("incident_id", "a/b", "bad incident id"),
        ("incident_id", "..", "bad incident id"),
        ("incident_id", "x\x00", "bad incident id"),
        ("clip_key", "clips/../../x", "invalid object key"),
        ("clip_key", "/etc/passwd", "invalid object key"),
        ("snapshot_key", "snapshots\\x", "invalid object key"),
    ],
)
def test_add_refuses_entries_with_hostile_ids_or_keys(
    tmp_path: Path, field: str, value: str, message: str
) -> None:
    spool = ClipSpool(tmp_path / "spool")
    entry = _entry(spool, **{field: value})
    before = _tree(tmp_path)
    with pytest.raises(SpoolPathError, match=message):
        spool.add(entry)
    assert _tree(tmp_path) == before  # no manifest, no temp file, anywhere


def test_entries_with_files_outside_the_spool_are_refused_everywhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = ClipSpool(tmp_path / "spool")
    for n, path in enumerate(_outside_paths(tmp_path, spool)):
        for field in ("clip_path", "snapshot_path"):
            entry = _entry(spool, **{field: path})
            with pytest.raises(SpoolPathError):
                spool.add(entry)
            with pytest.raises(SpoolPathError):
                spool.remove(entry)  # would unlink the victim
            # A manifest written by hand (or by something else) is not trusted either.
            bad = _entry(spool, incident_id=f"inc_{n}{field}", **{field: path})
            manifest = spool.root / f"inc_{n}{field}.manifest.json"
            manifest.write_text(json.dumps(bad.__dict__))
    assert spool.entries() == []  # logged and left for a person, never uploaded from
    assert "left in place for a person" in caplog.text
    assert (tmp_path / "victim.txt").read_text() == "keep me"
    assert (spool.root / "link.mp4").is_symlink()


def test_a_manifest_must_be_named_after_its_incident(tmp_path: Path) -> None:
    spool = ClipSpool(tmp_path / "spool")
    entry = _entry(spool)
    spool.add(entry)
    os.replace(spool.root / "inc_1.manifest.json", spool.root / "inc_other.manifest.json")
    assert spool.entries() == []


@pytest.mark.parametrize("incident_id", ["../x", "a/b", "", ".."])
def test_quarantine_and_remove_refuse_hostile_ids(tmp_path: Path, incident_id: str) -> None:
    spool = ClipSpool(tmp_path / "spool")
    entry = _entry(spool, incident_id=incident_id)
    with pytest.raises(SpoolPathError):
        spool.quarantine(entry)
    with pytest.raises(SpoolPathError):
        spool.remove(entry)
    assert sorted(p.name for p in spool.root.iterdir()) == [
        "cam_1-20240506T070809-0001-abcdef.mp4",
        "inc_1.jpg",
    ]
