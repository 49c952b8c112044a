"""Object store for evidence clips and snapshots: a local directory or any S3 server.

Both backends implement :class:`ObjectStore`. Every call blocks (file system or HTTP), so
async callers use ``await asyncio.to_thread(store.put_file, ...)``. Both keep the SHA-256
of every object they write as metadata (S3 user metadata ``sha256``), so evidence can be
verified later without trusting the database alone.

Errors are those of :mod:`storage.errors`; minio, urllib3 and file-system errors are
translated at this edge. Keys follow one rule set on both backends (:func:`validate_key`),
so a key that works locally works on S3 and no key can leave the local store's root.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import stat as stat_mod
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, Self, cast

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from config.errors import ConfigError
from storage.durable import fsync_dir
from storage.errors import (
    InvalidObjectKey,
    InvalidObjectMetadata,
    ObjectNotFound,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
)

logger = logging.getLogger(__name__)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_SIZE = 256 * 1024
MAX_KEY_BYTES = 1024  # S3's limit, in UTF-8 bytes
MAX_SEGMENT_BYTES = 255  # NAME_MAX of Linux file systems: the local store maps segments to names
SHA256_METADATA = "sha256"
MAX_PRESIGN = timedelta(days=7)  # SigV4 presigned URLs cannot live longer

# Where operators fix what check() complains about (names from CONTRACT.md).
_S3_ENDPOINT_HINT = "check XUELIANG_STORAGE__S3__ENDPOINT and that the server is running"
_S3_CREDENTIALS_HINT = (
    "check XUELIANG_STORAGE__S3__ACCESS_KEY / XUELIANG_STORAGE__S3__SECRET_KEY "
    "and the key's permissions on the bucket"
)
_LOCAL_PATH_HINT = "check XUELIANG_STORAGE__LOCAL__PATH (it must be a writable directory)"


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object.

    ``size`` is the size of the stored bytes. ``sha256`` is the lower-case hex digest
    recorded when the object was written, or ``""`` when none is recorded (an object written
    by another tool) or, in the local store, when the recording no longer matches the file.
    ``metadata`` is the caller's metadata (lower-case keys), without ``sha256``.
    """

    key: str
    size: int
    sha256: str
    content_type: str
    metadata: dict[str, str]


class ObjectStream:
    """An opened object: an iterator of ``bytes`` chunks plus its :class:`ObjectInfo`.

    The object is found (or :class:`ObjectNotFound` raised) when it is opened, before any
    byte is read, so an API can still answer 404. The stream closes itself after the last
    chunk; close it explicitly (or use ``with``) when stopping early. FastAPI::

        stream = await asyncio.to_thread(store.open, key)
        return StreamingResponse(stream, media_type=stream.info.content_type,
                                 headers={"Content-Length": str(stream.info.size)},
                                 background=BackgroundTask(stream.close))

    (Starlette iterates a synchronous iterator in its thread pool.)
    """

    def __init__(self, info: ObjectInfo, chunks: Iterator[bytes], release: Callable[[], None]):
        self.info = info
        self._chunks = chunks
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        if self._release is None:
            raise StopIteration
        try:
            return next(self._chunks)
        except BaseException:  # StopIteration included: release the connection/file at once
            self.close()
            raise

    def close(self) -> None:
        """Release the file or HTTP connection; idempotent."""
        release, self._release = self._release, None
        if release is not None:
            with contextlib.suppress(Exception):
                cast(Any, self._chunks).close()  # runs the generator's cleanup, if any
            release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ObjectStore(Protocol):
    """The object store the clip archive and the API use. All methods block."""

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store the file at ``path`` under ``key`` (replacing it), streamed, with its SHA-256.

        A missing or unreadable ``path`` raises the usual ``OSError`` (not a StorageError).
        """
        ...

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` (replacing it) with its SHA-256."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Describe the object; :class:`ObjectNotFound` if it does not exist."""
        ...

    def open(self, key: str) -> ObjectStream:
        """Open the object for streaming; :class:`ObjectNotFound` if it does not exist."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object in memory; for small objects (snapshots) only."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix`` (plain string prefix, as in S3), in key order."""
        ...

    def presigned_get_url(self, key: str, expires: timedelta) -> str | None:
        """A URL that downloads the object without credentials until ``expires`` passes.

        ``None`` when the store has no such URLs (local store): stream :meth:`open` instead.
        The URL is not checked against the object's existence.
        """
        ...

    def verify(
        self, key: str, sha256: str, size: int | None = None, *, rehash: bool = False
    ) -> bool:
        """Whether the object exists and matches the expected digest (see implementations)."""
        ...

    def check(self) -> None:
        """Readiness: raise :class:`StorageUnavailable` saying what to fix, else return."""
        ...

    def describe(self) -> str:
        """Where objects go, for logs and ``/readyz``; never contains secrets."""
        ...


