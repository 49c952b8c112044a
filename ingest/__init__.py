"""Getting video in: stream sources (RTSP and files through PyAV, GB/T 28181 in
``ingest.gb28181``), the ONVIF client and discovery, the per-camera supervisor (reconnect
with backoff, stall watchdog, health state), the pre-roll packet ring and the clip recorder.

Runs reader threads and asyncio supervisor tasks; knows nothing of HTTP or of the database.
May import: ``config``, ``storage`` (the clip muxer and the spool's file helpers only).
"""
