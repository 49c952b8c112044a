"""The audit chain's hash is the documented canonical JSON, and anchors parse strictly."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from storage.audit_chain import GENESIS, Anchor, entry_body, link_hash, normalised

AT = datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("actor", "detail"),
    [
        ("op-1", {}),
        ("值班员 张三", {"note": '监控室\n"quoted"', "ids": [1, 2.5, None, True]}),
        ("x", {"z": {"b": 1, "a": [{"d": 0, "c": "é"}]}, "a": -1e-07}),
    ],
)
def test_the_hash_is_sha256_of_the_documented_json_array(
    actor: str, detail: dict[str, Any]
) -> None:
    prev = hashlib.sha256(b"previous").hexdigest()
    documented = json.dumps(
        [prev, 42, "2024-05-01T08:00:00.123456+00:00", actor, "download", "clip", "inc_1", detail],
        separators=(",", ":"),
        sort_keys=True,
        ensure_ascii=False,
    )
    body = entry_body(AT, actor, "download", "clip", "inc_1", detail)
    assert link_hash(prev, 42, body) == hashlib.sha256(documented.encode()).hexdigest()


def test_the_time_is_hashed_in_utc_whatever_zone_it_comes_in() -> None:
    beijing = AT.astimezone(timezone(timedelta(hours=8)))
    assert entry_body(beijing, "a", "b", "c", "d", {}) == entry_body(AT, "a", "b", "c", "d", {})


def test_every_field_and_the_link_change_the_hash() -> None:
    fields = ("a", "b", "c", "d")
    body = entry_body(AT, "a", "b", "c", "d", {"k": 1})
    base = link_hash(GENESIS, 1, body)
    variants = [
        link_hash("1" * 64, 1, body),
        link_hash(GENESIS, 2, body),
        link_hash(
            GENESIS, 1, entry_body(AT + timedelta(microseconds=1), "a", "b", "c", "d", {"k": 1})
        ),
        link_hash(GENESIS, 1, entry_body(AT, "a", "b", "c", "d", {"k": 2})),
    ]
    for i in range(4):
        a, b, c, d = (f + "x" if j == i else f for j, f in enumerate(fields))
        variants.append(link_hash(GENESIS, 1, entry_body(AT, a, b, c, d, {"k": 1})))
    assert base not in variants and len(set(variants)) == len(variants)


def test_detail_is_kept_as_the_database_gives_it_back() -> None:
    odd: dict[Any, Any] = {"t": (1, 2), 3: "x"}
    assert normalised(odd) == {"t": [1, 2], "3": "x"}
    assert normalised(None) == {}
    with pytest.raises(ValueError):
        normalised({"score": float("nan")})


def test_anchors_parse_as_the_event_gives_them() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert Anchor.parse(f"{digest.upper()}@12") == Anchor(digest, 12)
    assert str(Anchor(digest, 12)) == f"{digest}@12"
    for bad in [f"{digest}", f"{digest}@0", f"{digest}@-1", f"{digest[:-1]}@3", "zz@1", ""]:
        with pytest.raises(ValueError, match="HASH@POSITION"):
            Anchor.parse(bad)
