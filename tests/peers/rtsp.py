"""RTSP server fixtures (filled in by the ingest work)."""
