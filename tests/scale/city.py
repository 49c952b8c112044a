"""A generated city: its grid hierarchy with GeoJSON boundaries, and cameras placed in it.

Shaped like Tongliao: 1 city, 8 counties, 80 towns, 900 communities, 18,174 grids by
default. Each level tiles its parent's rectangle exactly (rows of equal tiles), so every
point of the city lies in exactly one grid and the placement code has real work to do.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert

from runtime.services import Services
from storage.grids import import_grids, reassign_cameras
from storage.models import Camera, utcnow

Box = tuple[float, float, float, float]

#: The city's rectangle (lon, lat): about Tongliao's extent.
BBOX = (119.2, 42.2, 123.7, 45.7)


@dataclass(frozen=True)
class CityShape:
    counties: int = 8
    towns: int = 80
    communities: int = 900
    grids: int = 18_174
    cameras: int = 20_000

    @classmethod
    def small(cls) -> CityShape:
        """The CI city: 1,000 cameras in 909 grids (same levels, 1/20 of the size)."""
        return cls(counties=2, towns=8, communities=45, grids=909, cameras=1_000)


@dataclass
class City:
    shape: CityShape
    features: list[dict[str, Any]] = field(default_factory=list)
    #: Codes of the leaves, and of every county with the grids below it.
    grids: list[tuple[str, Box]] = field(default_factory=list)
    counties: list[str] = field(default_factory=list)


def spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts differing by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def tiles(
    box: tuple[float, float, float, float], n: int
) -> list[tuple[float, float, float, float]]:
    """``n`` rectangles that exactly cover ``box``: rows of equal tiles."""
    x0, y0, x1, y1 = box
    rows = max(1, round(math.sqrt(n)))
    out = []
    for r, count in enumerate(spread(n, rows)):
        ya, yb = y0 + (y1 - y0) * r / rows, y0 + (y1 - y0) * (r + 1) / rows
        for c in range(count):
            xa, xb = x0 + (x1 - x0) * c / count, x0 + (x1 - x0) * (c + 1) / count
            out.append((xa, ya, xb, yb))
    return out


def _feature(code: str, name: str, level: str, parent: str | None, box: Any) -> dict[str, Any]:
    x0, y0, x1, y1 = (round(v, 7) for v in box)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    props = {"code": code, "name": name, "level": level, "parent_code": parent}
    return {
        "type": "Feature",
        "properties": props,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def build_city(shape: CityShape) -> City:
    """The grid hierarchy of ``shape`` as GeoJSON features, parents before children."""
    city = City(shape)
    city.features.append(_feature("1505", "通辽市", "city", None, BBOX))
    county_boxes = tiles(BBOX, shape.counties)
    towns = spread(shape.towns, shape.counties)
    communities = iter(spread(shape.communities, shape.towns))
    grids = iter(spread(shape.grids, shape.communities))
    for c, cbox in enumerate(county_boxes, 1):
        ccode = f"1505{c:02d}"
        city.counties.append(ccode)
        city.features.append(_feature(ccode, f"县{c}", "county", "1505", cbox))
        for t, tbox in enumerate(tiles(cbox, towns[c - 1]), 1):
            tcode = f"{ccode}{t:03d}"
            city.features.append(_feature(tcode, f"镇{c}-{t}", "town", ccode, tbox))
            for m, mbox in enumerate(tiles(tbox, next(communities)), 1):
                mcode = f"{tcode}{m:03d}"
                city.features.append(_feature(mcode, f"社区{mcode}", "community", tcode, mbox))
                for g, gbox in enumerate(tiles(mbox, next(grids)), 1):
                    gcode = f"{mcode}{g:03d}"
                    city.features.append(_feature(gcode, f"网格{gcode}", "grid", mcode, gbox))
                    city.grids.append((gcode, gbox))
    return city


def camera_points(city: City, seed: int = 7) -> Iterator[tuple[float, float]]:
    """(lon, lat) of each camera: in a random grid, inside it (a margin from its edges)."""
    rng = random.Random(seed)
    for _ in range(city.shape.cameras):
        _code, (x0, y0, x1, y1) = rng.choice(city.grids)
        yield (
            x0 + (x1 - x0) * rng.uniform(0.1, 0.9),
            y0 + (y1 - y0) * rng.uniform(0.1, 0.9),
        )


@dataclass(frozen=True)
class Populated:
    grids_s: float
    cameras_s: float
    placement_s: float
    placed: int


def populate(services: Services, city: City) -> Populated:
    """Import the grids (the real GeoJSON import), register the cameras with their
    locations, then place every camera in its grid (the real placement, timed)."""
    t0 = time.perf_counter()
    with services.tx() as session:
        import_grids(session, {"type": "FeatureCollection", "features": city.features})
    t1 = time.perf_counter()
    now = utcnow()
    rows = [
        {
            "id": f"cam_{i:06d}",
            "name": f"摄像机 {i}",
            "main_url_shown": f"sim://cam_{i:06d}",
            "lat": lat,
            "lon": lon,
            "grid_auto": True,
            "zones": [],
            "analytics": {},
            "recording": {},
            "enabled": True,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for i, (lon, lat) in enumerate(camera_points(city))
    ]
    with services.tx() as session:
        for i in range(0, len(rows), 5000):
            session.execute(insert(Camera), rows[i : i + 5000])
    t2 = time.perf_counter()
    with services.tx() as session:
        placed = reassign_cameras(session)
    t3 = time.perf_counter()
    return Populated(t1 - t0, t2 - t1, t3 - t2, placed)
