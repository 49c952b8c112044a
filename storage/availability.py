"""Camera availability over a period, summed by the database: daily rows for whole days,
the raw transitions only for the rest.

The definition is :func:`storage.cameras.online_seconds`: a camera is in the state of its
last transition (ordered by ``at``, then ``id``); before its first one it counts as not
online, and every camera is measured over the whole period (``period_s = until - since``),
also one added during it.

Two kinds of rows answer a report:

* ``camera_availability_daily`` — one finished UTC day of one camera, written by
  :func:`rollup` (one set-based statement per day, rerunnable: delete + insert) and marked
  complete in ``availability_rollups``. A report sums the rows of the whole days inside its
  period that are marked.
* ``camera_state_log`` — everything else (the partial days at both ends, days not rolled up
  yet) is integrated from the transitions in SQL: per *gap* (a stretch of the period not
  covered by rolled-up days) each camera's state at the gap's start (its last transition
  before it, one index probe) and its transitions inside the gap, ``LEAD`` giving where each
  one ends.

完好 time (a camera online *and* its picture usable, issue #17) is read the same way from
``camera_quality_log`` beside ``camera_state_log``: the seconds a camera was online while its
picture was ``degraded`` are subtracted from its online seconds (each online stretch against
each degraded stretch that overlaps it), and the daily rows keep ``good_s`` and the picture's
``quality_end_state`` next to ``online_s`` and ``end_state``.

Both are additive: the seconds online in [a, c) are those in [a, b) plus those in [b, c),
so a day read from its row and the hours around it read from the log give exactly the sum
of reading everything from the log. Retention (storage/retention.py) relies on it: it rolls
every finished day up before it compacts the transitions of old days.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    Float,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.expression import CTE, BindParameter, Subquery

from storage.grid_models import Grid
from storage.grids import subtree_query
from storage.models import (
    AvailabilityRollup,
    Camera,
    CameraAvailabilityDay,
    CameraQualityChange,
    CameraStateChange,
    UTCDateTime,
    utcnow,
)

ONLINE = "online"
#: The picture-quality state that makes online time not 完好.
DEGRADED = "degraded"
DAY = timedelta(days=1)
#: A day is rolled up this long after it ended: a status written a moment late (a worker's
#: clock behind, a slow transaction) still lands in it.
GRACE = timedelta(minutes=10)
#: The report's count of well-kept cameras: online at least this share of the period.
GOOD_RATIO = 0.98
#: Held by :func:`rollup` for its transaction on PostgreSQL: processes sweeping at once
#: replace a day one after the other instead of colliding on its rows.
ROLLUP_LOCK = 0x58554C0D
#: PostgreSQL's ``work_mem`` for one report's transaction.
REPORT_WORK_MEM = "64MB"
#: A selection of at most this many cameras is read by their ids, named in the statement:
#: the planner then knows how few they are and probes (camera_id, at) per camera. A larger
#: one is read as the whole city is, and joined at the end: as a subquery its size is not
#: estimated (200 rows), and planning 20,000 named ids took 200 ms.
NAMED_CAMERAS = 5000

#: The cameras a report reads: None (all), a subquery of them, or their ids (on
#: PostgreSQL one array parameter: 2,500 ids in six places as one bind each cost 320 ms
#: of a county's 600 ms in SQLAlchemy and psycopg, before the server saw the query).
Only = CTE | BindParameter[Sequence[str]] | list[str] | None


@dataclass(frozen=True)
class Gap:
    """A stretch [start, end) of a period read from the transitions, from ``scan`` on
    (``start`` or the midnight before it), in the state each camera ended the day before
    ``scan`` in (from its daily row) when ``known``, else in its last transition's."""

    start: datetime
    end: datetime
    scan: datetime
    known: bool


@dataclass(frozen=True)
class CameraOnline:
    camera_id: str
    name: str
    online_s: float
    period_s: float
    #: Seconds online with a usable picture (not ``degraded``): 完好 time.
    good_s: float = 0.0

    @property
    def ratio(self) -> float:
        return self.online_s / self.period_s if self.period_s > 0 else 0.0

    @property
    def good_ratio(self) -> float:
        return self.good_s / self.period_s if self.period_s > 0 else 0.0


