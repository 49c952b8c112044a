"""Simulated camera workers: the real lease, state, event and incident code, no video.

``python -m tests.scale.sim --workers N --control FILE --stats DIR`` runs N workers in one
process against ``XUELIANG_DATABASE__URL``. Each worker is a
:class:`runtime.leasing.LeaseKeeper` and a :class:`runtime.camera_state.StateWriter`
(what `runtime/cameras.py` runs) driving one :class:`SimCamera` per camera it holds
instead of an RTSP session: a camera connects, goes online, flaps, stalls and raises motion
incidents on a schedule derived from its id, and obeys the orchestrator's control file
(a district power cut, a worker to kill). Refused unless
``XUELIANG_WORKERS__SIMULATED_CAMERAS`` is set, which a real service refuses to start with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import hashlib
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import load_settings
from ingest.camera import CameraState
from runtime.camera_state import StateChange, StateWriter
from runtime.leasing import LeaseKeeper, WorkerIdentity
from runtime.services import Services
from storage import cameras as repo
from storage.incidents import NewIncident, close_interrupted, create_incident, end_incident
from storage.models import Camera, utcnow

log = logging.getLogger("sim")

TICK_S = 0.25
STATUS_FLUSH_S = 2.0  # as runtime/cameras.py


class SimulationRefused(RuntimeError):
    pass


@dataclass(frozen=True)
class Schedule:
    """What happens to cameras, per camera-hour, derived from each camera's id."""

    motion_per_hour: float = 1.0
    motion_s: float = 20.0
    flapping_share: float = 0.01  # of cameras, offline 20 s every 10 min
    stalls_per_hour: float = 0.05  # others: a stall (offline ~30 s), rarely

    def plan(self, camera_id: str) -> CameraPlan:
        """The camera's own timetable (hashed once: the tick loop only does arithmetic)."""

        def unit(salt: str) -> float:
            digest = hashlib.blake2b(f"{camera_id}/{salt}".encode(), digest_size=8).digest()
            return int.from_bytes(digest, "big") / 2**64

        if unit("flap") < self.flapping_share:
            down = (600.0, 600.0 * unit("fphase"), 20.0, "flapping: no packet for 20 s")
        elif self.stalls_per_hour > 0:
            period = 3600 / self.stalls_per_hour
            down = (period, period * unit("sphase"), 30.0, "stalled: no packet for 20 s")
        else:
            down = None
        motion = None
        if self.motion_per_hour > 0:
            period = 3600 / self.motion_per_hour
            motion = (period, period * unit("motion"), self.motion_s)
        return CameraPlan(down, motion)


@dataclass(frozen=True)
class CameraPlan:
    #: (period, offset, seconds down, reason) of its outages, if any.
    down: tuple[float, float, float, str] | None
    #: (period, offset, seconds) of its motion, if any.
    motion: tuple[float, float, float] | None

    def offline(self, t: float) -> str | None:
        """Why the camera is down at wall time ``t``, or ``None``."""
        if self.down is None:
            return None
        period, offset, length, reason = self.down
        return reason if (t + offset) % period < length else None

    def motion_start(self, t: float) -> float | None:
        """Start time of the motion running at ``t``, or ``None``."""
        if self.motion is None:
            return None
        period, offset, length = self.motion
        phase = (t + offset) % period
        return t - phase if phase < length else None


