"""The test suite: ``unit/`` pure logic on synthetic input, ``integration/`` against real
peers (gst-rtsp-server, SeaweedFS, PostgreSQL, SIPp…), ``api/`` the HTTP API on SQLite
and PostgreSQL, ``e2e/`` the console in Debian's Chromium, ``peers/`` starts the real
servers, ``soak/`` is ``make soak``. May import every package.
"""
