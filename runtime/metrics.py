"""Prometheus collectors for what this process runs: cameras and the clip spool."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest.camera import CameraState, CameraStatus


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