@dataclass
class Control:
    """The orchestrator's orders, read from a JSON file that it rewrites."""

    path: Path
    cut: set[str] = field(default_factory=set)
    cut_from: float = 0.0
    cut_until: float = 0.0
    kill: set[str] = field(default_factory=set)
    _mtime: float = 0.0

    def reload(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        data = json.loads(self.path.read_text())
        self._mtime = mtime
        cut = data.get("cut") or {}
        self.cut = set(cut.get("cameras", []))
        self.cut_from, self.cut_until = cut.get("from", 0.0), cut.get("until", 0.0)
        self.kill = set(data.get("kill", []))

    def power_cut(self, camera_id: str, t: float) -> bool:
        return self.cut_from <= t < self.cut_until and camera_id in self.cut


@dataclass
class SimCamera:
    camera_id: str
    grid_code: str | None
    connect_at: float
    plan: CameraPlan
    state: CameraState = CameraState.CONNECTING
    incident: tuple[float, str] | None = None  # (motion start, incident id)


class SimWorker:
    def __init__(self, services: Services, name: str, schedule: Schedule, control: Control):
        if not services.settings.workers.simulated_cameras:
            raise SimulationRefused(
                "simulated cameras need XUELIANG_WORKERS__SIMULATED_CAMERAS=true, "
                "a setting for the city simulator only"
            )
        self.services = services
        self.schedule = schedule
        self.control = control
        self.id = name
        identity = WorkerIdentity(name, socket.gethostname(), "worker", None, utcnow())
        lease_s = services.settings.workers.lease_s
        self.leases = LeaseKeeper(services, identity, lease_s, on_taken=self._taken)
        self.states = StateWriter(services, self._status_of)
        self.cameras: dict[str, SimCamera] = {}
        self.incidents = 0
        self.dead = False
        self._pending: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self.states.run()),
            asyncio.create_task(self._flush_loop()),
            asyncio.create_task(self._tick_loop()),
        ]
        try:
            while True:
                if await self.leases.renew():
                    await self._reconcile()
                if self.leases.surplus:
                    await asyncio.to_thread(self.leases.release, sorted(self.leases.surplus))
                await asyncio.sleep(self.leases.next_renewal_s())
        finally:
            for task in tasks:
                task.cancel()
            if not self.dead:  # a clean stop, like CameraRuntime._shutdown
                await self.states.drain()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.leases.release_all)

    def _taken(self, session: Session, camera_ids: list[str]) -> None:
        close_interrupted(session, camera_ids)

    async def _reconcile(self) -> None:
        held = self.leases.held
        for cid in [c for c in self.cameras if c not in held]:
            self.cameras.pop(cid)
        new = sorted(c for c in held if c not in self.cameras)
        if not new:
            return
        grids = await asyncio.to_thread(self._grids, new)
        now = time.time()
        for cid in new:
            # Connecting takes 0.2-1.2 s, as an RTSP open does.
            delay = 0.2 + (hash((cid, self.id)) % 1000) / 1000
            self.cameras[cid] = SimCamera(cid, grids.get(cid), now + delay, self.schedule.plan(cid))
            self.states.put(
                StateChange(cid, CameraState.OFFLINE, CameraState.CONNECTING, None, utcnow())
            )

    def _grids(self, camera_ids: list[str]) -> dict[str, str | None]:
        with self.services.db.session() as session:
            rows = session.execute(
                select(Camera.id, Camera.grid_code).where(Camera.id.in_(camera_ids))
            )
            return {cid: grid for cid, grid in rows}

    def _status_of(
        self, camera_id: str, state: CameraState, error: str | None
    ) -> repo.StatusUpdate:
        online = state == CameraState.ONLINE
        return repo.StatusUpdate(
            state=state.value,
            fps=25.0 if online else None,
            last_frame_at=utcnow() if online else None,
            last_error=error,
            worker_id=self.id,
        )

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_FLUSH_S)
            states = {cid: (c.state, None) for cid, c in self.cameras.items()}
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.states.flush, states)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._tick(time.time())

    def _tick(self, t: float) -> None:
        at = datetime.fromtimestamp(t, UTC)
        starts: list[SimCamera] = []
        ends: list[str] = []
        for cam in self.cameras.values():
            if t < cam.connect_at:
                continue
            cut = self.control.power_cut(cam.camera_id, t)
            reason = "power cut: no route to host" if cut else cam.plan.offline(t)
            want = CameraState.OFFLINE if reason else CameraState.ONLINE
            if want != cam.state:
                self.states.put(StateChange(cam.camera_id, cam.state, want, reason, at))
                cam.state = want
            motion = cam.plan.motion_start(t) if want == CameraState.ONLINE else None
            if cam.incident is not None and cam.incident[0] != motion:
                ends.append(cam.incident[1])
                cam.incident = None
            if motion is not None and cam.incident is None:
                cam.incident = (motion, "")
                starts.append(cam)
        if starts or ends:
            task = asyncio.get_running_loop().create_task(self._incidents(starts, ends, at))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _incidents(self, starts: list[SimCamera], ends: list[str], at: datetime) -> None:
        try:
            ids = await asyncio.to_thread(self._write_incidents, starts, ends, at)
        except Exception:
            log.exception("incidents not written")
            return
        for cam, incident_id in zip(starts, ids, strict=True):
            if cam.incident is not None:
                cam.incident = (cam.incident[0], incident_id)

    def _write_incidents(self, starts: list[SimCamera], ends: list[str], at: datetime) -> list[str]:
        ids = []
        with self.services.tx() as session:
            for cam in starts:
                new = NewIncident(cam.camera_id, cam.grid_code, "motion", at, clip=False)
                ids.append(create_incident(session, new).id)
            for incident_id in ends:
                if incident_id:
                    end_incident(session, incident_id, at, peak_motion=0.1)
        self.incidents += len(starts)
        return ids

    def stats(self) -> dict[str, Any]:
        return {
            "worker": self.id,
            "cameras": len(self.cameras),
            "renewals": self.leases.renewals,
            "state_writes": self.states.written,
            "incidents": self.incidents,
            "dead": self.dead,
        }


async def run_process(args: argparse.Namespace) -> None:
    settings = load_settings()
    services = Services.from_settings(settings)
    control = Control(Path(args.control))
    schedule = Schedule(motion_per_hour=args.motion_per_hour)
    if args.quiet:
        schedule = Schedule(
            motion_per_hour=args.motion_per_hour, flapping_share=0, stalls_per_hour=0
        )
    tag = f"{socket.gethostname()}:{os.getpid()}"
    workers = [
        SimWorker(services, f"sim-{tag}-{i}", schedule, control) for i in range(args.workers)
    ]
    tasks = {asyncio.create_task(w.run(), name=w.id): w for w in workers}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    stats = Path(args.stats) / f"{os.getpid()}.json"

    async def report() -> None:
        while True:
            control.reload()
            for task, worker in list(tasks.items()):
                if worker.id in control.kill and not worker.dead:
                    worker.dead = True  # like SIGKILL: no release, no drain
                    task.cancel()
            await asyncio.sleep(TICK_S)
            if int(time.time() * 4) % 8 == 0:
                stats.write_text(json.dumps([w.stats() for w in workers]))

    reporter = asyncio.create_task(report())
    await stop.wait()
    faulthandler.dump_traceback_later(40)  # a stop that hangs says where
    reporter.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stats.write_text(json.dumps([w.stats() for w in workers]))
    services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--control", required=True)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--motion-per-hour", type=float, default=1.0)
    parser.add_argument("--quiet", action="store_true", help="no flapping, no stalls")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run_process(args))


if __name__ == "__main__":
    main()
