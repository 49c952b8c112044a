"""The ``xueliang`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from cli.expiry import expiry_arg
from config.errors import XueliangError
from config.settings import Settings, load_settings
from runtime.roles import ROLES

log = logging.getLogger("xueliang")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except XueliangError as err:
        # One line that says what to fix; the traceback helps nobody installing the service.
        print(f"xueliang: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xueliang", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the API, ingest and analytics")
    _server_args(serve)
    serve.set_defaults(handler=_serve)

    demo = sub.add_parser("demo", help="serve with a demo camera, for a first look")
    _server_args(demo)
    demo.set_defaults(handler=_demo)

    analyze = sub.add_parser("analyze", help="run the analytics on a video or image file")
    analyze.add_argument("file", type=Path, help="video or image file")
    analyze.add_argument("--json", action="store_true", help="one JSON object per analysed frame")
    analyze.add_argument("--fps", type=float, default=5.0, help="frames analysed per second")
    analyze.add_argument("--config", type=Path, help="YAML settings file")
    analyze.set_defaults(handler=_analyze)

    token = sub.add_parser("token", help="manage API tokens")
    tsub = token.add_subparsers(required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="print a new API token for a role")
    create.add_argument("--config", type=Path, help="YAML settings file")
    create.add_argument(
        "--role", required=True, choices=["admin", "integrator", "operator", "grid_platform"]
    )
    create.add_argument("--name", default="", help="a label shown in audit logs")
    create.add_argument("--grid-scope", default=None, help="limit the token to a grid subtree")
    create.add_argument(
        "--expires",
        type=expiry_arg,
        default=None,
        metavar="WHEN",
        help="a lifetime (90m, 12h, 30d, 3600s), a time (2030-01-31T00:00:00Z) or 'never'; "
        "default: the role's (auth.<role>_lifetime_s)",
    )
    create.set_defaults(handler=_token_create)

    secrets = sub.add_parser("secrets", help="camera credential keys")
    ssub = secrets.add_subparsers(required=True, metavar="ACTION")
    rotate = ssub.add_parser(
        "rotate",
        help="re-encrypt every stored credential with the current key",
        description="Re-encrypt every stored camera credential and webhook secret with the "
        "current key (secrets.camera_key, or the first key of the key file), decrypting with "
        "any configured key (secrets.previous_keys, or the key file's further lines). One "
        "transaction: all or nothing.",
    )
    rotate.add_argument("--config", type=Path, help="YAML settings file")
    rotate.add_argument(
        "--new-key",
        action="store_true",
        help="key file only (secrets.camera_key unset): generate a new key, re-encrypt with it "
        "and drop the old ones from the file. Stop the service first.",
    )
    rotate.set_defaults(handler=_secrets_rotate)
    new_key = ssub.add_parser("new-key", help="print a new key for secrets.camera_key")
    new_key.set_defaults(handler=_secrets_new_key)

    audit = sub.add_parser("audit", help="the audit log")
    asub = audit.add_subparsers(required=True, metavar="ACTION")
    verify = asub.add_parser(
        "verify",
        help="check the audit log's hash chain",
        description="Walk the audit log's hash chain and report every entry changed, removed "
        "or inserted since it was written (exit 1); check anchors held outside the database "
        "(the 'hash' and 'position' of audit.anchor events). Exit 0 when all hold.",
    )
    verify.add_argument("--config", type=Path, help="YAML settings file")
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        type=_anchor,
        metavar="HASH@POSITION",
        help="an audit.anchor event's hash and position; repeatable",
    )
    verify.set_defaults(handler=_audit_verify)
    _evidence_args(sub)
    return p


def _anchor(text: str) -> object:
    from storage.audit_chain import Anchor

    try:
        return Anchor.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _evidence_args(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evidence = sub.add_parser("evidence", help="evidence packages: the signing key, verification")
    esub = evidence.add_subparsers(required=True, metavar="ACTION")
    key = esub.add_parser("key", help="print the installation's public key that signs packages")
    key.add_argument("--config", type=Path, help="YAML settings file")
    key.add_argument("--pem", action="store_true", help="print only the PEM (to save as a file)")
    key.set_defaults(handler=_evidence_key)
    verify = esub.add_parser(
        "verify",
        help="check an evidence package offline",
        description="Check an evidence package without the server or its database: the "
        "manifest's signature, every file's size and SHA-256, no file missing or extra. Exit "
        "status 0 when everything matches, 1 when something does not, 2 when the package or "
        "key cannot be read.",
    )
    verify.add_argument("file", type=Path, help="the package (ZIP)")
    verify.add_argument(
        "--key",
        help="the installation's public key: a PEM file, or the base64 of its 32 raw bytes "
        "(GET /api/v1/evidence/key). Without it the key inside the package is used, which "
        "proves integrity but not origin.",
    )
    verify.set_defaults(handler=_evidence_verify)


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML settings file")
    p.add_argument("--host", help="bind address (default from settings: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default from settings: 8000)")
    p.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="all: API and cameras; api: API only; worker: cameras only",
    )


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # urllib3 logs each retry of the S3 client; our own error says what failed and what to do.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per webhook POST otherwise
    from ingest.redact import RedactingFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    updates: dict[str, object] = {}
    if getattr(args, "host", None) or getattr(args, "port", None):
        server = settings.server.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v}
        )
        updates["server"] = server
    return settings.model_copy(update=updates) if updates else settings


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)  # a bad setting fails here, before the heavy imports
    from cli.serve import run_server

    return run_server(settings, role=args.role)


def _demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from cli.serve import run_demo

    return run_demo(settings)


def _analyze(args: argparse.Namespace) -> int:
    from cli.analyze import run_analyze

    return run_analyze(args.file, as_json=args.json, fps=args.fps)


def _token_create(args: argparse.Namespace) -> int:
    from runtime.services import Services
    from storage.models import utcnow
    from storage.tokens import create_token

    settings = _settings(args)
    now = utcnow()
    expires_at = (
        args.expires(now)
        if args.expires
        else now + timedelta(seconds=settings.auth.lifetime_s(args.role))
    )
    services = Services.from_settings(settings)
    services.db.migrate()
    with services.db.session() as session:
        token, _ = create_token(session, args.role, args.name, args.grid_scope, expires_at)
    print(token)
    when = expires_at.isoformat(timespec="seconds") if expires_at else "never"
    print(f"expires: {when}", file=sys.stderr)  # stdout stays the token alone, for scripts
    return 0


def _secrets_new_key(_args: argparse.Namespace) -> int:
    from storage.secrets import new_key

    print(new_key())
    return 0


def _secrets_rotate(args: argparse.Namespace) -> int:
    from storage.db import Database
    from storage.secrets import rotate_keys

    settings = _settings(args)
    db = Database(settings.database_url, pool_size=1)
    try:
        db.migrate()
        report = rotate_keys(db, settings.secrets, settings.camera_key_file, args.new_key)
    finally:
        db.dispose()
    print(
        f"re-encrypted {report.rotated} stored secret(s) with the current key "
        f"({report.current} already were)"
    )
    if settings.secrets.previous_keys:
        print(
            "now remove secrets.previous_keys from the settings of every process and restart "
            "them: the old keys are no longer needed"
        )
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from cli.audit import run_verify

    return run_verify(_settings(args), args.anchor)


def _evidence_key(args: argparse.Namespace) -> int:
    from cli.evidence import print_key

    return print_key(_settings(args), pem_only=args.pem)


def _evidence_verify(args: argparse.Namespace) -> int:
    from cli.evidence import verify

    return verify(args.file, args.key)


if __name__ == "__main__":
    raise SystemExit(main())
