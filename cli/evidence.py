"""``xueliang evidence key`` and ``xueliang evidence verify``.

``verify`` needs no settings, database or network: it is what a court or a prosecutor runs
on a package (docs/security.md, "Evidence packages").
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from config.settings import Settings
from storage.evidence_package import (
    PackageError,
    Verification,
    load_public_key,
    verify_package,
)

EXIT_OK, EXIT_MISMATCH = 0, 1


def print_key(settings: Settings, *, pem_only: bool = False) -> int:
    """Print the installation's public signing key (created on first use)."""
    from storage.db import Database
    from storage.evidence_keys import public_key
    from storage.secrets import secret_box

    db = Database(settings.database_url, pool_size=1)
    try:
        db.migrate()
        key = public_key(db, secret_box(settings.secrets, settings.camera_key_file))
    finally:
        db.dispose()
    if not pem_only:
        print(f"key id: {key.key_id}")
        print("algorithm: Ed25519")
        print(f"public key (base64, 32 raw bytes): {key.base64}")
    print(key.pem, end="")
    return EXIT_OK


def verify(package: Path, key_arg: str | None) -> int:
    """Check ``package``; print every check; 0 when all pass, 1 otherwise."""
    key = _load_key(key_arg) if key_arg else None
    result = verify_package(package, key)
    for finding in result.findings:
        print(("OK    " if finding.ok else "FAIL  ") + finding.text)
    manifest = result.manifest or {}
    if result.embedded_key:
        print(
            "NOTE  checked with the public key inside the package: this proves the package "
            "is intact, not which installation made it; pass --key with the installation's "
            "published key (GET /api/v1/evidence/key) to prove its origin"
        )
    if result.ok:
        print(
            f"VERIFIED: evidence of incident {manifest.get('incident_id')}, exported "
            f"{manifest.get('created_at')} by {manifest.get('exported_by')}, "
            f"signed by key {manifest.get('key_id')}"
        )
        return EXIT_OK
    print(f"NOT VERIFIED: {_problems(result)}")
    return EXIT_MISMATCH


def _load_key(key_arg: str) -> Ed25519PublicKey:
    """The key of ``--key``: a file of that name (PEM or base64), else the argument itself."""
    path = Path(key_arg)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = None
    try:
        return load_public_key(text if text is not None else key_arg)
    except PackageError as err:
        where = f"--key {path}" if text is not None else "--key (no file of that name)"
        raise PackageError(f"{where}: {err}") from err


def _problems(result: Verification) -> str:
    n = len(result.failures)
    return f"{n} problem{'s' if n != 1 else ''}" if n else "nothing could be checked"
