"""The root of Xueliang's error hierarchy.

Every package defines its own errors below :class:`XueliangError`; library errors are
translated at the adapter edge with ``raise ... from err``. The CLI prints ``str(err)`` of a
``XueliangError`` as one line and exits non-zero, so messages say what to fix.
"""


class XueliangError(Exception):
    """Base of all errors this service raises on purpose."""


class ConfigError(XueliangError, ValueError):
    """The configuration is invalid; the message names the key and what to change."""
