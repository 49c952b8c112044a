"""Uploads spooled evidence to the object store, verifies it, and records it.

Never drops a clip: an unreachable store or database leaves the entry in the spool and the
archiver retries with capped exponential backoff; a restart drains the spool again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from pathlib import Path

from config.errors import XueliangError
from runtime.services import Services
from storage.errors import StorageError, StorageUnavailable
from storage.incidents import ArchivedClip, mark_archived, mark_clip_failed
from storage.spool import ClipSpool, SpoolEntry

log = logging.getLogger(__name__)


class ClipCorrupted(StorageError):
    """The spooled file no longer has the SHA-256 recorded when it was written."""


class Archiver:
    """One per process: drains the spool into the object store."""

    def __init__(self, services: Services, spool: ClipSpool) -> None:
        self.services = services
        self.spool = spool
        self._wake = asyncio.Event()
        cfg = services.settings.archive
        self._initial, self._max = cfg.retry_initial_s, cfg.retry_max_s
        self._delay = self._initial

    async def submit(self, entry: SpoolEntry) -> None:
        """Record a new entry in the spool (durably, in a thread: it fsyncs) and wake the
        uploader."""
        await asyncio.to_thread(self.spool.add, entry)
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            failed = await self.drain()
            if failed:
                delay = self._delay * random.uniform(0.8, 1.2)
                self._delay = min(self._delay * 2, self._max)
                log.warning("archive: %d clip(s) waiting; retrying in %.0f s", failed, delay)
            else:
                self._delay = self._initial
                delay = 30.0  # a periodic sweep also picks up entries another path added
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: it can swallow a cancel
                    await self._wake.wait()

    async def drain(self) -> int:
        """Archive every spooled entry once; return how many are still waiting."""
        waiting = 0
        entries = await asyncio.to_thread(self.spool.entries)
        for n, entry in enumerate(entries):
            try:
                await asyncio.to_thread(self._archive, entry)
            except ClipCorrupted as err:
                log.error("incident %s: %s", entry.incident_id, err)
                await asyncio.to_thread(self._give_up, entry, str(err))
            except StorageUnavailable as err:
                # The store is down: the rest would fail the same way, each after its own
                # timeout, and fill the log with one line per clip per retry.
                left = len(entries) - n
                log.warning("archive: object store unavailable (%s); %d clip(s) kept", err, left)
                return waiting + left
            except XueliangError as err:
                waiting += 1
                log.warning("incident %s: clip not archived yet: %s", entry.incident_id, err)
        return waiting

    def _archive(self, entry: SpoolEntry) -> None:
        store = self.services.objects
        meta = {"incident": entry.incident_id, "camera": entry.camera_id}
        info = store.put_file(entry.clip_key, Path(entry.clip_path), "video/mp4", meta)
        if info.sha256 != entry.clip_sha256:
            raise ClipCorrupted(
                f"spooled clip {entry.clip_path} has SHA-256 {info.sha256}, "
                f"expected {entry.clip_sha256}"
            )
        if entry.snapshot_path and entry.snapshot_key:
            store.put_file(entry.snapshot_key, Path(entry.snapshot_path), "image/jpeg", meta)
        # Read back from the store: only a verified object may be called archived.
        if not store.verify(entry.clip_key, entry.clip_sha256, entry.clip_size):
            raise StorageError(f"object {entry.clip_key} did not verify after upload")
        clip = ArchivedClip(
            clip_key=entry.clip_key,
            sha256=entry.clip_sha256,
            size=entry.clip_size,
            duration_s=entry.duration_s,
            snapshot_key=entry.snapshot_key,
            snapshot_sha256=entry.snapshot_sha256,
        )
        with self.services.tx() as session:
            mark_archived(session, entry.incident_id, clip)
        self.spool.remove(entry)
        log.info("incident %s: clip archived as %s", entry.incident_id, entry.clip_key)

    def _give_up(self, entry: SpoolEntry, reason: str) -> None:
        with self.services.tx() as session:
            mark_clip_failed(session, entry.incident_id, reason)
        kept = self.spool.quarantine(entry)
        log.error("incident %s: spool entry kept for inspection at %s", entry.incident_id, kept)
