"""``--expires`` of ``xueliang token create``: a lifetime, a moment, or ``never``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LIFETIME = re.compile(r"^(\d+)([smhd]?)$")
#: As the API's ``expires_in_s``: at least a minute, at most ten years.
MIN_S, MAX_S = 60, 10 * 365 * 86400

#: What ``--expires`` gives: now → the expiry (None: never).
Expiry = Callable[[datetime], datetime | None]


def expiry_arg(text: str) -> Expiry:
    """Parse ``30d`` / ``12h`` / ``90m`` / ``3600s`` / ``3600``, an RFC 3339 time with a zone,
    or ``never``; argparse shows the error and the usage on anything else."""
    if text.strip().lower() == "never":
        return lambda _now: None
    match = _LIFETIME.match(text.strip())
    if match:
        seconds = int(match[1]) * UNITS[match[2] or "s"]
        if not MIN_S <= seconds <= MAX_S:
            raise argparse.ArgumentTypeError(f"{text!r}: between 1 minute and 10 years, please")
        return lambda now: now + timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a lifetime (90m, 12h, 30d), a time (2030-01-31T00:00:00Z) or 'never'"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: add a zone, e.g. Z or +08:00")
    if moment <= datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{text!r} has already passed")
    return lambda _now: moment.astimezone(UTC)
