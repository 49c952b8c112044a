"""The evidence package: a ZIP whose signed manifest proves what it holds and who made it.

Layout (format ``xueliang-evidence/1``)::

    clip.mp4        the clip, byte for byte as archived
    snapshot.jpg    the snapshot (when the incident has one)
    incident.json   the incident record: camera, grid, times, detections, history, cases
    audit.json      the incident's audit trail, the export itself included
    VERIFY.txt      how to check the package, with standard tools too
    manifest.json   {"format", "incident_id", "installation", "created_at", "exported_by",
                     "key_id", "algorithm": "Ed25519", "files": [{"name","size","sha256"}]}
    manifest.sig    the detached Ed25519 signature (64 raw bytes) of manifest.json's bytes
    public_key.pem  the signing key's public half (convenience: not proof of origin)

``key_id`` is the SHA-256 (hex) of the 32-byte raw public key. Nothing here touches the
database or the network: :func:`verify_package` is what ``xueliang evidence verify`` runs
on any machine.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from config.errors import XueliangError

FORMAT = "xueliang-evidence/1"
ALGORITHM = "Ed25519"
CLIP = "clip.mp4"
SNAPSHOT = "snapshot.jpg"
INCIDENT = "incident.json"
AUDIT = "audit.json"
README = "VERIFY.txt"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "public_key.pem"
#: Files outside the manifest: the manifest, its signature, and the key that checks it.
UNLISTED = (MANIFEST, SIGNATURE, PUBLIC_KEY)
CHUNK = 256 * 1024


class PackageError(XueliangError):
    """The file cannot be read as an evidence package at all, or a key cannot be read."""


# --- keys -------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    """The key's id: SHA-256 (hex) of its 32 raw bytes
    (``openssl pkey -pubin -in KEY.pem -outform DER | tail -c 32 | sha256sum``)."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM, or from the base64 of its 32 raw bytes."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm) as err:
            raise PackageError(f"the key is not a readable PEM public key ({err})") from err
        if not isinstance(key, Ed25519PublicKey):
            raise PackageError("the key is not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise PackageError(
            "the key is neither a PEM public key nor the base64 of 32 raw Ed25519 bytes "
            "(as GET /api/v1/evidence/key and `xueliang evidence key` show it)"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


# --- writing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str


class PackageWriter:
    """Writes a package into ``out`` (a seekable binary file), entry by entry, hashing each
    as it goes; :meth:`seal` writes the manifest, its signature and the public key."""

    def __init__(self, out: IO[bytes]) -> None:
        self._zip = zipfile.ZipFile(out, "w", allowZip64=True)
        self.files: list[FileEntry] = []

    def add_stream(self, name: str, chunks: Iterable[bytes]) -> FileEntry:
        """Store ``chunks`` uncompressed (media are compressed already), never all in memory."""
        digest, size = hashlib.sha256(), 0
        with self._zip.open(_entry(name, zipfile.ZIP_STORED), "w", force_zip64=True) as dest:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                dest.write(chunk)
        entry = FileEntry(name, size, digest.hexdigest())
        self.files.append(entry)
        return entry

    def add_bytes(self, name: str, data: bytes) -> FileEntry:
        """A small document, deflated."""
        self._zip.writestr(_entry(name, zipfile.ZIP_DEFLATED), data)
        entry = FileEntry(name, len(data), hashlib.sha256(data).hexdigest())
        self.files.append(entry)
        return entry

    def add_json(self, name: str, value: Any) -> FileEntry:
        return self.add_bytes(name, dump_json(value))

    def discard(self) -> None:
        """Give up on the package: close the ZIP; the caller throws the file away."""
        with contextlib.suppress(ValueError, OSError):
            self._zip.close()

    def seal(
        self, fields: dict[str, Any], sign: Callable[[bytes], bytes], public: Ed25519PublicKey
    ) -> bytes:
        """Write the manifest (``fields`` plus key id, algorithm and the files so far), its
        signature and the public key; close the ZIP. Returns the manifest's bytes."""
        manifest = dump_json(
            {
                "format": FORMAT,
                **fields,
                "key_id": key_id(public),
                "algorithm": ALGORITHM,
                "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
            }
        )
        self._zip.writestr(_entry(MANIFEST, zipfile.ZIP_DEFLATED), manifest)
        self._zip.writestr(_entry(SIGNATURE, zipfile.ZIP_STORED), sign(manifest))
        self._zip.writestr(_entry(PUBLIC_KEY, zipfile.ZIP_STORED), public_pem(public))
        self._zip.close()
        return manifest


def _entry(name: str, compression: int) -> zipfile.ZipInfo:
    """A ZIP entry dated now (UTC), readable by all once unpacked (it goes to a court)."""
    info = zipfile.ZipInfo(name, date_time=datetime.now(UTC).timetuple()[:6])
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def dump_json(value: Any) -> bytes:
    """UTF-8 JSON, indented, times as ISO 8601 (RFC 3339 for aware UTC times)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)
    return text.encode() + b"\n"


def _json_default(value: object) -> object:
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --- verifying --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    ok: bool
    text: str


@dataclass
class Verification:
    """What :func:`verify_package` found, in order; ``ok`` when nothing failed."""

    findings: list[Finding] = field(default_factory=list)
    #: The manifest as read (None when it is missing or unreadable).
    manifest: dict[str, Any] | None = None
    #: True when the key came from inside the package (integrity only, not origin).
    embedded_key: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.findings) and all(f.ok for f in self.findings)

    @property
    def failures(self) -> list[str]:
        return [f.text for f in self.findings if not f.ok]

    def good(self, text: str) -> None:
        self.findings.append(Finding(True, text))

    def bad(self, text: str) -> None:
        self.findings.append(Finding(False, text))


def verify_package(path: Path, key: Ed25519PublicKey | None = None) -> Verification:
    """Check a package offline: the manifest's signature (with ``key``, else the key inside
    the package), then every listed file's size and SHA-256, and that no file is missing
    or extra. PackageError when ``path`` is no ZIP at all."""
    result = Verification()
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError as err:
        raise PackageError(f"no such file: {path}") from err
    except (zipfile.BadZipFile, OSError) as err:
        raise PackageError(f"{path} is not a ZIP file ({err})") from err
    with archive:
        names = archive.namelist()
        for name, count in Counter(names).items():
            if count > 1:
                result.bad(f"{name}: the ZIP holds {count} entries of that name")
        manifest_bytes = _read(archive, MANIFEST, result)
        signature = _read(archive, SIGNATURE, result)
        if manifest_bytes is None or signature is None:
            return result
        result.manifest = _parse_manifest(manifest_bytes, result)
        key = _choose_key(archive, key, result)
        if key is not None:
            _check_signature(key, manifest_bytes, signature, result)
        if result.manifest is not None:
            _check_files(archive, result.manifest, names, result)
            _check_archived_hash(archive, result.manifest, result)
    return result


def _read(archive: zipfile.ZipFile, name: str, result: Verification) -> bytes | None:
    try:
        return archive.read(name)
    except KeyError:
        result.bad(f"{name} is missing")
    except (zipfile.BadZipFile, zlib.error, OSError) as err:
        result.bad(f"{name} cannot be read ({err})")
    return None


def _parse_manifest(data: bytes, result: Verification) -> dict[str, Any] | None:
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        result.bad(f"{MANIFEST} is not JSON ({err})")
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(_is_entry(f) for f in files):
        result.bad(f"{MANIFEST} has no list of files with name, size and sha256")
        return None
    if manifest.get("format") != FORMAT:
        result.bad(f"{MANIFEST}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
    return dict(manifest)


def _is_entry(item: object) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("size"), int)
        and isinstance(item.get("sha256"), str)
    )


def _choose_key(
    archive: zipfile.ZipFile, given: Ed25519PublicKey | None, result: Verification
) -> Ed25519PublicKey | None:
    claimed = (result.manifest or {}).get("key_id")
    if given is not None:
        if claimed is not None and claimed != key_id(given):
            result.bad(
                f"the manifest names signing key {claimed}, the key given is {key_id(given)}"
            )
        return given
    result.embedded_key = True
    pem = _read(archive, PUBLIC_KEY, result)
    if pem is None:
        return None
    try:
        key = load_public_key(pem.decode("utf-8", "replace"))
    except PackageError as err:
        result.bad(f"{PUBLIC_KEY}: {err}")
        return None
    if claimed is not None and claimed != key_id(key):
        result.bad(f"{PUBLIC_KEY} is key {key_id(key)}, the manifest names key {claimed}")
    return key


def _check_signature(
    key: Ed25519PublicKey, manifest: bytes, signature: bytes, result: Verification
) -> None:
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        result.bad(
            f"signature does not match the key {key_id(key)}: {MANIFEST} or {SIGNATURE} was "
            "changed, or the package was signed by another key"
        )
        return
    result.good(f"signature of {MANIFEST} verified with key {key_id(key)}")


def _check_files(
    archive: zipfile.ZipFile, manifest: dict[str, Any], names: list[str], result: Verification
) -> None:
    listed = manifest["files"]
    for entry in listed:
        _check_file(archive, entry, set(names), result)
    known = {e["name"] for e in listed} | set(UNLISTED)
    for name in sorted(set(names) - known):
        result.bad(f"{name}: extra file, not in the manifest")


def _check_file(
    archive: zipfile.ZipFile, entry: dict[str, Any], names: set[str], result: Verification
) -> None:
    name, size, expected = entry["name"], entry["size"], entry["sha256"].lower()
    if name in UNLISTED:
        result.bad(f"{name}: listed in the manifest but reserved for the package itself")
        return
    if name not in names:
        result.bad(f"{name}: missing (the manifest lists {size} bytes, SHA-256 {expected})")
        return
    try:
        actual_size, actual = _hash_entry(archive, name)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
        result.bad(f"{name}: cannot be read, the ZIP entry is damaged ({err})")
        return
    problems = []
    if actual != expected:
        problems.append(f"SHA-256 expected {expected}, actual {actual}")
    if actual_size != size:
        problems.append(f"size expected {size}, actual {actual_size}")
    if problems:
        result.bad(f"{name}: " + "; ".join(problems))
    else:
        result.good(f"{name}: {size} bytes, SHA-256 {actual}")


def _hash_entry(archive: zipfile.ZipFile, name: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with archive.open(name) as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _check_archived_hash(
    archive: zipfile.ZipFile, manifest: dict[str, Any], result: Verification
) -> None:
    """The clip in the package is the one whose SHA-256 was recorded when it was archived
    (incident.json, itself covered by the manifest)."""
    listed = {e["name"]: e["sha256"] for e in manifest["files"]}
    if CLIP not in listed or INCIDENT not in listed:
        return
    try:
        record = json.loads(archive.read(INCIDENT))
        archived = record["clip"]["sha256"]
    except (KeyError, TypeError, ValueError, zipfile.BadZipFile, zlib.error):
        return  # a damaged incident.json is reported by its own hash check
    if archived != listed[CLIP]:
        result.bad(f"{CLIP}: archived with SHA-256 {archived}, packaged as {listed[CLIP]}")
