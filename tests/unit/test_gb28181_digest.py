"""Digest authentication: known vectors, device header dialects, stateless nonces."""

from __future__ import annotations

import hashlib

import pytest

from ingest.gb28181 import DigestError
from ingest.gb28181.digest import (
    Authenticator,
    AuthResult,
    DigestChallenge,
    NonceSource,
    NonceState,
    authorization_header,
    digest_response,
    parse_authorization,
    parse_challenge,
    verify,
)

DEVICE = "34020000001320000001"
REALM = "3402000000"
URI = "sip:34020000002000000001@3402000000"
SECRET = b"0123456789abcdef-test-secret"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the response computation ------------------------------------------------------------------


def test_rfc2617_qop_auth_vector() -> None:
    # RFC 2617 §3.5, the published example.
    assert (
        digest_response(
            username="Mufasa",
            password="Circle Of Life",
            realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_no_qop_matches_an_independent_computation() -> None:
    nonce = "6553f1a0a91f3bd6f0c1f1c2d4e5f607"
    ha1, ha2 = md5(f"{DEVICE}:{REALM}:12345678"), md5(f"REGISTER:{URI}")
    expected = md5(f"{ha1}:{nonce}:{ha2}")
    got = digest_response(
        username=DEVICE, password="12345678", realm=REALM, nonce=nonce, method="REGISTER", uri=URI
    )
    assert got == expected


def test_qop_auth_matches_an_independent_computation() -> None:
    nonce, cnonce, nc = "6553f1a0a91f3bd6f0c1f1c2d4e5f607", "0a1b2c3d", "00000001"
    ha1, ha2 = md5(f"{DEVICE}:{REALM}:admin123"), md5(f"REGISTER:{URI}")
    expected = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    got = digest_response(
        username=DEVICE,
        password="admin123",
        realm=REALM,
        nonce=nonce,
        method="REGISTER",
        uri=URI,
        qop="auth",
        nc=nc,
        cnonce=cnonce,
    )
    assert got == expected


def test_sha256_is_supported_md5_is_the_default() -> None:
    kwargs = {
        "username": "u",
        "password": "p",
        "realm": "r",
        "nonce": "n",
        "method": "M",
        "uri": "x",
    }
    assert len(digest_response(**kwargs, algorithm="SHA-256")) == 64
    assert digest_response(**kwargs) == digest_response(**kwargs, algorithm="md5")
    with pytest.raises(DigestError, match="unsupported"):
        digest_response(**kwargs, algorithm="SM3")


# --- parsing the headers devices send ----------------------------------------------------------


def _response(nonce: str, *, password: str = "12345678", uri: str = URI, **qop: str) -> str:
    return digest_response(
        username=DEVICE,
        password=password,
        realm=REALM,
        nonce=nonce,
        method="REGISTER",
        uri=uri,
        **qop,
    )


NONCE = "6553f1a0a91f3bd6f0c1f1c2d4e5f607"
HIK = (
    f'Digest username="{DEVICE}", realm="{REALM}", nonce="{NONCE}", uri="{URI}", '
    f'response="{_response(NONCE)}", algorithm=MD5'
)
DAHUA_QOP = (
    f'Digest username="{DEVICE}",realm="{REALM}",nonce="{NONCE}",uri="{URI}",'
    f'response="{_response(NONCE, qop="auth", nc="00000001", cnonce="a1b2")}",'
    'algorithm=MD5,cnonce="a1b2",qop=auth,nc=00000001'
)
QUOTED_QOP = (
    f'digest  USERNAME="{DEVICE}" , Realm="{REALM}", nonce="{NONCE}", uri="{URI}", '
    f'response="{_response(NONCE, qop="auth", nc="00000001", cnonce="x")}", algorithm="MD5", '
    'qop="auth", nc=00000001, cnonce="x", opaque="", '
)
NO_ALGORITHM = (
    f'Digest\tusername={DEVICE}, realm={REALM}, nonce={NONCE}, uri="{URI}", '
    f"response={_response(NONCE).upper()}"
)


@pytest.mark.parametrize(
    ("header", "qop"),
    [(HIK, None), (DAHUA_QOP, "auth"), (QUOTED_QOP, "auth"), (NO_ALGORITHM, None)],
)
def test_device_dialects_parse_and_verify(header: str, qop: str | None) -> None:
    credentials = parse_authorization(header)
    assert (credentials.username, credentials.realm, credentials.uri) == (DEVICE, REALM, URI)
    assert (credentials.algorithm, credentials.qop) == ("MD5", qop)
    assert verify(credentials, password="12345678", method="REGISTER")
    assert not verify(credentials, password="wrong", method="REGISTER")
    assert not verify(credentials, password="12345678", method="MESSAGE")


def test_escaped_quotes_inside_values() -> None:
    header = HIK.replace(f'username="{DEVICE}"', 'username="a\\"b"')
    assert parse_authorization(header).username == 'a"b'


def test_the_header_uri_is_hashed_not_the_request_uri() -> None:
    # Devices hash the uri they wrote (here with ip:port), which may differ from ours.
    other_uri = "sip:34020000002000000001@198.51.100.10:5060"
    header = HIK.replace(f'uri="{URI}"', f'uri="{other_uri}"').replace(
        _response(NONCE), _response(NONCE, uri=other_uri)
    )
    assert verify(parse_authorization(header), password="12345678", method="REGISTER")


def test_a_non_ascii_response_fails_without_raising() -> None:
    header = HIK.replace(_response(NONCE), "ü" * 32)
    assert not verify(parse_authorization(header), password="12345678", method="REGISTER")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Basic YWRtaW46MTIzNDU=", "not a Digest"),
        ("", "not a Digest"),
        ("Digest", "without"),
        (HIK.replace(f', response="{_response(NONCE)}"', ""), "without response"),
        (HIK.replace(f'username="{DEVICE}", ', ""), "without username"),
        (HIK + ', qop=auth-int, nc=1, cnonce="c"', "qop"),
        (HIK + ", qop=auth", "qop"),
        (HIK.replace("algorithm=MD5", "algorithm=SHA-512"), "unsupported"),
        (HIK + ', opaque="unterminated', "bad digest parameter"),
        (HIK + ", =x", "bad digest parameter"),
        (HIK + ' x="a" y', "bad digest parameter"),
        ("Digest " + "a=b, " * 1000, "too long"),
    ],
)
def test_unusable_authorization_raises(header: str, reason: str) -> None:
    with pytest.raises(DigestError, match=reason):
        parse_authorization(header)


