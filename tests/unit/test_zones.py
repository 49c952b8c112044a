"""Zones: contract parsing and validation, rasterisation, point-in-zone."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.zones import (
    Zone,
    ZoneKind,
    bottom_centre,
    counted_mask,
    parse_zones,
    rasterise,
    visible_mask,
)

SQUARE = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]]


def test_parse_the_stored_contract() -> None:
    zones = parse_zones(
        [
            {"name": "gate", "polygon": SQUARE, "kind": "motion"},
            {"name": "clock", "polygon": [[0, 0], [0.3, 0], [0.3, 0.05]], "kind": "mask"},
            {"name": "square", "polygon": [*SQUARE, SQUARE[0]], "kind": "crowd"},
        ]
    )
    assert [(z.name, z.kind) for z in zones] == [
        ("gate", ZoneKind.MOTION),
        ("clock", ZoneKind.MASK),
        ("square", ZoneKind.CROWD),
    ]
    assert zones[0].polygon == ((0.1, 0.1), (0.5, 0.1), (0.5, 0.5), (0.1, 0.5))
    assert len(zones[2].polygon) == 4  # the closing vertex is dropped
    assert zones[0].area == pytest.approx(0.16)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"name": "a", "polygon": [[0, 0], [1, 0]], "kind": "motion"}, "at least 3 points"),
        ({"name": "b", "polygon": [[0, 0], [1.2, 0], [1, 1]], "kind": "motion"}, "outside 0..1"),
        ({"name": "c", "polygon": [[0, 0], [-0.1, 0], [1, 1]], "kind": "mask"}, "outside 0..1"),
        ({"name": "d", "polygon": [[0, 0], [0.001, 0], [0, 0.001]], "kind": "motion"}, "area"),
        (
            {"name": "e", "polygon": [[0, 0], [1, 1], [1, 0], [0, 1]], "kind": "motion"},
            "cross",
        ),
        ({"name": "f", "polygon": SQUARE, "kind": "fence"}, "kind must be one of"),
        ({"name": "g", "polygon": [[0, 0], [1, "x"], [1, 1]], "kind": "motion"}, "numbers"),
        ({"name": "h", "polygon": "0,0 1,0 1,1", "kind": "motion"}, "list of"),
        ({"name": "i", "polygon": SQUARE, "kind": "motion", "colour": "red"}, "unknown keys"),
        ({"name": "", "polygon": SQUARE, "kind": "motion"}, "name"),
        (
            {"name": "j", "polygon": [[0, 0], [1, 0], [1, 0], [0, 1]], "kind": "motion"},
            "repeats a vertex",
        ),
        ({"name": "k", "polygon": [[0, 0], [1, 0], [float("nan"), 1]], "kind": "motion"}, "finite"),
    ],
)
def test_invalid_zones_are_rejected_by_name(item: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Zone.from_mapping(item)
    assert repr(item["name"]) in str(info.value)


def test_duplicate_names_are_rejected() -> None:
    item = {"name": "gate", "polygon": SQUARE, "kind": "motion"}
    with pytest.raises(ValueError, match="'gate': duplicate"):
        parse_zones([item, item])


@pytest.mark.parametrize(
    ("point", "inside"),
    [((0.3, 0.3), True), ((0.05, 0.3), False), ((0.3, 0.6), False), ((0.49, 0.11), True)],
)
def test_contains(point: tuple[float, float], inside: bool) -> None:
    zone = Zone.from_mapping({"name": "z", "polygon": SQUARE, "kind": "crowd"})
    assert zone.contains(point) is inside


def test_concave_zone_and_box_anchor() -> None:
    # An L shape: the notch at the top right is outside.
    poly = ((0.0, 0.0), (0.4, 0.0), (0.4, 0.6), (1.0, 0.6), (1.0, 1.0), (0.0, 1.0))
    zone = Zone("l", ZoneKind.CROWD, poly)
    assert not zone.contains((0.8, 0.3))
    assert zone.contains((0.8, 0.8))
    head_in_notch_feet_inside = (0.7, 0.2, 0.8, 0.7)
    assert bottom_centre(head_in_notch_feet_inside) == pytest.approx((0.75, 0.7))
    assert zone.contains_box(head_in_notch_feet_inside)
    assert not zone.contains_box((0.7, 0.1, 0.8, 0.5))


@pytest.mark.parametrize(("width", "height"), [(320, 180), (240, 180), (97, 61)])
def test_rasterise_covers_the_polygon_at_any_size(width: int, height: int) -> None:
    full = Zone("full", ZoneKind.MOTION, ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))
    left = Zone("left", ZoneKind.MOTION, ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)))
    assert rasterise([full], width, height).min() == 255
    mask = rasterise([left], width, height)
    assert mask.shape == (height, width) and mask.dtype == np.uint8
    assert abs(np.count_nonzero(mask) / mask.size - 0.5) < 2 / width
    assert mask[:, 0].all() and not mask[:, -1].any()


def test_counted_and_visible_masks() -> None:
    motion = Zone("m", ZoneKind.MOTION, ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)))
    mask = Zone("x", ZoneKind.MASK, ((0.0, 0.0), (1.0, 0.0), (1.0, 0.5), (0.0, 0.5)))
    crowd = Zone("c", ZoneKind.CROWD, ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0)))
    assert counted_mask([], 100, 100) is None
    assert counted_mask([crowd], 100, 100) is None
    assert visible_mask([motion, crowd], 100, 100) is None
    counted = counted_mask([motion, mask, crowd], 100, 100)
    assert counted is not None
    assert np.count_nonzero(counted) == pytest.approx(2500, abs=150)  # bottom-left quarter
    assert counted[75, 25] == 255 and counted[25, 25] == 0 and counted[75, 75] == 0
    visible = visible_mask([mask], 100, 100)
    assert visible is not None and visible[25, 50] == 0 and visible[75, 50] == 255
