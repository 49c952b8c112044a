"""Grids: the city → county → town → community → grid hierarchy and its boundaries.

Boundaries are GeoJSON Polygons or MultiPolygons in WGS 84 (``[lon, lat]``), validated on
the way in with a message naming the ring and the reason. A camera with a location and no
explicit grid is placed in the *smallest containing grid*, decided by this rule:

1. the containing grid of the most specific level wins (grid, then community, town, county,
   city) — so a one-grid community whose boundary equals its grid's still yields the grid;
2. then the smallest area (square degrees; grids that compete are neighbours, so the
   latitude distortion is the same for both);
3. then the lowest code.

"Containing" includes the boundary itself, so a point on a border shared by two grids is
inside both, and rules 2–3 decide. Lookups use a shapely ``STRtree`` built once per grid
revision and cached per database, so 20,000 grids stay fast.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from sqlalchemy import String, Text, cast, func, insert, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from config.errors import XueliangError
from storage.grid_models import Grid
from storage.incidents import BadCursor
from storage.models import Camera, utcnow

LEVELS = ("city", "county", "town", "community", "grid")
LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_REPORTED_PROBLEMS = 20


class GridError(XueliangError, ValueError):
    """Grid data is not acceptable (bad boundary, unknown parent, level order, …)."""


class BoundaryError(ValueError):
    """A boundary is not a valid GeoJSON (Multi)Polygon; the message says where and why."""


class BadGridCursor(BadCursor):
    """The pagination cursor is not one this service issued."""


@dataclass(frozen=True)
class GridSpec:
    """One grid as sent by an integrator (PUT body or import feature)."""

    code: str
    name: str
    level: str
    parent_code: str | None = None
    boundary: dict[str, Any] | None = None


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    cameras_reassigned: int


# Boundaries ---------------------------------------------------------------------------------


def check_boundary(geometry: Any) -> Any:
    """The shapely geometry of a GeoJSON Polygon/MultiPolygon; :class:`BoundaryError` if bad."""
    problem, geom = check_boundaries([geometry])[0]
    if problem is not None:
        raise BoundaryError(problem)
    return geom


def check_boundaries(geometries: Sequence[Any]) -> list[tuple[str | None, Any]]:
    """(problem or None, shapely geometry or None) of each GeoJSON geometry, vectorised."""
    problems: list[str | None] = []
    for geometry in geometries:
        try:
            _check_structure(geometry)
            problems.append(None)
        except BoundaryError as err:
            problems.append(str(err))
    good = [i for i, p in enumerate(problems) if p is None]
    geoms: list[Any] = [None] * len(geometries)
    if good:
        texts = [json.dumps(geometries[i]) for i in good]
        parsed = shapely.from_geojson(texts, on_invalid="ignore")
        valid, areas = shapely.is_valid(parsed), shapely.area(parsed)
        for k, i in enumerate(good):
            geoms[i] = parsed[k]
            if parsed[k] is None:
                problems[i] = "not a valid GeoJSON geometry"
            elif not valid[k]:
                reason = str(shapely.is_valid_reason(parsed[k]))
                problems[i] = _validity_message(reason, geometries[i]["type"])
            elif areas[k] == 0:
                problems[i] = "zero area: the ring's positions are collinear or repeated"
    return list(zip(problems, geoms, strict=True))


def _check_structure(geometry: Any) -> None:
    """GeoJSON shape, closed rings and WGS 84 ranges, with the place of the first problem."""
    if not isinstance(geometry, dict):
        raise BoundaryError("must be a GeoJSON Polygon or MultiPolygon object")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind not in ("Polygon", "MultiPolygon"):
        raise BoundaryError(f"type must be Polygon or MultiPolygon, not {kind!r}")
    polygons = [coords] if kind == "Polygon" else coords
    if not isinstance(polygons, list) or not polygons:
        raise BoundaryError("coordinates must be a non-empty array")
    for p, rings in enumerate(polygons):
        where = f"polygon {p} " if kind == "MultiPolygon" else ""
        if not isinstance(rings, list) or not rings:
            raise BoundaryError(f"{where}has no rings")
        for r, ring in enumerate(rings):
            _check_ring(ring, f"{where}ring {r}")


def _check_ring(ring: Any, where: str) -> None:
    if not isinstance(ring, list) or len(ring) < 4:
        size = len(ring) if isinstance(ring, list) else 0
        raise BoundaryError(f"{where} has {size} positions; a closed ring needs at least 4")
    try:
        arr = np.asarray(ring)
    except ValueError:  # ragged
        arr = np.asarray([])
    if arr.ndim != 2 or arr.shape[1] not in (2, 3) or arr.dtype.kind not in "iuf":
        raise BoundaryError(f"{where}: each position must be [lon, lat] with numbers")
    _check_range(arr[:, 0], 180, f"{where}", "longitude")
    _check_range(arr[:, 1], 90, f"{where}", "latitude")
    if not np.array_equal(arr[0, :2], arr[-1, :2]):
        raise BoundaryError(f"{where} is not closed: its first and last positions differ")


def _check_range(values: Any, bound: float, where: str, name: str) -> None:
    bad = ~np.isfinite(values) | (values < -bound) | (values > bound)
    if bad.any():
        i = int(np.argmax(bad))
        raise BoundaryError(
            f"{where} position {i}: {name} {values[i]} outside -{bound}..{bound} "
            "(positions are [lon, lat] in WGS 84)"
        )


_REASON = re.compile(r"^(?P<what>.*?)\s*\[(?P<x>\S+) (?P<y>\S+)\]$")


def _validity_message(reason: str, kind: str) -> str:
    """GEOS's reason ("Self-intersection[120.5 30.2]") as a sentence for integrators."""
    m = _REASON.match(reason)
    what, at = (m["what"], f" at ({m['x']}, {m['y']})") if m else (reason, "")
    if "self-intersection" in what.lower():
        if kind == "MultiPolygon":
            return f"self-intersection{at}: a ring crosses itself or the polygons overlap"
        return f"self-intersecting ring{at}"
    return f"{what[:1].lower()}{what[1:]}{at}"


