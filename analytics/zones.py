"""Camera zones: named polygons in normalised image coordinates.

A camera's zones arrive as the stored contract
``[{"name": str, "polygon": [[x, y], ...], "kind": "motion" | "crowd" | "mask"}]`` with
``x`` and ``y`` normalised to 0..1 (``(0, 0)`` is the top-left corner of the image,
``(1, 1)`` the bottom-right), so one zone fits every resolution of the camera.

* ``motion`` zones are where motion counts; with none, the whole frame counts.
* ``crowd`` zones are where persons are counted (the bottom-centre of a person's box
  decides, see :func:`bottom_centre`); motion ignores them.
* ``mask`` zones never count, for motion or crowd (timestamps, trees, a road).

Everything here is pure: validation raises :class:`ValueError` naming the zone, and
:func:`rasterise` / :func:`counted_mask` turn zones into ``uint8`` masks (0 or 255) at a
given working size, which callers compute once per (zones, frame size).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_ZONE_AREA",
    "Mask",
    "Point",
    "Zone",
    "ZoneKind",
    "bottom_centre",
    "counted_mask",
    "parse_zones",
    "rasterise",
    "visible_mask",
]

Point = tuple[float, float]
"""A normalised ``(x, y)`` point, both in 0..1."""

Mask = npt.NDArray[np.uint8]
"""A single-channel ``uint8`` mask: 255 where the zone covers a pixel, 0 elsewhere."""

MIN_ZONE_AREA = 1e-5
"""Smallest accepted polygon area, as a fraction of the image (about 20 px at 1080p)."""

_SHIFT = 4  # fractional bits for cv2.fillPoly: sub-pixel vertex precision at small sizes


class ZoneKind(StrEnum):
    """What a zone is for."""

    MOTION = "motion"
    CROWD = "crowd"
    MASK = "mask"


@dataclass(frozen=True, slots=True)
class Zone:
    """A named polygon in normalised coordinates; validated on construction.

    ``polygon`` holds at least three distinct ``(x, y)`` vertices in 0..1, in order
    (either winding), without repeating the first vertex at the end, enclosing at least
    :data:`MIN_ZONE_AREA` of the image and without crossing edges. Any violation raises
    :class:`ValueError` whose message starts with the zone's name.
    """

    name: str
    kind: ZoneKind
    polygon: tuple[Point, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"zone {self.name!r}: name must be a non-empty string")
        if not isinstance(self.kind, ZoneKind):
            raise ValueError(f"zone {self.name!r}: kind must be a ZoneKind, got {self.kind!r}")
        problem = _polygon_problem(self.polygon)
        if problem is not None:
            raise ValueError(f"zone {self.name!r}: {problem}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Zone:
        """Build a zone from the stored contract ``{"name", "polygon", "kind"}``.

        A closing vertex equal to the first one is dropped. Unknown keys, an unknown
        ``kind`` or a malformed polygon raise :class:`ValueError` naming the zone.
        """
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"zone {name!r}: name must be a non-empty string")
        label = name
        extra = set(data) - {"name", "polygon", "kind"}
        if extra:
            raise ValueError(f"zone {label!r}: unknown keys {sorted(extra)}")
        try:
            kind = ZoneKind(str(data.get("kind")))
        except ValueError:
            raise ValueError(
                f"zone {label!r}: kind must be one of {[k.value for k in ZoneKind]}, "
                f"got {data.get('kind')!r}"
            ) from None
        polygon = _parse_points(label, data.get("polygon"))
        return cls(name=name, kind=kind, polygon=polygon)

    @property
    def area(self) -> float:
        """The polygon's area as a fraction of the image (0..1)."""
        return abs(_signed_area(self.polygon))

    def contains(self, point: Point) -> bool:
        """Whether a normalised point lies inside the polygon (even-odd rule).

        Points exactly on an edge may fall either way.
        """
        return _point_in_polygon(point, self.polygon)

    def contains_box(self, box: tuple[float, float, float, float]) -> bool:
        """Whether a normalised ``(x1, y1, x2, y2)`` box's bottom-centre is inside.

        This is how a person standing in a zone is decided: by where the feet are.
        """
        return self.contains(bottom_centre(box))


def bottom_centre(box: tuple[float, float, float, float]) -> Point:
    """The bottom-centre ``(x, y)`` of an ``(x1, y1, x2, y2)`` box (y grows downwards)."""
    x1, _, x2, y2 = box
    return ((x1 + x2) / 2.0, y2)


def parse_zones(items: Iterable[Mapping[str, object]]) -> tuple[Zone, ...]:
    """Validate a camera's zone list (the stored contract) into :class:`Zone` objects.

    Raises :class:`ValueError` naming the first invalid zone, or a duplicated name.
    """
    zones = tuple(Zone.from_mapping(item) for item in items)
    seen: set[str] = set()
    for zone in zones:
        if zone.name in seen:
            raise ValueError(f"zone {zone.name!r}: duplicate name")
        seen.add(zone.name)
    return zones


