"""HTTP digest authentication (RFC 2617 / RFC 7616, MD5) as GB/T 28181 devices use it.

A device's first REGISTER gets ``401`` with ``WWW-Authenticate: Digest realm=…, nonce=…``;
it registers again with ``Authorization: Digest username="<device id>", …, response=…``.
GB/T 28181-2016 §9.1.2.1 uses MD5 digest; most devices answer without ``qop``, some
(newer Hikvision/Dahua firmware) with ``qop=auth``. Both are accepted.

Nonces are **stateless**: ``nonce = hex(timestamp) + hex(HMAC-SHA256(secret, timestamp,
realm))[:24]``, 32 hex digits like an MD5 (cheap devices have fixed-size nonce buffers and
choke on long or punctuated nonces). Any process holding the secret can check a nonce and
its age without shared state; an expired one gets a fresh challenge with ``stale=true`` so
the device re-registers without treating it as a wrong password. The price of statelessness:
a captured ``Authorization`` can be replayed until its nonce expires (``ttl_s``), which
registration over a LAN with short TTLs accepts.

The client side (:func:`digest_response`, :func:`authorization_header`) exists for tests
and for the device simulator.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ingest.gb28181 import DigestError

__all__ = [
    "AuthResult",
    "Authenticator",
    "DigestChallenge",
    "DigestCredentials",
    "NonceSource",
    "NonceState",
    "authorization_header",
    "digest_response",
    "parse_authorization",
    "parse_challenge",
    "verify",
]

#: Longest ``Authorization``/``WWW-Authenticate`` value parsed (real ones are ~300 bytes).
MAX_HEADER_LENGTH = 4096
_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
_PARAM = re.compile(r'[\s,]*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')
_NONCE = re.compile(r"[0-9a-f]{32}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_params(value: str) -> dict[str, str]:
    """``Digest a="x", b=y`` → ``{"a": "x", "b": "y"}``; keys lower-cased, first one wins."""
    if len(value) > MAX_HEADER_LENGTH:
        raise DigestError("digest header too long")
    scheme, rest = [*value.strip().split(None, 1), "", ""][:2]
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest header: {scheme[:20]!r}")
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip().rstrip(", \t")
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            raise DigestError(f"bad digest parameter at {rest[pos : pos + 30]!r}")
        raw = match.group(2)
        unquoted = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        params.setdefault(match.group(1).lower(), unquoted)
        pos = match.end()
    return params


def _algorithm(name: str | None) -> str:
    algorithm = (name or "MD5").upper()
    if algorithm not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm[:20]!r}")
    return algorithm


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A ``WWW-Authenticate: Digest`` challenge."""

    realm: str
    nonce: str
    qop: bool = False
    stale: bool = False
    algorithm: str = "MD5"
    opaque: str | None = None

    def to_header(self) -> str:
        """The header value, in the parameter order devices are tested against."""
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append('qop="auth"')
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> DigestChallenge:
    """Parse a ``WWW-Authenticate`` value (the client side)."""
    params = _parse_params(value)
    if "realm" not in params or "nonce" not in params:
        raise DigestError("challenge without realm or nonce")
    qops = {q.strip().lower() for q in params.get("qop", "").split(",")}
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        qop="auth" in qops,
        stale=params.get("stale", "").lower() == "true",
        algorithm=_algorithm(params.get("algorithm")),
        opaque=params.get("opaque"),
    )


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """A parsed ``Authorization: Digest`` header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_authorization(value: str) -> DigestCredentials:
    """Parse an ``Authorization`` value; quoted or bare parameters, any order and case.

    Devices differ: ``algorithm=MD5`` bare or quoted, ``qop="auth"`` quoted (wrong but
    common), no spaces after commas. Raises :class:`DigestError` when a parameter the
    check needs is missing or the syntax is unusable.
    """
    params = _parse_params(value)
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
    if missing:
        raise DigestError(f"Authorization without {', '.join(missing)}")
    qop = params.get("qop") or None
    if qop is not None and (
        qop.lower() != "auth" or not params.get("nc") or "cnonce" not in params
    ):
        raise DigestError(f"unsupported qop {qop[:20]!r} or qop=auth without nc/cnonce")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=_algorithm(params.get("algorithm")),
        qop=qop.lower() if qop else None,
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
    )


def digest_response(
    *,
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    algorithm: str = "MD5",
) -> str:
    """The ``response`` value (RFC 2617 §3.2.2.1; RFC 7616 for SHA-256), lower-case hex."""
    digest = _HASHES[_algorithm(algorithm)]
    ha1 = digest(f"{username}:{realm}:{password}".encode())
    ha2 = digest(f"{method}:{uri}".encode())
    if qop is None:
        return digest(f"{ha1}:{nonce}:{ha2}".encode())
    return digest(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def authorization_header(
    challenge: DigestChallenge, *, username: str, password: str, method: str, uri: str
) -> str:
    """The ``Authorization`` value a device sends back for ``challenge``."""
    qop = "auth" if challenge.qop else None
    nc = "00000001" if challenge.qop else None
    cnonce = secrets.token_hex(8) if challenge.qop else None
    response = digest_response(
        username=username,
        password=password,
        realm=challenge.realm,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        algorithm=challenge.algorithm,
    )
    fields = [("username", username), ("realm", challenge.realm), ("nonce", challenge.nonce)]
    fields += [("uri", uri), ("response", response)]
    text = ", ".join(f"{k}={_quote(v)}" for k, v in fields) + f", algorithm={challenge.algorithm}"
    if qop is not None and nc is not None and cnonce is not None:
        text += f", cnonce={_quote(cnonce)}, qop={qop}, nc={nc}"
    return "Digest " + text


def verify(credentials: DigestCredentials, *, password: str, method: str) -> bool:
    """Whether ``credentials`` prove knowledge of ``password`` for a ``method`` request.

    Hashes the ``uri`` the device put in the header, not the Request-URI: devices differ
    on the host part (``@3402000000`` vs ``@ip:port``) and hashed what they wrote.
    Compared in constant time.
    """
    expected = digest_response(
        username=credentials.username,
        password=password,
        realm=credentials.realm,
        nonce=credentials.nonce,
        method=method,
        uri=credentials.uri,
        qop=credentials.qop,
        nc=credentials.nc,
        cnonce=credentials.cnonce,
        algorithm=credentials.algorithm,
    )
    # As bytes: compare_digest refuses str with non-ASCII characters (a hostile response).
    return hmac.compare_digest(expected.encode(), credentials.response.encode())


class NonceState(enum.Enum):
    """What :meth:`NonceSource.check` found."""

    VALID = "valid"
    STALE = "stale"  # ours, but older than the TTL
    INVALID = "invalid"  # not ours (forged, other realm, other secret, from the future)


class NonceSource:
    """Stateless nonces: a timestamp authenticated by HMAC, checkable by any process.

    ``secret`` must be shared by every process of an installation and kept private.
    ``clock`` (wall-clock seconds, shared across processes) is injectable for tests.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        skew_s: float = 5.0,
    ) -> None:
        if len(secret) < 16:
            raise DigestError("the nonce secret needs at least 16 bytes")
        self._secret, self._ttl_s, self._clock, self._skew_s = secret, ttl_s, clock, skew_s

    def _mac(self, stamp: str, realm: str) -> str:
        message = f"{stamp}:{realm}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:24]

    def new(self, realm: str) -> str:
        """A nonce for ``realm``, valid for ``ttl_s`` seconds."""
        stamp = f"{int(self._clock()) & 0xFFFFFFFF:08x}"
        return stamp + self._mac(stamp, realm)

    def check(self, nonce: str, realm: str) -> NonceState:
        """Whether ``nonce`` was made by :meth:`new` for ``realm`` and is still fresh."""
        if not _NONCE.fullmatch(nonce):
            return NonceState.INVALID
        stamp, mac = nonce[:8], nonce[8:]
        if not hmac.compare_digest(mac, self._mac(stamp, realm)):
            return NonceState.INVALID
        age = (int(self._clock()) - int(stamp, 16)) & 0xFFFFFFFF  # survives the 2106 wrap
        if age > 0x7FFFFFFF:  # from the future: allowed only within the clock skew
            return NonceState.VALID if 0x100000000 - age <= self._skew_s else NonceState.INVALID
        return NonceState.VALID if age <= self._ttl_s else NonceState.STALE


class AuthResult(enum.Enum):
    """The outcome of :meth:`Authenticator.check`."""

    OK = "ok"
    STALE = "stale"  # right password, expired nonce: challenge again with stale=true
    FAILED = "failed"  # wrong password, foreign nonce, other realm: challenge again


@dataclass(frozen=True, slots=True)
class Authenticator:
    """The platform's side: challenges and checks for one realm (the SIP domain)."""

    realm: str
    nonces: NonceSource
    qop: bool = False

    def challenge(self, *, stale: bool = False) -> str:
        """A ``WWW-Authenticate`` value with a fresh nonce."""
        return DigestChallenge(self.realm, self.nonces.new(self.realm), self.qop, stale).to_header()

    def check(self, authorization: str, *, password: str, method: str) -> AuthResult:
        """Check an ``Authorization`` header value; raises :class:`DigestError` if unparseable.

        The caller looks the password up by :attr:`DigestCredentials.username` (use
        :func:`parse_authorization` first) and decides whether that username must equal
        the From user.
        """
        credentials = parse_authorization(authorization)
        if credentials.realm != self.realm:
            return AuthResult.FAILED
        state = self.nonces.check(credentials.nonce, self.realm)
        if state is NonceState.INVALID or not verify(credentials, password=password, method=method):
            return AuthResult.FAILED
        return AuthResult.OK if state is NonceState.VALID else AuthResult.STALE