# Hierarchy ----------------------------------------------------------------------------------


def subtree_query(code: str, name: str = "subtree") -> Select[tuple[str]]:
    """A SELECT of ``code`` and the codes of every grid below it (use with ``in_``).

    ``name`` names its CTE: give each subtree of one statement its own.
    """
    anchor = select(cast(literal(code), String(64)).label("code")).cte(name, recursive=True)
    tree = anchor.union(select(Grid.code).where(Grid.parent_code == anchor.c.code))
    return select(tree.c.code)


def subtree_codes(session: Session, code: str) -> list[str]:
    """``code`` and the codes of every grid below it (``code`` even when it is not known)."""
    return sorted(session.scalars(subtree_query(code)))


def get_grid(session: Session, code: str) -> Grid | None:
    return session.get(Grid, code)


@dataclass(frozen=True)
class GridFilter:
    parent_code: str | None = None
    level: str | None = None
    #: Only grids in this subtree (a scoped token's).
    within: str | None = None


def list_grids(
    session: Session, f: GridFilter, limit: int, cursor: str | None
) -> tuple[list[Grid], str | None]:
    """Grids ordered by code, keyset-paginated."""
    query = select(Grid).order_by(Grid.code)
    if f.parent_code is not None:
        query = query.where(Grid.parent_code == f.parent_code)
    if f.level is not None:
        query = query.where(Grid.level == f.level)
    if f.within is not None:
        query = query.where(Grid.code.in_(subtree_query(f.within)))
    if cursor:
        query = query.where(Grid.code > _decode_cursor(cursor))
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, _encode_cursor(rows[-1].code) if more and rows else None