# --- validation -------------------------------------------------------------------------

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidObjectKey`.

    A key is 1..1024 UTF-8 bytes of '/'-separated segments; it is relative (no leading
    '/'), has no empty segment ('//' or a trailing '/'), no '.' or '..' segment, no
    segment over 255 bytes, and no backslash, NUL or other control character. These rules
    make a key a safe relative path below the local store's root and a plain S3 key.
    """
    if not isinstance(key, str):
        raise InvalidObjectKey(f"object key must be a str, not {type(key).__name__}")
    problem = _key_problem(key)
    if problem:
        raise InvalidObjectKey(f"invalid object key {_shorten(key)}: {problem}")
    return key


def _key_problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not encodable as UTF-8"
    if len(encoded) > MAX_KEY_BYTES:
        return f"it is longer than {MAX_KEY_BYTES} bytes"
    if "\\" in key:
        return "it contains a backslash"
    if _CONTROL_CHARS.search(key):
        return "it contains NUL or another control character"
    if key.startswith("/"):
        return "it must be relative (it starts with '/')"
    for segment in key.split("/"):
        if not segment:
            return "it has an empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return "it has a '.' or '..' segment"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"a segment is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def key_segment(value: str, what: str = "key segment") -> str:
    """Return ``value`` if it is exactly one valid key segment, else raise
    :class:`InvalidObjectKey` naming ``what``.

    Key builders pass every id they put into a key through this, so an id such as
    ``"../x"``, ``"a/b"`` or ``"."`` can never move an object into another folder.
    """
    if not isinstance(value, str):
        raise InvalidObjectKey(f"{what} must be a str, not {type(value).__name__}")
    problem = "it contains '/'" if "/" in value else _key_problem(value)
    if problem:
        raise InvalidObjectKey(f"invalid {what} {_shorten(value)}: {problem}")
    return value


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it may be listed: ``""``, or a valid key with an optional '/'."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of the caller's metadata, or :class:`InvalidObjectMetadata`.

    S3 carries metadata as HTTP headers, and servers disagree about case and non-ASCII
    values; keys are therefore lower-case tokens (``[a-z0-9][a-z0-9_-]*``) and values
    printable ASCII, so that what is written is what is read back on every backend.
    ``sha256`` is reserved for the store's digest.
    """
    result: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        if not isinstance(name, str) or not _METADATA_KEY.fullmatch(name):
            raise InvalidObjectMetadata(
                f"metadata key {name!r} must be a lower-case token ([a-z0-9][a-z0-9_-]*)"
            )
        if name == SHA256_METADATA:
            raise InvalidObjectMetadata("metadata key 'sha256' is reserved for the store")
        if not isinstance(value, str) or not _PRINTABLE_ASCII.fullmatch(value):
            raise InvalidObjectMetadata(f"metadata value of {name!r} must be printable ASCII")
        result[name] = value
    return result


def _validate_content_type(content_type: str) -> str:
    # It travels as an HTTP header (S3, and the API's responses): no CR/LF injection.
    if not content_type or not _PRINTABLE_ASCII.fullmatch(content_type):
        raise InvalidObjectMetadata(f"content type {content_type!r} must be printable ASCII")
    return content_type


def _shorten(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _validate_expiry(expires: timedelta) -> None:
    if not timedelta(seconds=1) <= expires <= MAX_PRESIGN:
        raise ValueError(f"presigned URL expiry must be between 1 s and 7 days, not {expires}")


# --- shared behaviour -------------------------------------------------------------------


class _StoreBase(abc.ABC):
    """What both backends do the same way on top of :meth:`stat` and :meth:`open`."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def open(self, key: str) -> ObjectStream: ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object in memory; for small objects (snapshots) only."""
        with self.open(key) as stream:
            return b"".join(stream)

    def verify(
        self, key: str, sha256: str, size: int | None = None, *, rehash: bool = False
    ) -> bool:
        """Whether the object exists and still is the one expected.

        Checked, cheaply (one stat): the object exists, the SHA-256 recorded when it was
        written equals ``sha256`` (hex, any case) and, when ``size`` is given, its stored
        size equals ``size``. The local store also drops a recorded digest whose recorded
        size no longer matches the file (a truncated or replaced file fails). With
        ``rehash=True`` the content is read back and hashed too, which catches bytes changed
        behind the store's back at the price of reading the whole object.
        """
        validate_key(key)
        try:
            info = self.stat(key)
        except ObjectNotFound:
            return False
        expected = sha256.strip().lower()
        if not info.sha256 or info.sha256 != expected:
            return False
        if size is not None and info.size != size:
            return False
        return not rehash or self._content_sha256(key) == expected

    def _content_sha256(self, key: str) -> str | None:
        digest = hashlib.sha256()
        try:
            with self.open(key) as stream:
                for chunk in stream:
                    digest.update(chunk)
        except ObjectNotFound:
            return None
        return digest.hexdigest()


def _hash_file(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


# --- local directory --------------------------------------------------------------------


class LocalObjectStore(_StoreBase):
    """Objects as files below ``root`` (the store's own directory).

    Layout::

        root/data/<key>   the object's bytes
        root/meta/<key>   JSON: size, sha256, content type, metadata (written after the data)
        root/tmp/         files being written; os.replace() moves them in atomically

    A key maps to a path below ``data/`` and ``meta/`` only, so no key can name another
    object's metadata or a temporary file, and the key rules (relative, no '..') keep it
    below the root. An object exists when its data file does; a digest is reported only
    when the metadata's recorded size matches the file. Files and metadata are fsynced
    before they are moved in. Limitation of any file system: one key cannot be both an
    object and a "folder" of others ("a" and "a/b"); S3 allows it, here it is a
    :class:`StorageError`.
    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root).absolute()
        self._data = self._root / "data"
        self._meta = self._root / "meta"
        self._tmp = self._root / "tmp"

    @property
    def root(self) -> Path:
        """The store's root directory (absolute)."""
        return self._root

    def describe(self) -> str:
        """``local:/absolute/root``."""
        return f"local:{self._root}"

    def check(self) -> None:
        """Create the directories if needed and prove a file can be written and removed."""
        try:
            for folder in (self._data, self._meta, self._tmp):
                folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self._tmp, prefix="check-") as probe:
                probe.write(b"ok")
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as err:
            raise StorageUnavailable(
                f"local object store {self._root} is not usable: {_os_reason(err)} — "
                f"{_LOCAL_PATH_HINT}"
            ) from err

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Copy the file in, hashing it on the way (one pass, constant memory)."""
        key, content_type, user = _validated(key, content_type, metadata)
        with open(path, "rb") as src:
            return self._write(key, src, content_type, user)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` (replacing it) with its SHA-256."""
        key, content_type, user = _validated(key, content_type, metadata)
        return self._write(key, io.BytesIO(data), content_type, user)

    def stat(self, key: str) -> ObjectInfo:
        """Describe the object; :class:`ObjectNotFound` if it does not exist."""
        data_path = self._data_path(validate_key(key))
        with self._os_errors(key):
            try:
                st = os.stat(data_path)
            except (FileNotFoundError, NotADirectoryError) as err:
                raise ObjectNotFound(f"object {key!r} not found in {self.describe()}") from err
            if not stat_mod.S_ISREG(st.st_mode):  # a "folder" of other keys, not an object
                raise ObjectNotFound(f"object {key!r} not found in {self.describe()}")
            return self._info(key, st.st_size)

    def open(self, key: str) -> ObjectStream:
        """Open the data file; a concurrent replace does not affect an open stream."""
        data_path = self._data_path(validate_key(key))
        with self._os_errors(key):
            try:
                src = open(data_path, "rb")  # noqa: SIM115 - closed by the ObjectStream
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
                raise ObjectNotFound(f"object {key!r} not found in {self.describe()}") from err
            try:
                info = self._info(key, os.fstat(src.fileno()).st_size)
            except BaseException:
                src.close()
                raise
        return ObjectStream(info, self._read_chunks(key, src), src.close)

    def delete(self, key: str) -> None:
        """Remove data, then metadata, then folders left empty; a missing key is fine."""
        key = validate_key(key)
        with self._os_errors(key):
            for top in (self._data, self._meta):
                path = top / key
                with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    path.unlink()
                _prune_empty_dirs(top, path.parent)
        logger.debug("deleted %s from %s", key, self._root)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix``, sorted (collected first, then yielded)."""
        validate_prefix(prefix)
        return self._list(prefix)

    def presigned_get_url(self, key: str, expires: timedelta) -> str | None:
        """Always ``None``: the API streams local objects itself."""
        validate_key(key)
        _validate_expiry(expires)
        return None

    # -- internals --

    def _data_path(self, key: str) -> Path:
        return _inside(self._data, key)

    def _info(self, key: str, size: int) -> ObjectInfo:
        recorded = self._read_meta(key)
        if recorded is None:
            return ObjectInfo(key, size, "", DEFAULT_CONTENT_TYPE, {})
        # A digest recorded for a different size describes other bytes: report it unknown.
        sha256 = recorded.sha256 if recorded.size == size else ""
        return ObjectInfo(key, size, sha256, recorded.content_type, recorded.metadata)

    def _read_meta(self, key: str) -> ObjectInfo | None:
        meta_path = _inside(self._meta, key)
        try:
            raw = json.loads(meta_path.read_bytes())
            return ObjectInfo(
                key=key,
                size=int(raw["size"]),
                sha256=str(raw["sha256"]),
                content_type=str(raw["content_type"]),
                metadata={str(k): str(v) for k, v in dict(raw["metadata"]).items()},
            )
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except (ValueError, KeyError, TypeError) as err:
            logger.warning("ignoring unreadable metadata of %s in %s: %s", key, self._root, err)
            return None

    def _write(
        self, key: str, src: IO[bytes], content_type: str, user: dict[str, str]
    ) -> ObjectInfo:
        with self._os_errors(key), contextlib.ExitStack() as cleanup:
            self._tmp.mkdir(parents=True, exist_ok=True)
            data_tmp, size, sha256 = self._copy_to_temp(src)
            cleanup.callback(_unlink_quietly, data_tmp)
            info = ObjectInfo(key, size, sha256, content_type, user)
            meta_tmp = self._temp_with(_meta_json(info))
            cleanup.callback(_unlink_quietly, meta_tmp)
            # Old metadata out, data in, new metadata in: a crash in between leaves an
            # object whose digest reads as unknown, never the old digest on new bytes.
            _unlink_quietly(_inside(self._meta, key))
            self._install(key, data_tmp, self._data)
            self._install(key, meta_tmp, self._meta)
        logger.debug("stored %s (%d bytes, sha256 %s) in %s", key, size, sha256, self._root)
        return info

    def _copy_to_temp(self, src: IO[bytes]) -> tuple[Path, int, str]:
        digest = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="obj-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(CHUNK_SIZE):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _unlink_quietly(Path(name))
            raise
        return Path(name), size, digest.hexdigest()

    def _temp_with(self, payload: bytes) -> Path:
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="meta-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _unlink_quietly(Path(name))
            raise
        return Path(name)

    def _install(self, key: str, temp: Path, top: Path) -> None:
        dest = _inside(top, key)
        try:
            # Twice: a concurrent delete() may prune the fresh parent folder in between.
            for attempt in range(2):
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(temp, dest)
                    break
                except FileNotFoundError:
                    if attempt or not temp.exists():
                        raise
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as err:
            raise StorageError(
                f"object key {key!r} conflicts with an existing object in {self.describe()}: "
                "a key cannot be both an object and a prefix of other keys ('a' and 'a/b')"
            ) from err
        fsync_dir(dest.parent)

    def _read_chunks(self, key: str, src: IO[bytes]) -> Iterator[bytes]:
        with self._os_errors(key):
            while chunk := src.read(CHUNK_SIZE):
                yield chunk

    def _list(self, prefix: str) -> Iterator[str]:
        base = prefix.rpartition("/")[0]
        start = self._data / base if base else self._data
        keys: list[str] = []
        with self._os_errors(prefix):
            for dirpath, dirnames, filenames in os.walk(start):
                rel = Path(dirpath).relative_to(self._data).as_posix()
                folder = "" if rel == "." else rel + "/"
                # Only descend into folders that can still hold keys with this prefix.
                dirnames[:] = sorted(d for d in dirnames if _may_contain(folder + d + "/", prefix))
                keys.extend(
                    folder + name
                    for name in filenames
                    if (folder + name).startswith(prefix) and _key_problem(folder + name) is None
                )
        yield from sorted(keys)

    @contextlib.contextmanager
    def _os_errors(self, key: str) -> Iterator[None]:
        """Translate file-system errors met while working in the store's directories."""
        try:
            yield
        except StorageError:
            raise
        except OSError as err:
            raise StorageUnavailable(
                f"local object store {self._root} failed on {key!r}: {_os_reason(err)} — "
                f"{_LOCAL_PATH_HINT}"
            ) from err


