"""Encryption at rest for camera credentials (Fernet: AES-128-CBC + HMAC-SHA256).

What is encrypted: camera stream URLs (they carry the password), the ONVIF password,
webhook subscription secrets, GB/T 28181 device passwords and the evidence signing key.
One key encrypts; older keys may be kept to decrypt while a key rotation is under way
(:class:`~cryptography.fernet.MultiFernet`), and :func:`rotate_stored_secrets` re-encrypts
every stored secret with the current key.

Where the keys live: ``secrets.camera_key`` / ``secrets.previous_keys`` in the settings, or
else the key file ``secret.key`` in the data dir (mode 0600; first line the current key,
further lines older keys), created on first use. See docs/security.md.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.errors import ConfigError
from config.settings import SecretsSettings
from storage import gb28181
from storage.audit import audit
from storage.db import Database
from storage.durable import write_atomic
from storage.grid_models import Subscription
from storage.models import Camera, EvidenceKey

log = logging.getLogger(__name__)

KEY_FILE_MODE = 0o600


class SecretBox:
    """Encrypts short secrets with the current key; decrypts with it or any older key."""

    def __init__(self, key: str | bytes, previous: Sequence[str | bytes] = ()) -> None:
        self._key = key.encode() if isinstance(key, str) else key
        self._current = _fernet(key, "secrets.camera_key")
        older = [_fernet(k, "secrets.previous_keys") for k in previous]
        self._fernet = MultiFernet([self._current, *older])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as err:
            raise ConfigError(
                "cannot decrypt stored camera credentials: secrets.camera_key differs from the "
                "key they were stored with (add that key to secrets.previous_keys)"
            ) from err

    def is_current(self, token: str) -> bool:
        """Whether ``token`` is encrypted with the current key (nothing to rotate)."""
        try:
            self._current.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def derive(self, label: bytes) -> bytes:
        """A 32-byte secret for ``label``, the same in every process sharing the current key
        (e.g. the GB/T 28181 digest nonces any process must be able to check)."""
        return hmac.new(self._key, b"xueliang:" + label, hashlib.sha256).digest()

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the current key; ConfigError if no key opens it."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as err:
            raise ConfigError("no configured key decrypts this stored secret") from err


def _fernet(key: str | bytes, setting: str) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"{setting} is not a valid Fernet key (32 url-safe base64 bytes); make one with: "
            "xueliang secrets new-key"
        ) from err


def new_key() -> str:
    """A fresh Fernet key."""
    return Fernet.generate_key().decode()


def secret_box(settings: SecretsSettings, key_file: Path) -> SecretBox:
    """The box for these settings: ``camera_key`` and ``previous_keys`` when the key is set,
    else the keys of ``key_file`` (created with a new key on first use)."""
    if settings.camera_key is not None:
        return SecretBox(
            settings.camera_key.get_secret_value(),
            [k.get_secret_value() for k in settings.previous_keys],
        )
    if settings.previous_keys:
        raise ConfigError(
            "secrets.previous_keys is set but secrets.camera_key is not: set the new key in "
            "camera_key (the key file is used only when neither is set)"
        )
    keys = load_key_file(key_file) or [load_or_create_key(key_file)]
    return SecretBox(keys[0], keys[1:])


# --- the key file -----------------------------------------------------------------------


def load_or_create_key(path: Path) -> bytes:
    """The current key in ``path``, created (mode 0600) on first use.

    For single-process installs; several processes sharing a database set
    ``secrets.camera_key`` instead.
    """
    keys = load_key_file(path)
    if keys:
        return keys[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:  # another process created it meanwhile: use theirs
        return load_key_file(path)[0]
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    log.info("generated camera credential key in %s (back it up with the database)", path)
    return key


def load_key_file(path: Path) -> list[bytes]:
    """The keys in ``path``, current first; [] when it does not exist.

    A file that others may read is used, with a warning: refusing would stop the cameras
    of an install whose file mode was changed by a backup restore.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise ConfigError(f"cannot read the camera key file {path}: {err.strerror}") from err
    if mode & 0o077:
        log.warning(
            "camera key file %s has mode %04o: others may read it; run: chmod 600 %s",
            path,
            mode,
            path,
        )
    return [line.strip() for line in text.splitlines() if line.strip()]


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replace ``path`` atomically with ``keys`` (current first), mode 0600."""
    write_atomic(path, b"".join(k + b"\n" for k in keys), mode=KEY_FILE_MODE)


# --- rotation ---------------------------------------------------------------------------


@dataclass
class Rotation:
    """What :func:`rotate_stored_secrets` did."""

    rotated: int = 0
    current: int = 0
    #: "cameras/<id>.<field>" of secrets no configured key opens (nothing was changed).
    unreadable: list[str] = field(default_factory=list)


def rotate_stored_secrets(session: Session, box: SecretBox) -> Rotation:
    """Re-encrypt every stored secret with the current key, in the caller's transaction.

    Rows are locked first, so a camera edited meanwhile is neither lost nor left with the
    old key. If any secret opens with none of the keys, nothing is changed and the report
    names them.
    """
    _lock_for_rotation(session)
    result = Rotation()
    updates: list[tuple[Any, str, dict[str, Any]]] = []
    cameras = session.scalars(select(Camera).order_by(Camera.id).with_for_update())
    for cam in cameras:
        values: dict[str, Any] = {}
        for name in ("main_url_enc", "sub_url_enc"):
            token = getattr(cam, name)
            if token:
                values[name] = _rotated(box, token, f"cameras/{cam.id}.{name}", result)
        if cam.onvif and cam.onvif.get("password_enc"):
            where = f"cameras/{cam.id}.onvif.password_enc"
            token = _rotated(box, cam.onvif["password_enc"], where, result)
            values["onvif"] = {**cam.onvif, "password_enc": token} if token else None
        updates.append((Camera, cam.id, values))
    subs = session.scalars(select(Subscription).order_by(Subscription.id).with_for_update())
    for sub in subs:
        token = _rotated(box, sub.secret_enc, f"subscriptions/{sub.id}.secret_enc", result)
        updates.append((Subscription, sub.id, {"secret_enc": token}))
    updates += _evidence_key_updates(session, box, result)
    devices = {
        device_id: _rotated(box, token, f"gb28181_devices/{device_id}.password_enc", result)
        for device_id, token in gb28181.password_tokens_for_update(session).items()
    }
    if result.unreadable:
        return result
    gb28181.store_password_tokens(session, {d: t for d, t in devices.items() if t})
    for model, row_id, values in updates:
        changed = {k: v for k, v in values.items() if v is not None}
        if changed:
            session.execute(update(model).where(model.id == row_id).values(**changed))
    return result


def _evidence_key_updates(
    session: Session, box: SecretBox, result: Rotation
) -> list[tuple[Any, str, dict[str, Any]]]:
    """The evidence signing keys' private halves (storage/evidence_keys.py), re-encrypted."""
    updates: list[tuple[Any, str, dict[str, Any]]] = []
    for key in session.scalars(select(EvidenceKey).order_by(EvidenceKey.id).with_for_update()):
        where = f"evidence_keys/{key.id}.private_key_enc"
        updates.append(
            (
                EvidenceKey,
                key.id,
                {"private_key_enc": _rotated(box, key.private_key_enc, where, result)},
            )
        )
    return updates


