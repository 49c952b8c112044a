"""The soak test (issue #10): run with ``make soak`` or ``python -m tests.soak``.

Not part of the default pytest run (no ``test_`` module here). The service runs as a real
process for ``--minutes`` (30) with ``--cameras`` (16) cameras on a gst-rtsp-server that is
killed every tenth of the run, SeaweedFS S3 stopped for a minute at ~1/3 and ~2/3, the
service SIGKILLed once just after the half and restarted, and a webhook receiver that keeps
going down, failing (500) and coming back. At the end:

- every incident has an archived clip whose SHA-256 in the API equals that of the object's
  bytes in S3, the clips of incidents open at the service kill included (recovered from
  the spool's journals at the restart, `end_reason` `process_died`: issue #21);
- every event of the log reached the receiver, in ``seq`` order, signed (at least once:
  repeats are allowed, as re-sends only);
- the service's RSS and open fds are flat (last 5 minutes against the first 5).

Progress goes to stderr each minute, one JSON summary line to stdout; the exit status is 1
when a property fails. Results of the full run: ``docs/soak.md``.
"""