def _validated(
    key: str, content_type: str, metadata: Mapping[str, str] | None
) -> tuple[str, str, dict[str, str]]:
    return validate_key(key), _validate_content_type(content_type), validate_metadata(metadata)


def _inside(top: Path, key: str) -> Path:
    """``top/key``, re-checked lexically: validation already forbids escaping the root."""
    path = Path(os.path.normpath(top / key))
    if path == top or top not in path.parents:
        raise InvalidObjectKey(f"invalid object key {_shorten(key)}: it leaves the store")
    return path


def _may_contain(folder: str, prefix: str) -> bool:
    return folder.startswith(prefix) or prefix.startswith(folder)


def _meta_json(info: ObjectInfo) -> bytes:
    record = {
        "version": 1,
        "size": info.size,
        "sha256": info.sha256,
        "content_type": info.content_type,
        "metadata": info.metadata,
    }
    return json.dumps(record, sort_keys=True).encode()


def _prune_empty_dirs(top: Path, folder: Path) -> None:
    # Retention deletes whole days of clips; without this, empty folders pile up.
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty, already gone, or refilled meanwhile: stop here
            return
        folder = folder.parent


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
        path.unlink()


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    if err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    return err.strerror or str(err)


# --- S3 ---------------------------------------------------------------------------------

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"})
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
    }
)
_META_HEADER = "x-amz-meta-"