def _encode_cursor(code: str) -> str:
    return base64.urlsafe_b64encode(code.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise BadGridCursor("invalid cursor: pass the next_cursor of a previous page") from err


def put_grid(session: Session, spec: GridSpec) -> tuple[Grid, bool]:
    """Create or replace one grid; returns (row, created). Boundaries are checked by the caller
    (the API schema) or here when given raw."""
    _check_spec_fields(spec)
    if spec.boundary is not None:
        try:
            check_boundary(spec.boundary)
        except BoundaryError as err:
            raise GridError(f"boundary: {err}") from None
    _check_parent(session, spec)
    _check_children(session, {spec.code: spec.level})
    row = session.get(Grid, spec.code)
    created = row is None
    now = utcnow()
    if row is None:
        row = Grid(code=spec.code, created_at=now)
        session.add(row)
    row.name, row.level, row.parent_code = spec.name, spec.level, spec.parent_code
    row.boundary, row.updated_at = spec.boundary, now
    session.flush()
    return row, created


def _check_spec_fields(spec: GridSpec) -> None:
    if not CODE_PATTERN.match(spec.code):
        raise GridError(f"code {spec.code!r} must be 1-64 letters, digits, '_', '.' or '-'")
    if spec.level not in LEVEL_RANK:
        raise GridError(f"level {spec.level!r} must be one of: {', '.join(LEVELS)}")
    if spec.parent_code == spec.code:
        raise GridError("a grid cannot be its own parent")


def _check_parent(session: Session, spec: GridSpec) -> None:
    if spec.parent_code is None:
        return
    parent = session.get(Grid, spec.parent_code)
    if parent is None:
        raise GridError(f"parent_code {spec.parent_code!r}: no such grid")
    problem = _level_problem(parent.level, spec.level)
    if problem:
        raise GridError(f"parent_code {spec.parent_code!r}: {problem}")


def _level_problem(parent_level: str, level: str) -> str | None:
    if LEVEL_RANK[parent_level] >= LEVEL_RANK[level]:
        return f"a {level} cannot be below a {parent_level} (order: " + " → ".join(LEVELS) + ")"
    return None


def _check_children(session: Session, levels: dict[str, str]) -> None:
    """Existing children of these grids (not themselves being changed) stay below them."""
    query = select(Grid.code, Grid.level, Grid.parent_code).where(
        Grid.parent_code.in_(list(levels)), Grid.code.not_in(list(levels))
    )
    _raise_problems(_children_problems(levels, session.execute(query)))


def _children_problems(
    levels: dict[str, str], children: Iterable[tuple[str, str, str | None]]
) -> list[str]:
    """Problems of stored children (code, level, parent) of grids getting these levels."""
    problems = []
    for code, level, parent in children:
        if parent is None or parent not in levels or code in levels:
            continue
        problem = _level_problem(levels[parent], level)
        if problem:
            problems.append(f"grid {parent!r} has child {code!r}: {problem}")
    return problems


# Import -------------------------------------------------------------------------------------


def import_grids(
    session: Session, collection: Any, within: Sequence[str] | None = None
) -> ImportResult:
    """Create or update every grid of a GeoJSON FeatureCollection, all or nothing.

    ``within``: the codes a scoped caller may write (None: any). Raises :class:`GridError`
    listing each refused feature as ``features[3] (code "G-12"): self-intersecting ring``.
    Cameras whose grid was assigned automatically are re-assigned afterwards.
    """
    features = _features(collection)
    problems: list[str] = []
    specs = _parse_features(features, problems)
    known = {
        code: (level, parent)
        for code, level, parent in session.execute(select(Grid.code, Grid.level, Grid.parent_code))
    }
    _check_hierarchy(specs, {c: lv for c, (lv, _) in known.items()}, problems)
    if within is not None:
        _check_within(specs, known, set(within), problems)
    levels = {s.code: s.level for _, s in specs}
    problems += _children_problems(levels, ((c, lv, p) for c, (lv, p) in known.items()))
    _raise_problems(problems)
    created, updated = _write(session, [s for _, s in specs], set(known))
    return ImportResult(created, updated, reassign_cameras(session))


def _features(collection: Any) -> list[Any]:
    if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
        raise GridError('the body must be a GeoJSON FeatureCollection ({"type": ..., "features"})')
    features = collection.get("features")
    if not isinstance(features, list):
        raise GridError("features must be an array of GeoJSON Features")
    return features


def _label(i: int, code: object) -> str:
    return f'features[{i}] (code "{code}")' if isinstance(code, str) else f"features[{i}]"


def _parse_features(features: list[Any], problems: list[str]) -> list[tuple[int, GridSpec]]:
    specs: list[tuple[int, GridSpec]] = []
    seen: dict[str, int] = {}
    found: list[tuple[int, str]] = []  # (feature index, problem): reported in feature order
    for i, feature in enumerate(features):
        props = feature.get("properties") if isinstance(feature, dict) else None
        code = props.get("code") if isinstance(props, dict) else None
        try:
            spec = _parse_feature(feature)
        except GridError as err:
            found.append((i, f"{_label(i, code)}: {err}"))
            continue
        if spec.code in seen:
            found.append((i, f"{_label(i, code)}: duplicate of features[{seen[spec.code]}]"))
            continue
        seen[spec.code] = i
        specs.append((i, spec))
    with_boundary = [(i, s) for i, s in specs if s.boundary is not None]
    checked = check_boundaries([s.boundary for _, s in with_boundary])
    bad = set()
    for (i, spec), (problem, _) in zip(with_boundary, checked, strict=True):
        if problem is not None:
            found.append((i, f"{_label(i, spec.code)}: {problem}"))
            bad.add(i)
    problems += [p for _, p in sorted(found, key=lambda f: f[0])]
    return [(i, s) for i, s in specs if i not in bad]


def _parse_feature(feature: Any) -> GridSpec:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise GridError("not a GeoJSON Feature")
    props = feature.get("properties")
    if not isinstance(props, dict):
        raise GridError("properties must be an object with code, name, level, parent_code")
    code, name, level = props.get("code"), props.get("name"), props.get("level")
    parent = props.get("parent_code")
    if not isinstance(code, str) or not isinstance(name, str) or not isinstance(level, str):
        raise GridError("properties code, name and level are required strings")
    if parent is not None and not isinstance(parent, str):
        raise GridError("properties.parent_code must be a string or null")
    if not 1 <= len(name) <= 200:
        raise GridError("properties.name must be 1-200 characters")
    geometry = feature.get("geometry")
    spec = GridSpec(code=code, name=name, level=level, parent_code=parent, boundary=geometry)
    _check_spec_fields(spec)
    return spec


def _check_hierarchy(
    specs: list[tuple[int, GridSpec]], known: dict[str, str], problems: list[str]
) -> None:
    levels = known | {s.code: s.level for _, s in specs}
    for i, spec in specs:
        if spec.parent_code is None:
            continue
        parent_level = levels.get(spec.parent_code)
        if parent_level is None:
            problems.append(
                f"{_label(i, spec.code)}: parent_code {spec.parent_code!r}: no such grid"
            )
            continue
        problem = _level_problem(parent_level, spec.level)
        if problem:
            problems.append(f"{_label(i, spec.code)}: parent_code {spec.parent_code!r}: {problem}")


def _check_within(
    specs: list[tuple[int, GridSpec]],
    known: dict[str, tuple[str, str | None]],
    within: set[str],
    problems: list[str],
) -> None:
    """A scoped caller may only write grids that are, and stay, inside its subtree."""
    inside = set(within)
    pending = {s.code: s for _, s in specs}
    grew = True
    while grew:  # each pass admits the imported children of grids already inside
        fresh = [c for c, s in pending.items() if s.parent_code in inside and c not in inside]
        inside.update(fresh)
        grew = bool(fresh)
    for i, spec in specs:
        if not writable(spec, known.get(spec.code), within, inside):
            problems.append(f"{_label(i, spec.code)}: outside this token's grid scope")


def writable(
    spec: GridSpec,
    current: tuple[str, str | None] | None,
    within: set[str],
    inside: set[str] | None = None,
) -> bool:
    """Whether a caller limited to ``within`` may write ``spec``.

    ``current``: (level, parent_code) of the stored grid, None when new. ``inside``:
    ``within`` plus the new grids being written below it (an import), default ``within``.
    A new grid needs a parent inside; an existing one must be inside and keep its parent
    or move to a parent inside.
    """
    inside = within if inside is None else inside
    if current is not None and spec.code not in within:
        return False
    if spec.parent_code in inside:
        return True
    return current is not None and current[1] == spec.parent_code


def _raise_problems(problems: list[str]) -> None:
    """Raise one :class:`GridError` listing the first problems, if there are any."""
    if not problems:
        return
    shown = problems[:MAX_REPORTED_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"; and {more} more" if more else ""
    raise GridError("; ".join(shown) + tail)


def _write(session: Session, specs: list[GridSpec], existing: set[str]) -> tuple[int, int]:
    now = utcnow()
    rows = [
        {
            "code": s.code,
            "name": s.name,
            "level": s.level,
            "parent_code": s.parent_code,
            "boundary": s.boundary,
            "updated_at": now,
        }
        for s in specs
    ]
    new = [r | {"created_at": now} for r in rows if r["code"] not in existing]
    old = [r for r in rows if r["code"] in existing]
    if new:
        session.execute(insert(Grid), new)
    if old:
        session.execute(update(Grid), old)
    session.flush()
    return len(new), len(old)


# Location → grid ----------------------------------------------------------------------------


class GridIndex:
    """An STRtree over the grid boundaries of one revision of the grids table."""

    def __init__(self, rows: Iterable[tuple[str, str, dict[str, Any] | str]]) -> None:
        """``rows``: (code, level, GeoJSON boundary as a mapping or as JSON text)."""
        codes, ranks, texts = [], [], []
        for code, level, boundary in rows:
            codes.append(code)
            ranks.append(LEVEL_RANK.get(level, 0))
            texts.append(boundary if isinstance(boundary, str) else json.dumps(boundary))
        geoms: Any = shapely.from_geojson(texts) if texts else []
        self.codes = codes
        self._ranks = ranks
        self._areas = [float(a) for a in shapely.area(geoms)] if texts else []
        self._tree = shapely.STRtree(geoms)

    def __len__(self) -> int:
        return len(self.codes)

    def locate(self, lon: float, lat: float) -> str | None:
        """The code of the smallest grid containing the point (see the module's rule)."""
        hits = self._tree.query(shapely.Point(lon, lat), predicate="covered_by")
        return self._best(int(i) for i in hits)

    def locate_many(self, points: Sequence[tuple[float, float]]) -> list[str | None]:
        """:meth:`locate` for many ``(lon, lat)`` points in one vectorised query."""
        if not points:
            return []
        found: list[list[int]] = [[] for _ in points]
        pairs = self._tree.query(shapely.points(list(points)), predicate="covered_by")
        for p, g in zip(pairs[0], pairs[1], strict=True):
            found[int(p)].append(int(g))
        return [self._best(hits) for hits in found]

    def _best(self, hits: Iterable[int]) -> str | None:
        ranked = [(-self._ranks[i], self._areas[i], self.codes[i]) for i in hits]
        return min(ranked)[2] if ranked else None


_cache_lock = threading.Lock()
_cache: dict[str, tuple[str, GridIndex]] = {}


def grid_index(session: Session) -> GridIndex:
    """The index of the grids this session sees, rebuilt only when the grids changed."""
    # Grids are never deleted, and every write sets updated_at: its maximum (read from an
    # index) names the revision. An uncommitted import's index is rebuilt after a rollback,
    # because the committed maximum then differs.
    stamp = str(session.scalar(select(func.max(Grid.updated_at))))
    key = str(session.get_bind().engine.url)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        # The boundaries as JSON text: GEOS parses them without a round trip through Python.
        rows = session.execute(
            select(Grid.code, Grid.level, cast(Grid.boundary, Text)).where(
                Grid.boundary.is_not(None)
            )
        )
        index = GridIndex((c, lv, b) for c, lv, b in rows if b)
        _cache[key] = (stamp, index)
        return index


def assign_grid(session: Session, lat: float, lon: float) -> str | None:
    """The code of the smallest grid whose boundary contains (lat, lon), or None."""
    return grid_index(session).locate(lon, lat)


def place_camera(session: Session, camera: Camera, *, grid_given: bool) -> None:
    """Set a camera's grid after a create or update.

    ``grid_given``: the request set ``grid_code`` (possibly to null). An explicit code sticks
    and is never re-assigned; otherwise a camera with a location gets the smallest containing
    grid and is marked as automatically assigned, so later grid imports re-assign it.
    """
    if grid_given and camera.grid_code is not None:
        camera.grid_auto = False
        return
    if not grid_given and not camera.grid_auto and camera.grid_code is not None:
        return  # an explicit grid set earlier
    if camera.lat is not None and camera.lon is not None:
        camera.grid_code = assign_grid(session, camera.lat, camera.lon)
        camera.grid_auto = True
    else:
        camera.grid_code, camera.grid_auto = None, False


def reassign_cameras(session: Session) -> int:
    """Re-place every camera whose grid is automatic (or unset) and that has a location.

    Returns how many cameras changed grid; their ``version`` is bumped so the camera
    runtime picks the new grid up for the incidents it creates.
    """
    query = select(Camera).where(
        Camera.lat.is_not(None),
        Camera.lon.is_not(None),
        Camera.grid_auto.is_(True) | Camera.grid_code.is_(None),
    )
    cameras = list(session.scalars(query))
    if not cameras:
        return 0
    points = [(float(c.lon or 0.0), float(c.lat or 0.0)) for c in cameras]
    codes = grid_index(session).locate_many(points)
    changed = 0
    now = utcnow()
    for camera, code in zip(cameras, codes, strict=True):
        camera.grid_auto = True
        if camera.grid_code != code:
            camera.grid_code, camera.updated_at = code, now
            camera.version += 1
            changed += 1
    session.flush()
    return changed