def rasterise(zones: Iterable[Zone], width: int, height: int) -> Mask:
    """The union of the zones' polygons as a ``(height, width)`` mask (255 inside).

    Normalised coordinates map to the continuous pixel grid, so ``x = 0`` is the left
    edge of the first pixel and ``x = 1`` the right edge of the last; a pixel is inside
    when its centre is (OpenCV's fill rule decides the exact boundary pixels).
    """
    if width < 1 or height < 1:
        raise ValueError(f"mask size must be positive, got {width}x{height}")
    mask = np.zeros((height, width), dtype=np.uint8)
    scale = np.array([width, height], dtype=np.float64)
    polys = [_to_fixed_point(zone.polygon, scale) for zone in zones]
    if polys:
        cv2.fillPoly(mask, polys, 255, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


def counted_mask(zones: Iterable[Zone], width: int, height: int) -> Mask | None:
    """Where motion counts: the motion zones (or the whole frame) minus the masks.

    Returns ``None`` when everything counts (no motion zone and no mask), so callers
    can skip masking altogether.
    """
    zones = tuple(zones)
    motion = [z for z in zones if z.kind is ZoneKind.MOTION]
    masks = [z for z in zones if z.kind is ZoneKind.MASK]
    if not motion and not masks:
        return None
    if motion:
        counted = rasterise(motion, width, height)
    else:
        counted = np.full((height, width), 255, dtype=np.uint8)
    if masks:
        counted[rasterise(masks, width, height) > 0] = 0
    return counted


def visible_mask(zones: Iterable[Zone], width: int, height: int) -> Mask | None:
    """The whole frame minus the masks; ``None`` when there is no mask."""
    masks = [z for z in zones if z.kind is ZoneKind.MASK]
    if not masks:
        return None
    visible: Mask = np.asarray(cv2.bitwise_not(rasterise(masks, width, height)), dtype=np.uint8)
    return visible


def _to_fixed_point(
    polygon: Sequence[Point], scale: npt.NDArray[np.float64]
) -> npt.NDArray[np.int32]:
    # fillPoly puts integer coordinate i on the centre of pixel i, i.e. continuous i + 0.5.
    pts = np.asarray(polygon, dtype=np.float64) * scale - 0.5
    return np.round(pts * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _parse_points(label: str, raw: object) -> tuple[Point, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise ValueError(f"zone {label!r}: polygon must be a list of [x, y] points")
    points: list[Point] = []
    for item in raw:
        if (
            not isinstance(item, Sequence)
            or isinstance(item, str | bytes)
            or len(item) != 2
            or not all(_is_number(v) for v in item)
        ):
            raise ValueError(f"zone {label!r}: every point must be [x, y] numbers, got {item!r}")
        points.append((float(item[0]), float(item[1])))
    if len(points) > 3 and points[0] == points[-1]:
        points.pop()
    return tuple(points)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _polygon_problem(polygon: Sequence[Point]) -> str | None:
    """Why ``polygon`` is not a valid zone outline, or ``None`` when it is."""
    if not isinstance(polygon, tuple) or len(polygon) < 3:
        return "polygon needs at least 3 points"
    for point in polygon:
        if len(point) != 2 or not all(_is_number(v) and math.isfinite(v) for v in point):
            return f"point {point!r} is not a pair of finite numbers"
        if not all(0.0 <= v <= 1.0 for v in point):
            return f"point {point!r} is outside 0..1 (coordinates are normalised)"
    n = len(polygon)
    if any(polygon[i] == polygon[(i + 1) % n] for i in range(n)):
        return "polygon repeats a vertex"
    if _self_intersects(polygon):
        return "polygon edges cross each other"
    if abs(_signed_area(polygon)) < MIN_ZONE_AREA:
        return f"polygon area is below {MIN_ZONE_AREA} of the image"
    return None


def _signed_area(polygon: Sequence[Point]) -> float:
    total = 0.0
    for (x1, y1), (x2, y2) in zip(polygon, (*polygon[1:], polygon[0]), strict=True):
        total += x1 * y2 - x2 * y1
    return total / 2.0


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, a: Point, b: Point) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def _segments_touch(a: Point, b: Point, c: Point, d: Point) -> bool:
    d1, d2 = _cross(c, d, a), _cross(c, d, b)
    d3, d4 = _cross(a, b, c), _cross(a, b, d)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True
    return (
        (d1 == 0 and _on_segment(a, c, d))
        or (d2 == 0 and _on_segment(b, c, d))
        or (d3 == 0 and _on_segment(c, a, b))
        or (d4 == 0 and _on_segment(d, a, b))
    )


def _self_intersects(polygon: Sequence[Point]) -> bool:
    n = len(polygon)
    edges = [(polygon[i], polygon[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        # Adjacent edges share a vertex; they only overlap when the outline doubles back.
        a, b = edges[i]
        c = edges[(i + 1) % n][1]
        if (
            _cross(a, b, c) == 0
            and (b[0] - a[0]) * (c[0] - b[0]) + (b[1] - a[1]) * (c[1] - b[1]) < 0
        ):
            return True
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            if _segments_touch(*edges[i], *edges[j]):
                return True
    return False


def _point_in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, (*polygon[1:], polygon[0]), strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside
