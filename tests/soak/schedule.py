"""The soak's disruption schedule, scaled to the run's length (pure: times in, steps out).

For the default 30 minutes: the RTSP server is killed every 3 minutes (back after a few
seconds), S3 is stopped for a minute at ~10 and ~20 minutes, the service is SIGKILLed once
at ~16.5 minutes (just after the half, so it does not coincide with an RTSP kill) and
started again, and the webhook receiver flaps all along: in every 2.5-minute cycle it is
down (port closed) for 45 s, then answers 500 for ~22 s, then is up.

On the city stack (``city=True``) a worker is SIGKILLed instead of the service, at the same
time, and started again after the lease; PostgreSQL is restarted at ~25 minutes (away from
the other disruptions).
"""

from __future__ import annotations

from dataclasses import dataclass

RTSP_DOWN_S = 5.0
SERVICE_DOWN_S = 3.0
#: A killed worker stays down longer than the camera lease: its cameras move to the other.
WORKER_DOWN_S = 30.0
S3_OUTAGE_S = 60.0


@dataclass(frozen=True, order=True)
class Step:
    """Do ``action`` at ``at_s`` seconds after the cameras were added."""

    at_s: float
    action: str  # "<peer>.<verb>": rtsp.kill, rtsp.start, s3.stop, s3.start, ...


def schedule(total_s: float, city: bool = False) -> list[Step]:
    """Every disruption of a run lasting ``total_s`` seconds, in time order."""
    steps = _rtsp(total_s) + _s3(total_s) + _receiver(total_s)
    steps += _city(total_s) if city else _service(total_s)
    return sorted(steps)


def _city(total_s: float) -> list[Step]:
    kill = total_s / 2 + total_s / 20
    restart = 0.8 * total_s + total_s / 40
    down = min(WORKER_DOWN_S, total_s / 12)  # a short run: back before the S3 outage
    return [
        Step(kill, "worker.kill"),
        Step(kill + down, "worker.start"),
        Step(restart, "postgres.restart"),
    ]


def _rtsp(total_s: float) -> list[Step]:
    every = total_s / 10
    down = min(RTSP_DOWN_S, every / 4)
    steps = []
    for k in range(1, 10):
        steps += [Step(k * every, "rtsp.kill"), Step(k * every + down, "rtsp.start")]
    return steps


def _s3(total_s: float) -> list[Step]:
    outage = min(S3_OUTAGE_S, total_s / 6)
    steps = []
    for at in (total_s / 3, 2 * total_s / 3):
        steps += [Step(at, "s3.stop"), Step(at + outage, "s3.start")]
    return steps


def _service(total_s: float) -> list[Step]:
    at = total_s / 2 + total_s / 20
    return [Step(at, "service.kill"), Step(at + SERVICE_DOWN_S, "service.start")]


def _receiver(total_s: float) -> list[Step]:
    cycle = total_s / 12
    steps = []
    start = 0.2 * cycle
    while start + cycle <= total_s:
        steps += [
            Step(start, "receiver.down"),
            Step(start + 0.30 * cycle, "receiver.fail"),
            Step(start + 0.45 * cycle, "receiver.up"),
        ]
        start += cycle
    return steps