@dataclass(frozen=True)
class S3HttpPolicy:
    """How long the S3 client waits and how often it retries.

    Short on purpose: during an outage a call fails within seconds (refused connections at
    once) and the clip archive spools the clip, instead of a thread hanging for minutes
    (minio's own default is 5 min timeouts and 5 retries).
    """

    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    retries: int = 1
    pool_size: int = 10


class S3ObjectStore(_StoreBase):
    """Objects in one bucket of an S3 server (MinIO, SeaweedFS, AWS, ...), via ``minio``.

    The bucket is created when missing, on first use or by :meth:`check`. The SHA-256 is
    user metadata ``sha256``; metadata is read case-insensitively because servers differ
    (SeaweedFS answers ``X-Amz-Meta-Sha256``, others lower-case it).
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        *,
        policy: S3HttpPolicy | None = None,
    ) -> None:
        if "://" in endpoint:
            raise ConfigError(
                "S3 endpoint must be host:port without a scheme (TLS is the 'secure' "
                "setting) — check XUELIANG_STORAGE__S3__ENDPOINT"
            )
        self._policy = policy or S3HttpPolicy()
        self._endpoint = endpoint
        self._bucket = bucket
        self._secure = secure
        self._bucket_ready = False
        self._lock = threading.Lock()
        try:
            check_bucket_name(bucket)
            self._client = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=_http_client(self._policy),
            )
        except ValueError as err:  # minio's messages name the rule, never the secret
            raise ConfigError(f"invalid S3 settings: {err}") from err

    @property
    def bucket(self) -> str:
        """The bucket objects go to."""
        return self._bucket

    @property
    def endpoint(self) -> str:
        """``host:port`` of the S3 server."""
        return self._endpoint

    def describe(self) -> str:
        """``s3://bucket@host:port`` (plus `` (TLS)``); no credentials."""
        return f"s3://{self._bucket}@{self._endpoint}" + (" (TLS)" if self._secure else "")

    def check(self) -> None:
        """Reach the endpoint with the credentials and make sure the bucket exists."""
        try:
            with self._lock:
                self._create_bucket_if_missing()
                self._bucket_ready = True
        except StorageUnavailable:
            raise
        except StorageError as err:  # e.g. the bucket name belongs to someone else
            raise StorageUnavailable(str(err)) from err

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Upload the file (multipart when large; memory bounded by a few parts).

        S3 takes metadata with the request that starts the upload, so the digest is
        computed first; the upload then hashes the bytes it sends again, and if the file
        changed in between the object is removed and :class:`StorageError` raised.
        """
        key, content_type, user = _validated(key, content_type, metadata)
        size, sha256 = _hash_file(path)
        self._ensure_bucket()
        with open(path, "rb") as src:
            reader = _HashingReader(src)
            self._upload(
                key, cast(BinaryIO, reader), size, content_type, {**user, "sha256": sha256}
            )
        if reader.hexdigest() != sha256:
            self.delete(key)
            raise StorageError(f"{path} changed while it was uploaded as {key!r}; not stored")
        return ObjectInfo(key, size, sha256, content_type, user)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` (replacing it) with its SHA-256."""
        key, content_type, user = _validated(key, content_type, metadata)
        sha256 = hashlib.sha256(data).hexdigest()
        self._ensure_bucket()
        self._upload(key, io.BytesIO(data), len(data), content_type, {**user, "sha256": sha256})
        return ObjectInfo(key, len(data), sha256, content_type, user)

    def stat(self, key: str) -> ObjectInfo:
        """One HEAD request; :class:`ObjectNotFound` if the object does not exist."""
        validate_key(key)
        self._ensure_bucket()
        with self._s3_errors("stat", key):
            obj = self._client.stat_object(self._bucket, key)
        return _info_from_headers(key, obj.metadata or {}, obj.size or 0)

    def open(self, key: str) -> ObjectStream:
        """One GET request; the stream reads the body in chunks as it is iterated."""
        validate_key(key)
        self._ensure_bucket()
        with self._s3_errors("read", key):
            response = self._client.get_object(self._bucket, key)
        length = response.headers.get("Content-Length")
        try:
            info = (
                _info_from_headers(key, response.headers, int(length))
                if length is not None
                else self.stat(key)
            )
        except BaseException:
            _release_response(response)
            raise
        return ObjectStream(
            info, self._read_chunks(key, response), lambda: _release_response(response)
        )

    def delete(self, key: str) -> None:
        """DELETE; S3 answers success for missing keys, which keeps this idempotent."""
        validate_key(key)
        self._ensure_bucket()
        with self._s3_errors("delete", key):
            self._client.remove_object(self._bucket, key)
        logger.debug("deleted %s from %s", key, self.describe())

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix``, in key order, fetched page by page while iterated."""
        validate_prefix(prefix)
        self._ensure_bucket()
        return self._list(prefix)

    def presigned_get_url(self, key: str, expires: timedelta) -> str:
        """A SigV4 presigned GET URL (no request unless the bucket's region is unknown)."""
        validate_key(key)
        _validate_expiry(expires)
        self._ensure_bucket()
        with self._s3_errors("presign a URL for", key):
            url: str = self._client.presigned_get_object(self._bucket, key, expires=expires)
        return url

    # -- internals --

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._lock:
            if not self._bucket_ready:
                self._create_bucket_if_missing()
                self._bucket_ready = True

    def _create_bucket_if_missing(self) -> None:
        with self._s3_errors("check the bucket of", None):
            if self._client.bucket_exists(self._bucket):
                return
            try:
                self._client.make_bucket(self._bucket)
            except S3Error as err:
                # Another process created it between our HEAD and PUT.
                if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        logger.info("created bucket %s on %s", self._bucket, self._endpoint)

    def _upload(
        self, key: str, data: BinaryIO, size: int, content_type: str, metadata: dict[str, str]
    ) -> None:
        with self._s3_errors("upload", key):
            self._client.put_object(
                self._bucket,
                key,
                data,
                size,
                content_type=content_type,
                metadata=cast(dict[str, Any], metadata),
            )
        logger.debug("stored %s (%d bytes) in %s", key, size, self.describe())

    def _read_chunks(self, key: str, response: Any) -> Iterator[bytes]:
        with self._s3_errors("read", key):
            yield from response.stream(CHUNK_SIZE, decode_content=False)

    def _list(self, prefix: str) -> Iterator[str]:
        with self._s3_errors("list", prefix or None):
            for obj in self._client.list_objects(self._bucket, prefix=prefix, recursive=True):
                name = obj.object_name
                if name and not obj.is_dir:
                    yield name

    @contextlib.contextmanager
    def _s3_errors(self, action: str, key: str | None) -> Iterator[None]:
        """Translate minio/urllib3 errors into storage errors (the adapter edge)."""
        try:
            yield
        except S3Error as err:
            raise self._from_s3_error(err, action, key) from err
        except (ServerError, InvalidResponseError) as err:
            raise StorageUnavailable(
                f"S3 endpoint {self._endpoint} failed to {action} {self._what(key)}: {err} — "
                f"{_S3_ENDPOINT_HINT}"
            ) from err
        except MinioException as err:
            raise StorageError(f"S3 failed to {action} {self._what(key)}: {err}") from err
        except HTTPError as err:
            raise StorageUnavailable(
                f"cannot reach S3 endpoint {self._endpoint}: {self._transport_reason(err)} — "
                f"{_S3_ENDPOINT_HINT}"
            ) from err

    def _from_s3_error(self, err: S3Error, action: str, key: str | None) -> StorageError:
        code = err.code or "unknown"
        if code == "NoSuchBucket":
            self._bucket_ready = False  # deleted behind our back: re-create on next use
        if key is not None and code in _NOT_FOUND_CODES:
            return ObjectNotFound(f"object {key!r} not found in {self.describe()}")
        detail = f"{code}: {err.message}" if err.message else code
        if code in _AUTH_CODES:
            return StorageAuthError(
                f"S3 endpoint {self._endpoint} rejected the credentials or denied access to "
                f"bucket {self._bucket!r} ({detail}) — {_S3_CREDENTIALS_HINT}"
            )
        status = getattr(err.response, "status", 0) or 0
        message = f"S3 endpoint {self._endpoint} failed to {action} {self._what(key)} ({detail})"
        if status >= 500:
            return StorageUnavailable(message)
        return StorageError(message)

    def _what(self, key: str | None) -> str:
        return f"{key!r} in bucket {self._bucket!r}" if key else f"bucket {self._bucket!r}"

    def _transport_reason(self, err: HTTPError) -> str:
        reason: BaseException = err.reason if isinstance(err, MaxRetryError) and err.reason else err
        if isinstance(reason, NameResolutionError):
            return "host name not resolved"
        if isinstance(reason, NewConnectionError) and _caused_by(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, NewConnectionError):  # also a ConnectTimeoutError: test first
            return f"connection failed ({_root_cause(reason)})"
        if isinstance(reason, ConnectTimeoutError):
            return f"no connection within {self._policy.connect_timeout_s:g} s"
        if isinstance(reason, ReadTimeoutError):
            return f"no answer within {self._policy.read_timeout_s:g} s"
        if isinstance(reason, ProtocolError):
            return f"connection broken ({_root_cause(reason)})"
        return str(reason)


class _HashingReader:
    """A read-only file wrapper that hashes what is read through it."""

    def __init__(self, src: IO[bytes]) -> None:
        self._src = src
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._src.read(size)
        self._digest.update(chunk)
        return chunk

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _http_client(policy: S3HttpPolicy) -> urllib3.PoolManager:
    retry = urllib3.Retry(
        total=policy.retries,
        backoff_factor=0.2,
        status_forcelist=(500, 502, 503, 504),
        raise_on_status=False,  # hand the last 5xx to minio, which reads the S3 error code
    )
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=policy.connect_timeout_s, read=policy.read_timeout_s),
        retries=retry,
        maxsize=policy.pool_size,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


def _info_from_headers(key: str, headers: Mapping[str, str], size: int) -> ObjectInfo:
    sha256 = ""
    user: dict[str, str] = {}
    content_type = DEFAULT_CONTENT_TYPE
    for name, value in headers.items():
        lower = name.lower()
        if lower == "content-type":
            content_type = value
        elif lower.startswith(_META_HEADER):
            meta_key = lower[len(_META_HEADER) :]
            if meta_key == SHA256_METADATA:
                sha256 = value.strip().lower()
            else:
                user[meta_key] = value
    return ObjectInfo(key, size, sha256, content_type, user)


def _release_response(response: Any) -> None:
    response.close()
    response.release_conn()


def _caused_by(err: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None or err.__context__ is not None:
        err = cast(BaseException, err.__cause__ or err.__context__)
    return str(err)