# --- challenges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("challenge", "text"),
    [
        (
            DigestChallenge(REALM, NONCE),
            f'Digest realm="{REALM}", nonce="{NONCE}", algorithm=MD5',
        ),
        (
            DigestChallenge(REALM, NONCE, qop=True, stale=True),
            f'Digest realm="{REALM}", nonce="{NONCE}", stale=true, algorithm=MD5, qop="auth"',
        ),
    ],
)
def test_challenge_headers(challenge: DigestChallenge, text: str) -> None:
    assert challenge.to_header() == text
    assert parse_challenge(text) == challenge


def test_parse_challenge_needs_realm_and_nonce() -> None:
    with pytest.raises(DigestError):
        parse_challenge(f'Digest realm="{REALM}"')


# --- stateless nonces -------------------------------------------------------------------------


def test_nonce_looks_like_an_md5_and_checks_in_another_process() -> None:
    clock = FakeClock()
    nonce = NonceSource(SECRET, clock=clock).new(REALM)
    assert len(nonce) == 32 and all(c in "0123456789abcdef" for c in nonce)
    other_process = NonceSource(SECRET, clock=clock)
    assert other_process.check(nonce, REALM) is NonceState.VALID


def test_nonce_ages_into_stale() -> None:
    clock = FakeClock()
    source = NonceSource(SECRET, ttl_s=300, clock=clock)
    nonce = source.new(REALM)
    clock.now += 300
    assert source.check(nonce, REALM) is NonceState.VALID
    clock.now += 1
    assert source.check(nonce, REALM) is NonceState.STALE