def _rotated(box: SecretBox, token: str, where: str, result: Rotation) -> Any:
    """The re-encrypted token, or None when it needs no change or opens with no key."""
    if box.is_current(token):
        result.current += 1
        return None
    try:
        rotated = box.rotate(token)
    except ConfigError:
        result.unreadable.append(where)
        return None
    result.rotated += 1
    return rotated


def _lock_for_rotation(session: Session) -> None:
    # PostgreSQL: the SELECT … FOR UPDATE below locks the rows. SQLite has no row locks and
    # Python's driver begins a transaction only at the first write, so reads would come
    # from before a concurrent edit: a no-op write takes the database's write lock first.
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Camera).where(Camera.id.is_(None)).values(name=Camera.name))


def rotate_keys(
    db: Database, settings: SecretsSettings, key_file: Path, new_key_file: bool = False
) -> Rotation:
    """``xueliang secrets rotate``: re-encrypt everything with the current key, audited.

    ``new_key_file``: first put a new key at the head of the key file (the old ones stay
    until the re-encryption has committed, so a crash leaves every secret readable), then
    drop the old ones. On failure the file is restored.
    """
    old_keys: list[bytes] = []
    if new_key_file:
        if settings.camera_key is not None:
            raise ConfigError(
                "--new-key rotates the key file, but secrets.camera_key is set: put a new key "
                "(xueliang secrets new-key) in camera_key and the old one in previous_keys, "
                "restart, then run xueliang secrets rotate"
            )
        old_keys = load_key_file(key_file)
        if not old_keys:
            raise ConfigError(f"no key file {key_file}: nothing to rotate")
        write_key_file(key_file, [new_key().encode(), *old_keys])
    try:
        box = secret_box(settings, key_file)
        with db.session() as session:
            result = rotate_stored_secrets(session, box)
            if result.unreadable:
                raise ConfigError(
                    "no configured key decrypts "
                    + ", ".join(result.unreadable)
                    + ": add the key they were stored with to secrets.previous_keys (or enter "
                    "those credentials again); nothing was changed"
                )
            detail = {"rotated": result.rotated, "current": result.current}
            audit(session, _cli_actor(), "rotate", "secrets", "camera_key", detail)
    except BaseException:
        if old_keys:
            write_key_file(key_file, old_keys)
        raise
    if new_key_file:
        write_key_file(key_file, load_key_file(key_file)[:1])
    log.info("re-encrypted %d stored secret(s); %d already current", result.rotated, result.current)
    return result


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in some containers
        return f"cli:uid {os.getuid()}"
