"""Shared fixtures. Peer fixtures (RTSP server, SeaweedFS) live in tests/peers/."""

pytest_plugins = ["tests.peers.rtsp", "tests.peers.seaweedfs"]