@pytest.mark.parametrize(
    "tamper",
    [
        lambda n: n[:-1] + ("0" if n[-1] != "0" else "1"),  # forged MAC
        lambda n: f"{int(n[:8], 16) + 1000:08x}" + n[8:],  # timestamp moved, MAC kept
        lambda n: n.upper(),
        lambda n: n[:31],
        lambda n: "",
        lambda n: "z" * 32,
        lambda n: "ｆ" * 32,
    ],
)
def test_forged_nonces_are_invalid(tamper: object) -> None:
    source = NonceSource(SECRET, clock=FakeClock())
    nonce = source.new(REALM)
    assert callable(tamper)
    assert source.check(tamper(nonce), REALM) is NonceState.INVALID


def test_nonce_is_bound_to_its_realm_and_secret() -> None:
    clock = FakeClock()
    nonce = NonceSource(SECRET, clock=clock).new(REALM)
    assert NonceSource(SECRET, clock=clock).check(nonce, "4401000000") is NonceState.INVALID
    assert (
        NonceSource(b"another-secret-of-16+", clock=clock).check(nonce, REALM) is NonceState.INVALID
    )


def test_nonce_from_the_future_is_accepted_only_within_the_skew() -> None:
    clock = FakeClock()
    source = NonceSource(SECRET, clock=clock, skew_s=5)
    nonce = source.new(REALM)
    clock.now -= 5  # another process whose clock is 5 s behind
    assert source.check(nonce, REALM) is NonceState.VALID
    clock.now -= 60
    assert source.check(nonce, REALM) is NonceState.INVALID


def test_short_secrets_are_refused() -> None:
    with pytest.raises(DigestError, match="16 bytes"):
        NonceSource(b"short")


# --- the registration flow ----------------------------------------------------------------------


@pytest.mark.parametrize("qop", [False, True])
def test_register_flow(qop: bool) -> None:
    clock = FakeClock()
    auth = Authenticator(REALM, NonceSource(SECRET, clock=clock, ttl_s=60), qop=qop)
    challenge = parse_challenge(auth.challenge())
    assert challenge.qop is qop and challenge.realm == REALM
    header = authorization_header(
        challenge, username=DEVICE, password="12345678", method="REGISTER", uri=URI
    )
    assert auth.check(header, password="12345678", method="REGISTER") is AuthResult.OK
    assert auth.check(header, password="87654321", method="REGISTER") is AuthResult.FAILED
    clock.now += 61
    assert auth.check(header, password="12345678", method="REGISTER") is AuthResult.STALE
    assert auth.check(header, password="87654321", method="REGISTER") is AuthResult.FAILED
    assert "stale=true" in auth.challenge(stale=True)


def test_foreign_realm_or_nonce_fails() -> None:
    clock = FakeClock()
    auth = Authenticator(REALM, NonceSource(SECRET, clock=clock))
    foreign = DigestChallenge(REALM, "0" * 32)
    header = authorization_header(
        foreign, username=DEVICE, password="p", method="REGISTER", uri=URI
    )
    assert auth.check(header, password="p", method="REGISTER") is AuthResult.FAILED
    other_realm = Authenticator("4401000000", auth.nonces)
    good = parse_challenge(other_realm.challenge())
    header = authorization_header(good, username=DEVICE, password="p", method="REGISTER", uri=URI)
    assert auth.check(header, password="p", method="REGISTER") is AuthResult.FAILED


def test_check_raises_on_garbage() -> None:
    auth = Authenticator(REALM, NonceSource(SECRET))
    with pytest.raises(DigestError):
        auth.check("Digest garbage", password="p", method="REGISTER")
