"""Clip recording: pre-roll from the ring plus live packets, written to the spool as MP4.

A :class:`ClipRecorder` serves one camera's :class:`~ingest.ring.PacketRing`.
:meth:`ClipRecorder.start` opens a :class:`ClipJob` that starts at the last keyframe at or
before ``start - pre_s`` and follows the live packets; :meth:`ClipJob.finish` sets the end.
The job completes in the reader thread when a packet at or after ``end + post_s`` arrives
(or the stream changes, stalls, or the clip reaches its length cap) and hands the writing
to a worker thread (:func:`storage.clips.write_mp4`); ``await job`` gives the
:class:`ClipResult`. Nothing decodes, and the reader thread never waits on I/O.

Crash safety: while it records, a job journals its packets to the spool on the writing
thread (:mod:`storage.journal`: the pre-roll at once, then the live packets, fsynced about
every second) and keeps only their metadata in memory; the finished clip is muxed from the
journal. A process that dies mid-clip leaves the journal, from which the next start makes
the clip (``runtime/recovery.py``).

Locking: a job's lock may be held while taking the ring's lock (attach, detach), never the
other way round; the ring calls its taps after releasing its own lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import av

from ingest.ring import PacketRing
from storage.clips import ClipError, CodecParams, EncodedPacket, write_mp4
from storage.journal import JOURNAL_SUFFIX, ClipJournal, JournalHeader, read_journal

__all__ = ["ClipJob", "ClipRecorder", "ClipResult", "EndReason", "RecorderConfig"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class EndReason(StrEnum):
    """Why a clip ended. Every reason but ``COMPLETE`` marks the clip truncated."""

    COMPLETE = "complete"  # a packet at or after end + post_s arrived
    STREAM_CHANGED = "stream_changed"  # reconnected with other codec parameters
    STALLED = "stalled"  # no packet for stall_timeout_s (camera gone)
    MAX_LENGTH = "max_length"  # max_clip_s or max_clip_bytes reached
    CANCELLED = "cancelled"  # abort() or the recorder closed


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    """Limits of a camera's clip jobs."""

    max_clip_s: float = 600.0
    max_clip_bytes: int = 512 << 20
    stall_timeout_s: float = 30.0
    poll_interval_s: float = 1.0
    #: Journal each clip's packets to the spool as they come (crash-safe clips); fsync the
    #: journal at most this often (the most a crash can lose, besides the write in flight).
    journal: bool = True
    journal_sync_s: float = 1.0
    #: Packets reach the journal in batches this long (what a SIGKILL may lose at most).
    journal_batch_s: float = 0.25

    def __post_init__(self) -> None:
        for name in ("max_clip_s", "stall_timeout_s", "poll_interval_s", "journal_sync_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.journal_batch_s < 0:
            raise ValueError("journal_batch_s must be >= 0")
        if self.max_clip_bytes <= 0:
            raise ValueError("max_clip_bytes must be > 0")


@dataclass(frozen=True, slots=True)
class ClipResult:
    """A clip written to the spool.

    ``start_wallclock``/``end_wallclock`` are the arrival times of its first and last
    packet; ``requested_start`` is ``start - pre_s`` and ``requested_end`` ``end + post_s``
    (``None`` when :meth:`ClipJob.finish` was never called). ``first_pts`` is the first
    packet's pts in the camera stream's time base (before rebasing to 0). ``preroll_short``
    says the ring did not reach back to ``requested_start``; ``truncated`` that the clip
    ended before ``requested_end`` (``end_reason`` says why).
    """

    camera_id: str
    path: Path
    sha256: str
    size: int
    duration_s: float
    start_wallclock: float
    end_wallclock: float
    first_pts: int | None
    frames: int
    truncated: bool
    end_reason: EndReason
    preroll_short: bool
    requested_start: float
    requested_end: float | None
    #: The journal of an incident's clip, kept until the clip is in the spool's manifest
    #: (then the caller removes it with :meth:`ClipResult.drop_journal`); ``None`` when
    #: there is none to keep.
    journal: Path | None = None

    def drop_journal(self) -> None:
        """The clip is spooled: its journal is no longer needed to recover it."""
        if self.journal is not None:
            self.journal.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class _WriteOrder:
    """What a closed job hands to the writer."""

    params: CodecParams | None
    packets: tuple[EncodedPacket, ...]
    reason: EndReason
    requested_end: float | None


class ClipJob:
    """One clip being recorded; a :class:`~ingest.ring.PacketTap` of the ring.

    Created by :meth:`ClipRecorder.start`. Await it (or :meth:`result`) for the
    :class:`ClipResult`; it raises :class:`~storage.clips.ClipError` when nothing could
    be written.
    """

    def __init__(
        self,
        *,
        camera_id: str,
        path: Path,
        requested_start: float,
        config: RecorderConfig,
        clock: Clock,
        on_closed: Callable[[ClipJob, _WriteOrder], None],
        incident_id: str | None = None,
        submit: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.path = path
        self.requested_start = requested_start
        self.incident_id = incident_id
        self._config = config
        self._clock = clock
        self._on_closed = on_closed
        self._lock = threading.Lock()
        # The journal (see storage/journal.py): packets added but not yet written to it,
        # how many of _packets it holds, and whether a drain is queued on ``submit``.
        self.journal_path = path.with_name(path.name + JOURNAL_SUFFIX) if submit else None
        self._submit = submit
        self._journal: ClipJournal | None = None
        self._journal_broken = False
        self._pending: list[EncodedPacket] = []
        self._journaled = 0
        self._draining = False
        self._drain_lock = threading.Lock()
        self._packets: list[EncodedPacket] = []
        self._bytes = 0
        self._params: CodecParams | None = None
        self._preroll_short = True
        self._cutoff: float | None = None
        # Set once the cutoff packet arrived in a stream with B-frames: the pts every
        # following packet must stay below to still belong to the clip (see _drain_locked).
        self._drain_below: int | None = None
        self._reordered = False  # a packet had pts != dts: the stream has B-frames
        self._last_seen = clock()
        self._reason: EndReason | None = None
        self.future: concurrent.futures.Future[ClipResult] = concurrent.futures.Future()

    # -- control (any thread) ---------------------------------------------------------

    def finish(self, end_wallclock: float, post_s: float) -> None:
        """The incident ended at ``end_wallclock``: record until ``post_s`` after it."""
        if post_s < 0:
            raise ValueError("post_s must be >= 0")
        with self._lock:
            if self._reason is not None or self._drain_below is not None:
                return  # already past the end (only trailing B-frames are awaited)
            self._cutoff = end_wallclock + post_s
            order = self._close_if_covered_locked()
        if order is not None:
            self._on_closed(self, order)

    def abort(self, reason: EndReason = EndReason.CANCELLED) -> None:
        """End now and write what was recorded (truncated)."""
        with self._lock:
            order = self._close_locked(reason) if self._reason is None else None
        if order is not None:
            self._on_closed(self, order)

    def expire_if_stalled(self, now: float | None = None) -> bool:
        """End the job (``STALLED``) when no packet came for ``stall_timeout_s``."""
        now = self._clock() if now is None else now
        with self._lock:
            if self._reason is not None or now - self._last_seen < self._config.stall_timeout_s:
                return False
            order = self._close_locked(EndReason.STALLED)
        log.warning(
            "camera %s: clip %s got no packets for %.0f s, closing",
            self.camera_id,
            self.path.name,
            now - self._last_seen,
        )
        self._on_closed(self, order)
        return True

    @property
    def held_bytes(self) -> int:
        """Bytes of packet payloads this job keeps in memory (journaled ones are dropped;
        pre-roll packets are shared with the ring)."""
        with self._lock:
            return sum(p.size for p in self._packets if p.payload != b"")

    @property
    def end_reason(self) -> EndReason | None:
        """Why recording stopped; ``None`` while still recording."""
        with self._lock:
            return self._reason

    def done(self) -> bool:
        """True when the file is written (or writing failed)."""
        return self.future.done()

    def wait(self, timeout: float | None = None) -> ClipResult:
        """Block until written (for threads and benchmarks; the event loop awaits)."""
        return self.future.result(timeout)

    async def result(self) -> ClipResult:
        """Wait for the written clip; closes the job as stalled when packets stop coming."""
        waiter = asyncio.wrap_future(self.future)
        while True:
            try:
                async with asyncio.timeout(self._config.poll_interval_s):  # see runtime/cameras.py
                    return await asyncio.shield(waiter)
            except TimeoutError:
                self.expire_if_stalled()

    def __await__(self) -> Generator[object, None, ClipResult]:
        return self.result().__await__()

    # -- PacketTap (reader thread) ----------------------------------------------------

    def offer(self, packet: EncodedPacket) -> None:
        """A live packet from the ring."""
        with self._lock:
            if self._reason is not None:
                return
            if self._drain_below is not None:
                order = self._drain_locked(packet)
            elif self._add_locked(packet):
                self._last_seen = packet.wallclock
                order = self._close_if_covered_locked() or self._close_if_too_long_locked(packet)
            else:
                order = None
        if order is not None:
            self._on_closed(self, order)

    def on_stream_change(self, params: CodecParams | None, spliceable: bool) -> None:
        """A new segment: continue across it, or end at the disconnect when it differs."""
        with self._lock:
            if self._reason is not None or spliceable:
                return
            if not self._packets:
                self._params = params  # nothing recorded yet: simply follow the new stream
                return
            order = self._close_locked(EndReason.STREAM_CHANGED)
        self._on_closed(self, order)

    def on_disconnect(self) -> None:
        """Keep waiting: a reconnect with the same parameters continues the clip."""

    # -- internals --------------------------------------------------------------------

    def _attach(self, ring: PacketRing) -> None:
        """Take the ring's pre-roll and follow it; the lock keeps live packets after it."""
        with self._lock:
            snapshot = ring.attach(self, self.requested_start)
            self._params = snapshot.params
            self._preroll_short = not snapshot.reaches_back
            for packet in snapshot.packets:
                self._add_locked(packet)
            if snapshot.packets:  # a stall counts from the newest packet, not from start()
                self._last_seen = max(self._last_seen, snapshot.packets[-1].wallclock)

    def _add_locked(self, packet: EncodedPacket) -> bool:
        if not self._packets and not packet.is_keyframe:
            return False  # a clip must start at a keyframe to decode from its first frame
        self._append_locked(packet)
        self._bytes += packet.size
        if packet.pts != packet.dts and packet.pts is not None and packet.dts is not None:
            self._reordered = True
        return True

    def _append_locked(self, packet: EncodedPacket) -> None:
        """Keep the packet, and queue it for the journal."""
        self._packets.append(packet)
        if self._submit is None or self._journal_broken:
            return
        self._pending.append(packet)
        # The first packets (the pre-roll) go at once; then batches of journal_batch_s,
        # so the writing thread wakes a few times a second, not once per packet.
        due = self._journal is None or (
            packet.wallclock - self._pending[0].wallclock >= self._config.journal_batch_s
        )
        if due and not self._draining:
            self._draining = True
            self._submit(self._drain)

    # -- journal (the recorder's writing thread) ---------------------------------------

    def _drain(self) -> None:
        """Append the pending packets to the journal; then, while still recording, drop
        their payloads from memory (the journal has them: a long clip no longer sits in
        RAM). A journal that cannot be written is given up with one error: the clip is
        then kept in memory and written at its end, as without a journal."""
        with self._drain_lock:
            with self._lock:
                batch, self._pending, self._draining = self._pending, [], False
                start, params = self._journaled, self._params
            if not batch or self._journal_broken or self.journal_path is None:
                return
            try:
                if self._journal is None:
                    if params is None:
                        raise ClipError("no codec parameters yet")
                    header = JournalHeader(
                        self.camera_id,
                        self.incident_id,
                        self.path.name,
                        self.requested_start,
                        params,
                    )
                    self._journal = ClipJournal(
                        self.journal_path, header, batch[0], self._config.journal_sync_s
                    )
                self._journal.append(batch)
            except (OSError, ClipError, av.FFmpegError) as err:
                self._journal_broken = True
                log.error(
                    "camera %s: clip %s cannot be journaled (%s); it is kept in memory until "
                    "it ends, and a crash before then loses it",
                    self.camera_id,
                    self.path.name,
                    err,
                )
                return
            with self._lock:
                self._journaled = start + len(batch)
                if self._reason is None:
                    for k in range(start, min(self._journaled, len(self._packets))):
                        self._packets[k] = replace(self._packets[k], payload=b"")

    def _with_payloads(self, packets: tuple[EncodedPacket, ...]) -> tuple[EncodedPacket, ...]:
        """The closed clip's packets, the payloads dropped while recording read back from
        the journal (record ``i`` is packet ``i``)."""
        self._drain()  # anything still pending
        if self._journal is not None:
            self._journal.close()
        if all(p.payload or not p.size for p in packets):
            return packets
        assert self.journal_path is not None  # payloads are dropped only once journaled
        records = read_journal(self.journal_path).packets
        filled = []
        for i, packet in enumerate(packets):
            if packet.size and not packet.payload:
                if i >= len(records) or records[i].wallclock != packet.wallclock:
                    raise ClipError(f"clip {self.path.name}: its journal lost packet {i}")
                packet = records[i]
            filled.append(packet)
        return tuple(filled)

    def discard_journal(self) -> None:
        """Remove the journal (the clip failed for good, nothing to recover)."""
        if self._journal is not None:
            self._journal.close()
        if self.journal_path is not None:
            self.journal_path.unlink(missing_ok=True)

    def _close_if_covered_locked(self) -> _WriteOrder | None:
        cutoff = self._cutoff
        if cutoff is None or not self._packets or self._packets[-1].wallclock < cutoff:
            return None
        # Keep up to the first packet at or after the cutoff (finish() may come late) ...
        last = next(i for i, p in enumerate(self._packets) if p.wallclock >= cutoff)
        if self._reordered:
            # ... plus, with B-frames, the packets after it that are shown before it: a
            # P-frame arrives ahead of the B-frames displayed before it, and without them
            # the clip would skip frames just before its end.
            self._drain_below = _max_pts_since_discontinuity(self._packets[: last + 1])
            drained = self._drain_end(last)
            if drained is None:
                return None  # wait for the first packet shown after the clip's end
            last = drained
        del self._packets[last + 1 :]
        return self._close_locked(EndReason.COMPLETE)

    def _drain_end(self, last: int) -> int | None:
        """Index of the last packet shown before :attr:`_drain_below`, None if unknown yet."""
        for i in range(last + 1, len(self._packets)):
            if not self._belongs_before_end(self._packets[i]):
                return i - 1
        return None

    def _belongs_before_end(self, packet: EncodedPacket) -> bool:
        below = self._drain_below
        return (
            below is not None
            and packet.pts is not None
            and packet.pts < below
            and not packet.discontinuity
        )

    def _drain_locked(self, packet: EncodedPacket) -> _WriteOrder | None:
        if self._belongs_before_end(packet):
            self._append_locked(packet)
            self._last_seen = packet.wallclock
            return None
        return self._close_locked(EndReason.COMPLETE)

    def _close_if_too_long_locked(self, packet: EncodedPacket) -> _WriteOrder | None:
        span = packet.wallclock - self._packets[0].wallclock
        if span >= self._config.max_clip_s or self._bytes >= self._config.max_clip_bytes:
            return self._close_locked(EndReason.MAX_LENGTH)
        return None

    def _close_locked(self, reason: EndReason) -> _WriteOrder:
        if self._drain_below is not None:
            reason = EndReason.COMPLETE  # the end was reached; only trailing B-frames wait
        self._reason = reason
        order = _WriteOrder(
            params=self._params,
            packets=tuple(self._packets),
            reason=reason,
            requested_end=self._cutoff,
        )
        self._packets = []  # the writer owns them now
        return order

    def _build_result(self, order: _WriteOrder) -> ClipResult:
        """Write ``order`` to :attr:`path` (worker thread) and describe the file."""
        if order.params is None or not order.packets:
            raise ClipError(
                f"camera {self.camera_id}: clip {self.path.name}: no video packets recorded"
            )
        info = write_mp4(self.path, order.params, self._with_payloads(order.packets))
        keep = self._journal is not None and self.incident_id is not None
        if not keep:  # no incident to recover it for: the MP4 is all there is to keep
            self.discard_journal()
        return ClipResult(
            camera_id=self.camera_id,
            path=info.path,
            sha256=info.sha256,
            size=info.size,
            duration_s=info.duration_s,
            start_wallclock=info.first_wallclock,
            end_wallclock=info.last_wallclock,
            first_pts=info.first_pts,
            frames=info.frames,
            truncated=order.reason is not EndReason.COMPLETE,
            end_reason=order.reason,
            preroll_short=self._preroll_short,
            requested_start=self.requested_start,
            requested_end=order.requested_end,
            journal=self.journal_path if keep else None,
        )


def _max_pts_since_discontinuity(packets: list[EncodedPacket]) -> int:
    """The highest pts of the packets' last segment (pts of other segments don't compare)."""
    highest = 0
    for packet in reversed(packets):
        if packet.pts is not None:
            highest = max(highest, packet.pts)
        if packet.discontinuity:
            break
    return highest


class ClipRecorder:
    """Records clips of one camera from its ring into ``spool_dir``.

    Writing happens on ``executor`` (by default a private single worker thread, so a
    camera's clips are written one at a time off the reader thread and the event loop).
    Call :meth:`close` at shutdown: running jobs are written as they are (truncated).
    """

    def __init__(
        self,
        ring: PacketRing,
        spool_dir: Path,
        *,
        camera_id: str = "-",
        config: RecorderConfig | None = None,
        clock: Clock = time.time,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.ring = ring
        self.spool_dir = spool_dir
        self.camera_id = camera_id
        self.config = config or RecorderConfig()
        self._clock = clock
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"clips-{camera_id}"
        )
        self._lock = threading.Lock()
        self._jobs: set[ClipJob] = set()
        self._seq = itertools.count(1)
        self._closed = False
        spool_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        start_wallclock: float,
        pre_s: float,
        *,
        name: str | None = None,
        incident_id: str | None = None,
    ) -> ClipJob:
        """Start a clip at the last keyframe at or before ``start_wallclock - pre_s``.

        ``name`` is the file name in the spool (default: camera, UTC time, sequence);
        ``incident_id`` goes into the clip's journal, for recovery after a crash.
        """
        if pre_s < 0:
            raise ValueError("pre_s must be >= 0")
        requested = start_wallclock - pre_s
        job = ClipJob(
            camera_id=self.camera_id,
            path=self.spool_dir / (name or self._default_name(start_wallclock)),
            requested_start=requested,
            config=self.config,
            clock=self._clock,
            on_closed=self._on_job_closed,
            incident_id=incident_id,
            submit=self._submit if self.config.journal else None,
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("ClipRecorder is closed")
            self._jobs.add(job)
        job._attach(self.ring)
        log.info("camera %s: clip %s started from %.3f", self.camera_id, job.path.name, requested)
        return job

    @property
    def jobs(self) -> tuple[ClipJob, ...]:
        """The jobs still recording."""
        with self._lock:
            return tuple(self._jobs)

    def expire_stalled(self, now: float | None = None) -> int:
        """Close the jobs that received no packet for ``stall_timeout_s``; how many."""
        return sum(job.expire_if_stalled(now) for job in self.jobs)

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting jobs, write the running ones as they are, stop the worker."""
        with self._lock:
            self._closed = True
        for job in self.jobs:
            job.abort(EndReason.CANCELLED)
        if self._owns_executor:
            self._executor.shutdown(wait=wait)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop while the last clips are written."""
        await asyncio.to_thread(self.close)

    def _default_name(self, start_wallclock: float) -> str:
        stamp = datetime.fromtimestamp(start_wallclock, UTC).strftime("%Y%m%dT%H%M%S")
        safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", self.camera_id)
        # The random part keeps names unique across restarts of the process: the spool may
        # still hold a clip from before that has not been uploaded yet.
        return f"{safe_id}-{stamp}-{next(self._seq):04d}-{uuid.uuid4().hex[:6]}.mp4"

    def _submit(self, work: Callable[[], None]) -> None:
        """Queue journal writing on the writing thread (dropped once shut down: the job
        then ends from memory, written by :meth:`close`)."""
        with contextlib.suppress(RuntimeError):
            self._executor.submit(work)

    def _on_job_closed(self, job: ClipJob, order: _WriteOrder) -> None:
        """Runs where the job closed (often the reader thread): hand off, never write."""
        self.ring.detach(job)
        with self._lock:
            self._jobs.discard(job)
        try:
            self._executor.submit(self._write, job, order)
        except RuntimeError as err:  # executor shut down
            job.future.set_exception(ClipError(f"clip {job.path.name} not written: {err}"))

    def _write(self, job: ClipJob, order: _WriteOrder) -> None:
        try:
            result = job._build_result(order)
        except Exception as err:
            log.error("camera %s: clip %s failed: %s", self.camera_id, job.path.name, err)
            job.discard_journal()
            job.future.set_exception(err)
            return
        log.info(
            "camera %s: clip %s written (%.1f s, %d frames, %d bytes, %s)",
            self.camera_id,
            result.path.name,
            result.duration_s,
            result.frames,
            result.size,
            result.end_reason,
        )
        job.future.set_result(result)
