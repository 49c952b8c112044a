"""Prometheus collectors for what this process runs: cameras and the clip spool."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest.camera import CameraState, CameraStatus
from ingest.gb28181.endpoint import EndpointStats
from ingest.gb28181.media import MediaStats


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


class SpoolCollector(Collector):
    """How many incidents' evidence wait in the local spool for the object store."""

    def __init__(self, depth: Callable[[], int]) -> None:
        self._depth = depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("xueliang_spool_clips", "Clips waiting in the local spool for upload")
        g.add_metric([], self._depth())
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
