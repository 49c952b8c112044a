"""Errors of the storage layer (object store; the database adds its own here).

Library errors (minio, urllib3, ``OSError`` of the file system) are translated into these at
the adapter edge with ``raise ... from err``, so callers never import a backend's exceptions.
Messages say what failed and, where an operator can fix it, what to check.

How callers are meant to react:

- :class:`ObjectNotFound` — permanent for that key (HTTP 404 in the API).
- :class:`StorageUnavailable` — the store cannot be used right now (unreachable endpoint,
  timeout, HTTP 5xx, rejected credentials, unwritable directory): keep the data (spool)
  and retry later; ``/readyz`` reports it.
- :class:`InvalidObjectKey` / :class:`InvalidObjectMetadata` — a bug in the caller; never
  retried.
- any other :class:`StorageError` — the store answered and refused this request.
"""

from config.errors import XueliangError


class StorageError(XueliangError, OSError):
    """A storage operation failed."""


class ObjectNotFound(StorageError):
    """The object (or the bucket holding it) does not exist."""


class StorageUnavailable(StorageError):
    """The store cannot be reached or cannot serve now; the caller spools and retries."""


class StorageAuthError(StorageUnavailable, PermissionError):
    """The store rejected the credentials or denied access.

    A :class:`StorageUnavailable`, so that data is spooled rather than lost until an operator
    fixes the configuration; retrying before that is pointless, so callers may back off
    longer when they can tell it apart.
    """


class InvalidObjectKey(StorageError, ValueError):
    """The object key (or list prefix) is not acceptable; the message says which rule."""


class InvalidObjectMetadata(StorageError, ValueError):
    """User metadata is not acceptable (reserved name, non-token key, non-ASCII value)."""
