"""Prometheus collectors for what this process runs (cameras, the clip spool, GB/T 28181)
and, read from the database at scrape time, the installation's cases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from analytics.quality import Kind, QualityResult
from ingest.camera import CameraState, CameraStatus
from ingest.gb28181.endpoint import EndpointStats
from ingest.gb28181.media import MediaStats
from storage.case_flow import CaseCounts
from storage.spool import ClipSpool


class CameraCollector(Collector):
    """Per-camera gauges and counters, read from the ingest engine at scrape time."""

    def __init__(self, statuses: Callable[[], Mapping[str, CameraStatus]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily(
            "xueliang_camera_up", "1 when the camera is online", labels=["camera"]
        )
        fps = GaugeMetricFamily(
            "xueliang_camera_fps", "Measured frames per second", labels=["camera"]
        )
        age = GaugeMetricFamily(
            "xueliang_camera_last_frame_age_seconds",
            "Seconds since the last frame",
            labels=["camera"],
        )
        reconnects = CounterMetricFamily(
            "xueliang_camera_reconnects", "Times the camera came back online", labels=["camera"]
        )
        dropped = CounterMetricFamily(
            "xueliang_camera_frames_dropped",
            "Analysis frames dropped because the analyser was behind",
            labels=["camera"],
        )
        now = time.time()
        for camera_id, st in self._statuses().items():
            up.add_metric([camera_id], 1.0 if st.state == CameraState.ONLINE else 0.0)
            if st.fps is not None:
                fps.add_metric([camera_id], st.fps)
            if st.last_frame_at is not None:
                age.add_metric([camera_id], max(0.0, now - st.last_frame_at.timestamp()))
            reconnects.add_metric([camera_id], st.reconnects)
            dropped.add_metric([camera_id], st.frames_dropped)
        yield from (up, fps, age, reconnects, dropped)


class QualityCollector(Collector):
    """Per camera and diagnosis: the latest quality score and whether it is raised
    (``analytics.quality``), read from the running analyses at scrape time."""

    def __init__(self, results: Callable[[], Mapping[str, QualityResult]]) -> None:
        self._results = results

    def collect(self) -> Iterator[GaugeMetricFamily]:
        degraded = GaugeMetricFamily(
            "xueliang_camera_degraded",
            "1 when the camera's picture has a quality problem raised",
            labels=["camera"],
        )
        score = GaugeMetricFamily(
            "xueliang_camera_quality_score",
            "Latest score of each picture-quality diagnosis (higher is worse)",
            labels=["camera", "kind"],
        )
        problem = GaugeMetricFamily(
            "xueliang_camera_quality_problem",
            "1 while the diagnosis is raised on the camera",
            labels=["camera", "kind"],
        )
        for camera_id, result in self._results().items():
            degraded.add_metric([camera_id], 1.0 if result.state == "degraded" else 0.0)
            raised = {p.kind for p in result.problems}
            for kind, value in result.scores.items():
                score.add_metric([camera_id, kind.value], value)
            for kind in Kind:
                problem.add_metric([camera_id, kind.value], 1.0 if kind in raised else 0.0)
        yield from (degraded, score, problem)


class SpoolCollector(Collector):
    """The local spool: evidence waiting for the object store, clips being journaled,
    and the disk they take (a full disk stops crash-safe recording: alert on free bytes)."""

    def __init__(self, spool: ClipSpool) -> None:
        self._spool = spool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        usage = self._spool.usage()
        for name, text, value in (
            ("clips", "Clips waiting in the local spool for upload", self._spool.depth()),
            ("open_clips", "Clips being journaled to the spool as they record", usage.open_clips),
            ("bytes", "Bytes of every file in the local spool", usage.bytes),
            ("free_bytes", "Bytes free on the spool's file system", usage.free_bytes),
        ):
            g = GaugeMetricFamily(f"xueliang_spool_{name}", text)
            g.add_metric([], value)
            yield g


class Gb28181Collector(Collector):
    """The GB/T 28181 endpoint's and media's counters (malformed SIP, floods, wrong
    passwords, RTP of a foreign SSRC…), read at scrape time."""

    def __init__(self, sip: EndpointStats, media: MediaStats) -> None:
        self._sip, self._media = sip, media

    def collect(self) -> Iterator[CounterMetricFamily]:
        for prefix, stats in (("sip", self._sip), ("rtp", self._media)):
            for item in fields(stats):
                yield CounterMetricFamily(
                    f"xueliang_gb28181_{prefix}_{item.name}",
                    f"GB/T 28181 {prefix.upper()}: {item.name.replace('_', ' ')}",
                    value=getattr(stats, item.name),
                )


class CaseCollector(Collector):
    """Cases per event class and state, overdue ones, and transitions made, from the
    database (the same on every API node: scrape one, or take the max)."""

    def __init__(self, counts: Callable[[], CaseCounts]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        counts = self._counts()
        labels = ["class_code", "state"]
        cases = GaugeMetricFamily(
            "xueliang_cases", "Cases per event class and state", labels=labels
        )
        overdue = GaugeMetricFamily(
            "xueliang_cases_overdue", "Cases past the deadline of their state", labels=labels
        )
        moves = CounterMetricFamily(
            "xueliang_case_transitions",
            "Steps made per event class and state entered",
            labels=labels,
        )
        for family, values in (
            (cases, counts.cases),
            (overdue, counts.overdue),
            (moves, counts.transitions),
        ):
            for (code, state), n in sorted(values.items()):
                family.add_metric([code, state], n)
        yield from (cases, overdue, moves)
