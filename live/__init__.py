"""Live view output: WebRTC (WHEP-style) sessions that pass a camera's H.264 from its
pre-roll ring to browsers, one upstream per camera shared by every viewer.

May import: ``config``, ``ingest`` (the packet ring it reads from), ``storage`` (the
encoded-packet types of the clip muxer).
"""
