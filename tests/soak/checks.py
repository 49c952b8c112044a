"""The soak's properties, checked on what it collected at the end (pure functions).

Each check returns its numbers and the list of what failed (empty when the property holds).
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tests.integration.test_delivery import SECRET, Delivered
from tests.soak.probe import Sample

KILL_LOSS_S = 2.0  # issue #21: a clip open at a kill keeps all but its last 2 s at most
KILLED = "stopped while"  # storage.incidents: clips cut by a service stop say so
RSS_GROWTH_MAX = 1.30  # last-5-min average over first-5-min average
FDS_GROWTH_MAX = 1.20
FDS_SLACK = 16  # a few sockets more or less (HTTP keep-alive, S3 pool) is not a leak


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    mp4: bool  # starts with an ISO BMFF ``ftyp`` box


@dataclass(frozen=True)
class Result:
    numbers: dict[str, Any]
    failures: list[str]


def clips(
    incidents: Sequence[Mapping[str, Any]],
    objects: Mapping[str, StoredObject],
    events: Sequence[Mapping[str, Any]],
    kills: Sequence[float],
    cameras: int,
) -> Result:
    """Every incident ended with its clip archived and verified in S3, those open at a
    service kill included: their clips come back from the spool's journals at the restart
    (issue #21: ``end_reason`` ``process_died``); a clip the kill cut is a failure."""
    states = Counter(str(i["clip"]["state"]) if i.get("clip") else "none" for i in incidents)
    failures: list[str] = []
    cut = [i for i in incidents if _state(i) == "failed" and KILLED in (_error(i) or "")]
    for inc in incidents:
        failures += _clip_failures(inc, objects)
    if cut:
        failures.append(f"{len(cut)} clips lost to {len(kills)} kill(s) of {cameras} cameras")
    recovered = [i for i in incidents if i.get("end_reason") == "process_died"]
    late = [i["id"] for i in recovered if not _ends_near_a_kill(i, kills)]
    if late:
        failures.append(
            f"{len(late)} recovered clips end over {KILL_LOSS_S} s before a kill: {late[:5]}"
        )
    archived = {i["id"] for i in incidents if _state(i) == "archived"}
    failures += _archived_events(archived, events)
    strays = sorted(set(objects) - {i["id"] for i in incidents})
    if strays:
        failures.append(f"{len(strays)} clip objects belong to no incident: {strays[:5]}")
    numbers = {
        "incidents": len(incidents),
        "by_state": dict(states),
        "cut_by_kill": len(cut),
        "recovered_after_kill": len(recovered),
        "verified_in_s3": sum(1 for i in incidents if _verified(i, objects)),
        "objects": len(objects),
        "bytes": sum(o.size for o in objects.values()),
    }
    return Result(numbers, failures)


def _ends_near_a_kill(inc: Mapping[str, Any], kills: Sequence[float]) -> bool:
    """An incident the kill interrupted ends at its last recorded frame: at most
    :data:`KILL_LOSS_S` before a kill (and never after it)."""
    ended = datetime.fromisoformat(str(inc["ended_at"])).timestamp()
    return any(0 <= kill - ended <= KILL_LOSS_S for kill in kills)


def _state(inc: Mapping[str, Any]) -> str | None:
    clip = inc.get("clip")
    return str(clip["state"]) if clip else None


def _error(inc: Mapping[str, Any]) -> str | None:
    clip = inc.get("clip")
    return clip.get("error") if clip else None


def _verified(inc: Mapping[str, Any], objects: Mapping[str, StoredObject]) -> bool:
    obj = objects.get(inc["id"])
    clip = inc.get("clip")
    return bool(clip and obj and clip["sha256"] == obj.sha256 and clip["size"] == obj.size)


def _clip_failures(inc: Mapping[str, Any], objects: Mapping[str, StoredObject]) -> list[str]:
    state, name = _state(inc), inc["id"]
    if inc.get("ended_at") is None:
        return [f"{name}: never ended"]
    if state == "archived":
        if not _verified(inc, objects):
            return [f"{name}: archived but not verified in S3"]
        return [] if objects[name].mp4 else [f"{name}: the stored clip is not an MP4"]
    return [f"{name}: clip {state} ({_error(inc)})"]


def _archived_events(archived: set[str], events: Sequence[Mapping[str, Any]]) -> list[str]:
    counts = Counter(e["data"].get("id") for e in events if e["type"] == "incident.clip_archived")
    wrong = sorted(i for i in archived if counts.get(i, 0) != 1)
    return [f"{len(wrong)} archived incidents without exactly one clip_archived event"] * bool(
        wrong
    )


def after_delete(
    incidents: Sequence[Mapping[str, Any]], deleted: Mapping[str, datetime], grace_s: float
) -> Result:
    """No camera starts an incident once its DELETE has been answered (but for the moment
    the runtime takes to notice)."""
    late = [
        i["id"]
        for i in incidents
        if i["camera_id"] in deleted
        and datetime.fromisoformat(i["started_at"])
        > deleted[i["camera_id"]] + timedelta(seconds=grace_s)
    ]
    failures = [f"{len(late)} incidents started after their camera was deleted: {late[:5]}"]
    return Result({"started_after_delete": len(late)}, failures if late else [])


def deliveries(
    delivered: Sequence[Delivered], events: Sequence[Mapping[str, Any]], start_seq: int
) -> Result:
    """Every event of the log after the subscription started reached the receiver, in seq
    order, signed; repeats are allowed (at least once) but only as re-sends of the event
    just delivered (the cursor never goes back)."""
    log = {e["seq"]: e for e in events if e["seq"] > start_seq}
    # Events appended after the log was read (the cameras' deletion goes on) may reach the
    # receiver before its deliveries are read: they cannot be judged, and are not counted.
    read_up_to = max(log, default=start_seq)
    complete = [d for d in delivered if d.complete and d.event["seq"] <= read_up_to]
    got = [d.event["seq"] for d in complete]
    missing = sorted(set(log) - set(got))
    unknown = sorted(set(got) - set(log))
    backwards = [(a, b) for a, b in itertools.pairwise(got) if b < a]
    unsigned = [d.event["seq"] for d in complete if not d.signed_with(SECRET)]
    altered = [
        d.event["seq"]
        for d in complete
        if d.seq_header != d.event["seq"] or _differs(d.event, log.get(d.event["seq"]))
    ]
    failures = []
    for what, bad in (
        ("missing", missing),
        ("unknown", unknown),
        ("out of order", backwards),
        ("badly signed", unsigned),
        ("different from the log", altered),
    ):
        if bad:
            failures.append(f"{len(bad)} deliveries {what}: {bad[:10]}")
    numbers = {
        "log_events": len(log),
        "first_seq": min(log, default=None),
        "last_seq": max(log, default=None),
        "received": len(got),
        "distinct": len(set(got)),
        "repeats": len(got) - len(set(got)),
        "cut_requests": len(delivered) - len(complete),
        "by_type": dict(Counter(e["type"] for e in log.values())),
    }
    return Result(numbers, failures)


def _differs(got: Mapping[str, Any], logged: Mapping[str, Any] | None) -> bool:
    if logged is None:
        return False  # reported as unknown
    return (got["type"], got["data"]) != (logged["type"], logged["data"])


def resources(samples: Sequence[Sample], end_s: float, window_s: float) -> Result:
    """RSS and open fds flat: the last window's average against the first window's."""
    first = [s for s in samples if s.t_s <= window_s]
    last = [s for s in samples if end_s - window_s <= s.t_s <= end_s]
    if not first or not last:
        return Result({}, ["not enough resource samples"])
    rss0, rss1 = _avg(first, "rss_mib"), _avg(last, "rss_mib")
    fds0, fds1 = _avg(first, "fds"), _avg(last, "fds")
    failures = []
    if rss1 > rss0 * RSS_GROWTH_MAX:
        failures.append(f"RSS grew from {rss0:.0f} to {rss1:.0f} MiB")
    if fds1 > fds0 * FDS_GROWTH_MAX + FDS_SLACK:
        failures.append(f"open fds grew from {fds0:.0f} to {fds1:.0f}")
    numbers = {
        "window_s": window_s,
        "samples": len(samples),
        "rss_mib": {"first": rss0, "last": rss1, "max": max(s.rss_mib for s in samples)},
        "fds": {"first": fds0, "last": fds1, "max": max(s.fds for s in samples)},
        "threads": {"first": _avg(first, "threads"), "last": _avg(last, "threads")},
        "load1": {"avg": _avg(samples, "load1"), "max": max(s.load1 for s in samples)},
    }
    return Result(numbers, failures)


def _avg(samples: Sequence[Sample], attr: str) -> float:
    return round(statistics.fmean(float(getattr(s, attr)) for s in samples), 1)


def by_minute(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """One row per minute: the service pid, average RSS and fds, max load."""
    rows = []
    for minute, group in itertools.groupby(samples, key=lambda s: int(s.t_s // 60)):
        g = list(group)
        rows.append(
            {
                "minute": minute,
                "pid": g[-1].pid,
                "rss_mib": _avg(g, "rss_mib"),
                "fds": _avg(g, "fds"),
                "threads": _avg(g, "threads"),
                "load1": round(max(s.load1 for s in g), 2),
            }
        )
    return rows


def chart(rows: Sequence[Mapping[str, Any]], key: str, width: int = 50) -> str:
    """A text bar chart of one column by minute."""
    top = max((float(r[key]) for r in rows), default=1.0) or 1.0
    return "\n".join(
        f"{r['minute']:3d} {float(r[key]):8.1f} {'#' * round(width * float(r[key]) / top)}"
        for r in rows
    )