@dataclass(frozen=True)
class Report:
    """Availability of the selected cameras over [since, until)."""

    since: datetime
    until: datetime
    #: Per camera, in registration order; empty when the report was asked for totals only.
    cameras: list[CameraOnline]
    camera_count: int
    #: Seconds online of all the cameras together.
    online_s: float
    #: Cameras online at least :data:`GOOD_RATIO` of the period.
    at_or_above_98: int
    #: Seconds online with a usable picture, of all the cameras together.
    good_s: float = 0.0
    #: Cameras 完好 at least :data:`GOOD_RATIO` of the period.
    good_at_or_above_98: int = 0

    @property
    def period_s(self) -> float:
        return (self.until - self.since).total_seconds()

    @property
    def total_ratio(self) -> float:
        """Online time of all the cameras over their total time."""
        total = self.camera_count * self.period_s
        return self.online_s / total if total > 0 else 0.0

    @property
    def good_ratio(self) -> float:
        """完好率: online time with a usable picture over the total time."""
        total = self.camera_count * self.period_s
        return self.good_s / total if total > 0 else 0.0


@dataclass(frozen=True)
class GridAvailability:
    """The totals of one grid's subtree."""

    code: str
    name: str
    level: str
    report: Report


# The report ---------------------------------------------------------------------------------


def report(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    grid_code: str | None = None,
    camera_ids: Collection[str] | None = None,
    per_camera: bool = True,
    visible: Collection[str] | None = None,
) -> Report:
    """Seconds online (and 完好) of each selected camera over [since, until), and the totals.

    Cameras are selected by ``grid_code`` (its subtree), ``camera_ids`` and ``visible``
    (the caller's grid codes, ``api.scope.visible_grid_codes``; None: every camera), all
    that are given. With ``per_camera=False`` only the totals leave the database.
    """
    online = _online(session, since, until, grid_code, camera_ids, visible)
    period_s = (until - since).total_seconds()
    if not per_camera:
        return _totals(session, online, since, until, period_s)
    rows = [
        CameraOnline(camera_id, name, float(online_s), period_s, float(good_s))
        for camera_id, name, online_s, good_s in session.execute(
            select(online.c.id, online.c.name, online.c.online_s, online.c.good_s).order_by(
                online.c.created_at, online.c.id
            )
        )
    ]
    return Report(
        since=since,
        until=until,
        cameras=rows,
        camera_count=len(rows),
        online_s=sum(r.online_s for r in rows),
        at_or_above_98=sum(1 for r in rows if r.ratio >= GOOD_RATIO),
        good_s=sum(r.good_s for r in rows),
        good_at_or_above_98=sum(1 for r in rows if r.good_ratio >= GOOD_RATIO),
    )


def grid_report(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    parent_code: str | None = None,
    visible: Collection[str] | None = None,
) -> list[GridAvailability]:
    """The totals of each grid right below ``parent_code`` (None: the top grids), each over
    its whole subtree, in one statement: a health page's rate per grid.

    Cameras placed in ``parent_code`` itself belong to no child: they count in
    :func:`report` for the parent, not here. With ``visible``, only the grids in it.
    """
    children = select(Grid.code.label("code"), Grid.code.label("top")).where(
        Grid.parent_code == parent_code if parent_code is not None else Grid.parent_code.is_(None)
    )
    tree = children.cte("tops", recursive=True)
    tree = tree.union_all(select(Grid.code, tree.c.top).where(Grid.parent_code == tree.c.code))
    online = _online(session, since, until, parent_code, None, visible)
    period_s = (until - since).total_seconds()
    per_grid = (
        select(
            tree.c.top,
            func.count(online.c.id).label("cameras"),
            func.coalesce(func.sum(online.c.online_s), 0.0).label("online_s"),
            func.coalesce(func.sum(online.c.good_s), 0.0).label("good_s"),
            func.coalesce(func.sum(_at_least(online.c.online_s, period_s)), 0).label("on98"),
            func.coalesce(func.sum(_at_least(online.c.good_s, period_s)), 0).label("good98"),
        )
        .join_from(tree, online, online.c.grid_code == tree.c.code)
        .group_by(tree.c.top)
        .subquery("per_grid")
    )
    query = (
        select(Grid.code, Grid.name, Grid.level, per_grid)
        .join_from(Grid, per_grid, per_grid.c.top == Grid.code, isouter=True)
        .where(Grid.code.in_(select(children.subquery().c.code)))
        .order_by(Grid.code)
    )
    if visible is not None:
        query = query.where(Grid.code.in_(list(visible)))
    return [
        GridAvailability(
            code,
            name,
            level,
            Report(
                since,
                until,
                [],
                int(cameras or 0),
                float(online_s or 0.0),
                int(on98 or 0),
                float(good_s or 0.0),
                int(good98 or 0),
            ),
        )
        for code, name, level, _top, cameras, online_s, good_s, on98, good98 in session.execute(
            query
        )
    ]


