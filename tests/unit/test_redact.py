"""Credentials never leave the process in a log line or a status."""

from __future__ import annotations

import logging

import pytest

from ingest.redact import RedactingFilter, redact, redact_url, url_secrets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rtsp://admin:s3cret@10.0.0.5:554/Streaming/101",
            "rtsp://admin:***@10.0.0.5:554/Streaming/101",
        ),
        ("rtsps://u:p@cam.example/x", "rtsps://u:***@cam.example/x"),
        ("rtsp://admin:p@ss:w0rd@host/live", "rtsp://admin:***@host/live"),  # unencoded @ and :
        ("rtsp://admin:p%40ss@host/live", "rtsp://admin:***@host/live"),
        ("rtsp://:onlypass@host/", "rtsp://:***@host/"),
        (
            "open 'rtsp://a:b@h/1' and 'rtsp://c:d@h/2'",
            "open 'rtsp://a:***@h/1' and 'rtsp://c:***@h/2'",
        ),
        (
            "http://h/snap.jpg?user=admin&password=abc123&x=1",
            "http://h/snap.jpg?user=admin&password=***&x=1",
        ),
        ("rtsp://h/live?pwd=abc", "rtsp://h/live?pwd=***"),
        # nothing secret: unchanged
        ("rtsp://admin@host/live", "rtsp://admin@host/live"),
        ("rtsp://host:554/live", "rtsp://host:554/live"),
        ("connection refused", "connection refused"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_known_secrets_are_masked_anywhere() -> None:
    secrets = url_secrets("rtsp://admin:hunter22@cam/live")
    assert secrets == ("hunter22",)
    assert redact("FFmpeg said: bad login hunter22 for tcp://cam", secrets) == (
        "FFmpeg said: bad login *** for tcp://cam"
    )


def test_url_secrets_include_the_decoded_form() -> None:
    assert set(url_secrets("rtsp://admin:p%40ss@cam/live")) == {"p%40ss", "p@ss"}
    assert url_secrets("rtsp://cam/live") == ()


def test_redact_url_keeps_user_host_and_path() -> None:
    assert redact_url("rtsp://operator:Xy7!zz@192.0.2.1:8554/cam/1") == (
        "rtsp://operator:***@192.0.2.1:8554/cam/1"
    )


def test_filter_rewrites_the_final_message(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redact.filter")
    filt = RedactingFilter()
    logger.addFilter(filt)
    try:
        with caplog.at_level(logging.INFO, logger="test.redact.filter"):
            logger.info("opening %s now", "rtsp://admin:topsecret@h/live")
    finally:
        logger.removeFilter(filt)
    assert "topsecret" not in caplog.text
    assert "rtsp://admin:***@h/live" in caplog.text
