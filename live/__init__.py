"""Live view output: WebRTC (WHEP-style) sessions that pass a camera's H.264 from its
pre-roll ring to browsers, one upstream per camera shared by every viewer.

``webrtc`` holds the sessions, feeds and tracks; ``negotiation`` picks the browser's
offered H.264 payload type a stream is sent as; ``h264`` makes access units Annex-B with
SPS/PPS before every keyframe; ``errors`` says why a live view cannot start.

May import: ``config``, ``ingest`` (the packet ring it reads from), ``storage`` (the
encoded-packet types of the clip muxer).
"""