def _online(
    session: Session,
    since: datetime,
    until: datetime,
    grid_code: str | None,
    camera_ids: Collection[str] | None,
    visible: Collection[str] | None,
) -> Subquery:
    """(id, name, created_at, grid_code, online_s, good_s) of every selected camera."""
    if since >= until:
        raise ValueError("since must be before until")
    if session.get_bind().dialect.name == "postgresql":
        # A city's 600,000 daily rows and 200,000 transitions sort in memory, not on disk.
        session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
        # The report's plan is large (175 expressions with 完好 time): PostgreSQL's JIT spent
        # 2.0 s compiling them for a 1.5 s execution (EXPLAIN ANALYZE, city, 20,000 cameras).
        session.execute(text("SET LOCAL jit = off"))
    cams = _selected(grid_code, camera_ids, visible).cte("cams")
    only: Only = None
    if grid_code is not None or camera_ids is not None or visible is not None:
        # As a subquery, one camera of a grid read the whole partial days' transitions
        # (100,000) and hashed them against it: 81 ms, 21 ms by its id.
        ids = list(session.scalars(select(cams.c.id).limit(NAMED_CAMERAS + 1)))
        only = ids if len(ids) <= NAMED_CAMERAS else None
        if isinstance(only, list) and session.get_bind().dialect.name == "postgresql":
            named: Sequence[str] = ids
            only = bindparam("only_ids", named, type_=ARRAY(String()))
    days, gaps = _split(session, since, until)
    return _online_per_camera(session, only, cams, days, gaps)


def _at_least(seconds: ColumnElement[float], period_s: float) -> ColumnElement[int]:
    return case((seconds >= GOOD_RATIO * period_s, 1), else_=0)


def _totals(
    session: Session, online: Subquery, since: datetime, until: datetime, period_s: float
) -> Report:
    count, online_s, at_or_above, good_s, good_at_or_above = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(online.c.online_s), 0.0),
            func.coalesce(func.sum(_at_least(online.c.online_s, period_s)), 0),
            func.coalesce(func.sum(online.c.good_s), 0.0),
            func.coalesce(func.sum(_at_least(online.c.good_s, period_s)), 0),
        )
    ).one()
    return Report(
        since,
        until,
        [],
        int(count),
        float(online_s),
        int(at_or_above),
        float(good_s),
        int(good_at_or_above),
    )


def _selected(
    grid_code: str | None, camera_ids: Collection[str] | None, visible: Collection[str] | None
) -> Select[str, str, datetime, str | None]:
    query = select(Camera.id, Camera.name, Camera.created_at, Camera.grid_code)
    if grid_code is not None:
        query = query.where(Camera.grid_code.in_(subtree_query(grid_code)))
    if visible is not None:
        query = query.where(Camera.grid_code.in_(list(visible)))
    if camera_ids is not None:
        query = query.where(Camera.id.in_(list(camera_ids)))
    return query


def _split(session: Session, since: datetime, until: datetime) -> tuple[list[date], list[Gap]]:
    """The rolled-up whole days inside [since, until), and the gaps between them (each
    reading from the midnight before it when the day before that is rolled up)."""
    start_day, end_day = _midnight(since).date() - DAY, _midnight(until).date()
    rolled = set(
        session.scalars(
            select(AvailabilityRollup.day).where(
                AvailabilityRollup.day >= start_day, AvailabilityRollup.day < end_day
            )
        )
    )
    days = sorted(d for d in rolled if _at(d) >= since and _at(d) + DAY <= until)
    gaps, start = [], since
    for day in [*days, None]:
        end = until if day is None else _at(day)
        if start < end:
            scan = _midnight(start)
            known = scan.date() - DAY in rolled
            gaps.append(Gap(start, end, scan if known else start, known))
        if day is not None:
            start = _at(day) + DAY
    return days, gaps


