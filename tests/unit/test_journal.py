"""The clip journal (issue #21): packets on disk as they are recorded, read back after a
crash up to the last complete record, and a clip muxed from it identical to one muxed from
memory."""

from __future__ import annotations

import time
from pathlib import Path

import av
import pytest

from ingest.recorder import ClipJob, ClipRecorder, RecorderConfig
from ingest.ring import PacketRing
from storage.clips import ClipError, CodecParams, EncodedPacket, write_mp4
from storage.journal import JOURNAL_SUFFIX, ClipJournal, JournalHeader, read_journal
from tests.unit.synthetic_h264 import decode_errors, decoded_indices, encode_video, feed, sha256_of

T0 = 1_700_000_000.0


def packets_of(path: Path) -> tuple[CodecParams, list[EncodedPacket]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        params = CodecParams.from_stream(stream)
        packets = [
            EncodedPacket(bytes(p), p.pts, p.dts, p.duration, p.is_keyframe, T0 + i / 25, p.size)
            for i, p in enumerate(q for q in container.demux(stream) if q.size)
        ]
    return params, packets


def journal_of(tmp_path: Path, fmt: str) -> tuple[Path, CodecParams, list[EncodedPacket]]:
    source = encode_video(tmp_path / f"src.{fmt}", 60, gop=25, fmt=fmt)
    params, packets = packets_of(source)
    path = tmp_path / f"clip.mp4{JOURNAL_SUFFIX}"
    header = JournalHeader("cam-1", "inc_1", "clip.mp4", T0 - 2, params)
    journal = ClipJournal(path, header, packets[0])
    for i in range(0, len(packets), 7):  # in batches, as the writing thread appends
        journal.append(packets[i : i + 7])
    journal.close()
    return path, params, packets


# MPEG-TS carries Annex B with Annex B extradata (RTSP's form); MP4 carries avcC.
@pytest.mark.parametrize("fmt", ["mpegts", "mp4"])
def test_a_journal_reads_back_every_packet_and_muxes_the_same_clip(
    tmp_path: Path, fmt: str
) -> None:
    path, params, packets = journal_of(tmp_path, fmt)
    journal = read_journal(path)
    assert journal.torn_bytes == 0
    assert (journal.header.camera_id, journal.header.incident_id) == ("cam-1", "inc_1")
    assert journal.header.params == params  # codec, size, extradata, time base
    assert journal.header.params.average_rate == params.average_rate
    assert [(p.pts, p.dts, p.is_keyframe, p.wallclock) for p in journal.packets] == [
        (p.pts, p.dts, p.is_keyframe, p.wallclock) for p in packets
    ]
    assert [bytes(p.payload) for p in journal.packets] == [bytes(p.payload) for p in packets]
    from_memory = write_mp4(tmp_path / "memory.mp4", params, packets)
    from_journal = write_mp4(tmp_path / "journal.mp4", journal.header.params, journal.packets)
    assert decode_errors(from_journal.path) == ""
    assert decoded_indices(from_journal.path) == decoded_indices(from_memory.path)


def test_a_torn_last_record_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    path, _params, packets = journal_of(tmp_path, "mpegts")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - packets[-1].size // 2])  # the crash cut the write
    journal = read_journal(path)
    assert len(journal.packets) == len(packets) - 1
    assert journal.torn_bytes > 0
    clip = write_mp4(tmp_path / "torn.mp4", journal.header.params, journal.packets)
    assert decoded_indices(clip.path) == list(range(len(packets) - 1))


def test_a_corrupted_record_ends_the_journal_there(tmp_path: Path) -> None:
    path, _params, packets = journal_of(tmp_path, "mpegts")
    data = bytearray(path.read_bytes())
    data[-(packets[-1].size + packets[-2].size)] ^= 0xFF  # inside the last-but-one payload
    path.write_bytes(bytes(data))
    assert len(read_journal(path).packets) == len(packets) - 2


@pytest.mark.parametrize(
    "content", [b"", b"not a journal", b"XLJ1\xff\xff\xff\x7f{", b"XLJ1\x05\x00\x00\x00{bad}"]
)
def test_what_is_no_journal_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.journal"
    path.write_bytes(content)
    with pytest.raises(ClipError):
        read_journal(path)


def test_a_recording_clip_keeps_only_metadata_in_memory_and_its_mp4_is_unchanged(
    tmp_path: Path,
) -> None:
    source = encode_video(tmp_path / "src.ts", 150, gop=25, fmt="mpegts")
    results, held = [], []
    for journal in (False, True):
        ring = PacketRing(capacity_s=30.0, camera_id="cam-1")
        spool = tmp_path / f"spool-{journal}"
        # Batches of 0 s: every packet is written as it comes (the default 0.25 s would
        # leave the last few pending until the next batch is due).
        config = RecorderConfig(journal=journal, journal_batch_s=0.0)
        recorder = ClipRecorder(ring, spool, camera_id="cam-1", config=config)
        jobs: list[ClipJob] = []

        def each(
            wallclock: float, recorder: ClipRecorder = recorder, jobs: list[ClipJob] = jobs
        ) -> None:
            if not jobs:
                jobs.append(recorder.start(wallclock, 0.0, name="clip.mp4", incident_id="inc_1"))

        feed(source, ring, T0, each=each, close=False)
        deadline = time.monotonic() + 5
        while jobs[0].held_bytes and journal and time.monotonic() < deadline:
            time.sleep(0.01)  # the writing thread journals, then drops the payloads
        held.append(jobs[0].held_bytes)
        if journal:  # what a crash now would leave: every packet so far, in the journal
            assert len(read_journal(spool / f"clip.mp4{JOURNAL_SUFFIX}").packets) == 150
        jobs[0].finish(T0 + 5, 0.0)  # a packet past it arrived: the clip closes now
        results.append(jobs[0].wait(timeout=30))
        recorder.close()
    in_memory, journaled = results
    assert held[0] > 10_000 and held[1] == 0, held  # every payload vs none
    assert journaled.sha256 == in_memory.sha256 == sha256_of(journaled.path)
    assert in_memory.journal is None and journaled.journal is not None
    assert journaled.journal.exists()  # kept until the clip is in the spool's manifest
    journaled.drop_journal()
    assert not journaled.journal.exists()
