"""Encryption at rest for camera credentials (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from config.errors import ConfigError

log = logging.getLogger(__name__)


class SecretBox:
    """Encrypts and decrypts short secrets such as stream URLs carrying a password."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as err:
            raise ConfigError(
                "secrets.camera_key is not a valid Fernet key (32 url-safe base64 bytes); "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from err

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as err:
            raise ConfigError(
                "cannot decrypt stored camera credentials: secrets.camera_key differs from the "
                "key they were stored with"
            ) from err


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created (mode 0600) on first use — for single-process installs."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    log.info("generated camera credential key in %s (back it up with the database)", path)
    return key