def _at(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _online_per_camera(
    session: Session, only: Only, cams: CTE, days: Sequence[date], gaps: Sequence[Gap]
) -> Subquery:
    """(id, name, created_at, grid_code, online_s, good_s) of every camera of ``cams``;
    ``only``: the cameras the daily rows and transitions are read for (None: all of them,
    joined at the end — for a whole city a scan beats 20,000 index probes, and a CTE's size
    is not estimated).
    """
    online: ColumnElement[float] = literal(0.0, Float)
    good: ColumnElement[float] = literal(0.0, Float)
    query = select(cams.c.id, cams.c.name, cams.c.created_at, cams.c.grid_code)
    if days:
        daily = _daily_sums(only, days)
        query = query.outerjoin(daily, daily.c.camera_id == cams.c.id)
        online = online + func.coalesce(daily.c.online_s, 0.0)
        good = good + func.coalesce(daily.c.good_s, 0.0)
    if gaps:
        raw = _raw_sums(session, only, cams, gaps)
        query = query.outerjoin(raw, raw.c.camera_id == cams.c.id)
        online = online + func.coalesce(raw.c.online_s, 0.0)
        good = good + func.coalesce(raw.c.online_s, 0.0) - func.coalesce(raw.c.lost_s, 0.0)
    return query.add_columns(online.label("online_s"), good.label("good_s")).subquery("online")


def _raw_sums(session: Session, only: Only, cams: CTE, gaps: Sequence[Gap]) -> Subquery:
    """(camera_id, online_s, lost_s) over the gaps, from the transitions: seconds online,
    and seconds online while the picture was degraded."""
    states = _segments(session, only, cams, gaps, CameraStateChange).cte("states")
    pictures = _segments(session, only, cams, gaps, CameraQualityChange).cte("pictures")
    online = case((states.c.state == ONLINE, states.c.length), else_=0.0)
    sums = select(states.c.camera_id, func.sum(online).label("online_s")).group_by(
        states.c.camera_id
    )
    lost = _overlap(session, states, ONLINE, pictures, DEGRADED).subquery("lost")
    return _join_lost(sums.subquery("sums"), lost)


def _join_lost(sums: Subquery, lost: Subquery) -> Subquery:
    return (
        select(sums.c.camera_id, sums.c.online_s, lost.c.lost_s)
        .outerjoin_from(sums, lost, lost.c.camera_id == sums.c.camera_id)
        .subquery("raw")
    )


def _overlap(session: Session, a: CTE, a_state: str, b: CTE, b_state: str) -> Select[str, float]:
    """Per camera, the seconds its stretches of ``a`` in ``a_state`` overlap its stretches
    of ``b`` in ``b_state`` (a handful of stretches per camera and period: pairs are few)."""
    start = case((a.c.start > b.c.start, a.c.start), else_=b.c.start)
    end = case((a.c.end < b.c.end, a.c.end), else_=b.c.end)
    return (
        select(a.c.camera_id, func.sum(_seconds(session, end, start)).label("lost_s"))
        .join_from(
            a,
            b,
            and_(
                b.c.camera_id == a.c.camera_id,
                a.c.state == a_state,
                b.c.state == b_state,
                a.c.start < b.c.end,
                b.c.start < a.c.end,
            ),
        )
        .group_by(a.c.camera_id)
    )


def _daily_sums(only: Only, days: Sequence[date]) -> Subquery:
    d = CameraAvailabilityDay
    query = select(
        d.camera_id,
        func.sum(d.online_s).label("online_s"),
        # Days rolled up before pictures were checked (migration 0019): all online was 完好.
        func.sum(func.coalesce(d.good_s, d.online_s)).label("good_s"),
    ).where(d.day >= days[0], d.day <= days[-1], *_among(d.camera_id, only))
    if (days[-1] - days[0]).days + 1 != len(days):  # not one run: name them
        query = query.where(d.day.in_(days))
    return query.group_by(d.camera_id).subquery("daily")


# Integrating the transitions ----------------------------------------------------------------


def _among(
    camera_id: ColumnElement[str] | InstrumentedAttribute[str], only: Only
) -> list[ColumnElement[bool]]:
    if only is None:
        return []
    if isinstance(only, BindParameter):
        return [camera_id == any_(only)]
    return [camera_id.in_(only if isinstance(only, list) else select(only.c.id))]


def _segments(
    session: Session,
    only: Only,
    cams: CTE,
    gaps: Sequence[Gap],
    log: type[CameraStateChange | CameraQualityChange] = CameraStateChange,
) -> Select[Any]:
    """(camera_id, state, start, end, length, changes, last) of each stretch of one state in
    each gap, from ``log``: the online/offline transitions or the picture-quality ones.

    Per gap and camera: a first stretch from ``scan`` in the state the camera was in then
    (none for a camera without one), then one per transition from ``scan`` on; each ends
    where the next starts, the last at the gap's end; only what lies in the gap counts.
    """
    daily = CameraAvailabilityDay
    # The state the day before ended in, from its daily row (NULL: no picture state then).
    end_state = daily.end_state if log is CameraStateChange else daily.quality_end_state
    # One select per gap and source, the gap's times as constants: the planner sees how
    # few transitions a partial day holds and reads them through (camera_id, at) for a
    # selection of cameras, instead of hashing the whole log against it (a grid's one
    # camera read all 240,000 picture transitions: 41 of its 74 ms).
    parts: list[Select[*tuple[Any, ...]]] = []
    for i, g in enumerate(gaps):
        common = (
            literal(i, Integer).label("gap"),
            literal(g.start, UTCDateTime()).label("g0"),
            literal(g.end, UTCDateTime()).label("g1"),
        )
        if g.known:
            parts.append(
                select(
                    daily.camera_id,
                    literal(g.scan, UTCDateTime()).label("at"),
                    literal(0, Integer).label("ord"),
                    literal(0, Integer).label("id"),
                    end_state.label("state"),
                    *common,
                ).where(
                    daily.day == g.scan.date() - DAY,
                    end_state.is_not(None),
                    *_among(daily.camera_id, only),
                )
            )
        else:
            before = (
                select(log.state)
                .where(log.camera_id == cams.c.id, log.at < g.scan)
                .order_by(log.at.desc(), log.id.desc())
                .limit(1)
                .scalar_subquery()
            )
            probed = select(cams.c.id.label("camera_id"), before.label("state")).subquery()
            parts.append(
                select(
                    probed.c.camera_id,
                    literal(g.scan, UTCDateTime()).label("at"),
                    literal(0, Integer).label("ord"),
                    literal(0, Integer).label("id"),
                    probed.c.state,
                    *common,
                ).where(probed.c.state.is_not(None))
            )
        inside = select(
            log.camera_id,
            log.at,
            literal(1, Integer).label("ord"),
            log.id.label("id"),
            log.state,
            *common,
        ).where(log.at >= g.scan, log.at < g.end, *_among(log.camera_id, only))
        parts.append(inside)
    rows = union_all(*parts).subquery("rows")
    following = func.lead(rows.c.at).over(
        partition_by=(rows.c.gap, _bytewise(session, rows.c.camera_id)),
        order_by=(rows.c.at, rows.c.ord, rows.c.id),
    )
    stretches = select(
        rows.c.camera_id,
        rows.c.state,
        case((rows.c.at > rows.c.g0, rows.c.at), else_=rows.c.g0).label("start"),
        func.coalesce(following, rows.c.g1).label("end"),
        case((rows.c.at >= rows.c.g0, rows.c.ord), else_=0).label("changes"),
        case((following.is_(None), 1), else_=0).label("last"),
    ).subquery("stretches")
    seconds = _seconds(session, stretches.c.end, stretches.c.start)
    return select(
        stretches.c.camera_id,
        stretches.c.state,
        stretches.c.start,
        stretches.c.end,
        case((stretches.c.end > stretches.c.start, seconds), else_=0.0).label("length"),
        stretches.c.changes,
        stretches.c.last,
    )


def _bytewise(session: Session, value: ColumnElement[str]) -> ColumnElement[str]:
    """``value`` compared byte by byte: PostgreSQL sorts text in the database's collation
    (C.UTF-8 here) through strcoll, which made sorting a city's 217,000 stretches by camera
    cost 470 ms of a 1.5 s report; a partition only needs equal ids together."""
    if session.get_bind().dialect.name == "postgresql":
        return value.collate("C")
    return value  # SQLite compares text bytewise already (BINARY)


def _seconds(
    session: Session, later: ColumnElement[datetime], earlier: ColumnElement[datetime]
) -> ColumnElement[float]:
    """``later - earlier`` in seconds, in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", later - earlier), Float)
    # SQLite keeps times as ISO text; julianday's double is good to ~40 µs at today's dates.
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


# Rolling days up ----------------------------------------------------------------------------


def rollup(session: Session, day: date) -> int:
    """Write the rows of one finished UTC day from the transitions (replacing any) and mark
    the day complete; returns how many cameras had a row.

    Only for days whose transitions are intact: retention compacts old days'
    (:func:`pending_days` stays within what it keeps).
    """
    d = CameraAvailabilityDay
    if session.get_bind().dialect.name == "postgresql":  # every process sweeps: one at a time
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ROLLUP_LOCK})
    start = datetime.combine(day, time(), UTC)
    cams = select(Camera.id).cte("cams")
    known = session.get(AvailabilityRollup, day - DAY) is not None
    gaps = [Gap(start, start + DAY, start, known)]
    seg = _segments(session, cams, cams, gaps).cte("states")
    pictures = _segments(session, cams, cams, gaps, CameraQualityChange).cte("pictures")
    lost = _overlap(session, seg, ONLINE, pictures, DEGRADED).subquery("lost")
    picture_end = (
        select(pictures.c.camera_id, pictures.c.state)
        .where(pictures.c.last == 1)
        .subquery("picture_end")
    )
    length = seg.c.length
    online = func.sum(case((seg.c.state == ONLINE, length), else_=0.0))
    rows = (
        select(
            seg.c.camera_id,
            literal(day, Date),
            online,
            online - func.coalesce(func.max(lost.c.lost_s), 0.0),
            func.sum(length),
            func.sum(seg.c.changes),
            func.max(case((seg.c.last == 1, seg.c.state))),
            func.max(picture_end.c.state),
        )
        .outerjoin(lost, lost.c.camera_id == seg.c.camera_id)
        .outerjoin(picture_end, picture_end.c.camera_id == seg.c.camera_id)
        .group_by(seg.c.camera_id)
    )
    session.execute(delete(d).where(d.day == day))
    columns = [
        "camera_id",
        "day",
        "online_s",
        "good_s",
        "known_s",
        "changes",
        "end_state",
        "quality_end_state",
    ]
    session.execute(insert(d).from_select(columns, rows))
    cameras = int(session.scalar(select(func.count()).where(d.day == day)) or 0)
    session.execute(delete(AvailabilityRollup).where(AvailabilityRollup.day == day))
    session.add(AvailabilityRollup(day=day, cameras=cameras, rolled_at=utcnow()))
    session.flush()
    return cameras


def analyze_daily(session: Session) -> None:
    """Refresh PostgreSQL's statistics of the daily rows after days were added: autovacuum
    waits for a tenth of the table to change (three days of a city), and until then a
    report's plan takes the new days for nearly empty (1,178 rows estimated for a month's
    580,000: sorted instead of hashed)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"ANALYZE {CameraAvailabilityDay.__tablename__}"))


def pending_days(session: Session, now: datetime, oldest: date) -> list[date]:
    """Finished days (:data:`GRACE` after their end) from ``oldest`` on, after the first
    logged transition, that are not rolled up."""
    first_at = session.scalar(select(func.min(CameraStateChange.at)))
    if first_at is None:
        return []
    start, end = max(first_at.date(), oldest), (now - GRACE).date()
    if start >= end:
        return []
    done = set(
        session.scalars(select(AvailabilityRollup.day).where(AvailabilityRollup.day >= start))
    )
    count = (end - start).days
    return [day for day in (start + DAY * i for i in range(count)) if day not in done]


def _midnight(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime.combine(t.date(), time(), UTC)
