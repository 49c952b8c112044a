"""The egress policy (ingest/egress.py): which addresses cameras and webhooks may reach."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from config.errors import ConfigError
from config.settings import load_settings
from ingest.egress import EgressPolicy, EgressRefused, Purpose

CAMERA, WEBHOOK = Purpose.CAMERA, Purpose.WEBHOOK


@pytest.mark.parametrize(
    ("address", "purpose", "why"),
    [
        ("169.254.169.254", CAMERA, "a cloud metadata address"),
        ("169.254.169.254", WEBHOOK, "a cloud metadata address"),
        ("100.100.100.200", CAMERA, "a cloud metadata address"),  # Alibaba Cloud
        ("192.0.0.192", WEBHOOK, "a cloud metadata address"),  # Oracle Cloud (legacy)
        ("fd00:ec2::254", CAMERA, "a cloud metadata address"),  # AWS over IPv6
        ("::ffff:169.254.169.254", CAMERA, "a cloud metadata address"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", WEBHOOK, "a cloud metadata address"),  # NAT64
        ("169.254.1.1", CAMERA, "a link-local address"),
        ("fe80::1", CAMERA, "a link-local address"),
        ("127.0.0.1", WEBHOOK, "a loopback address (this host)"),
        ("127.8.9.10", WEBHOOK, "a loopback address (this host)"),
        ("::1", WEBHOOK, "a loopback address (this host)"),
        ("::ffff:127.0.0.1", WEBHOOK, "a loopback address (this host)"),
        ("0.0.0.0", WEBHOOK, "an unspecified address (this host)"),
        ("::", WEBHOOK, "an unspecified address (this host)"),
        ("127.0.0.1", CAMERA, None),  # a local RTSP relay
        ("0.0.0.0", CAMERA, None),
        ("10.1.2.3", WEBHOOK, None),
        ("192.168.1.64", CAMERA, None),
        ("100.100.100.201", CAMERA, None),  # beside Alibaba's metadata address
        ("2001:db8::1", WEBHOOK, None),
    ],
)
def test_default_refusals(address: str, purpose: Purpose, why: str | None) -> None:
    assert EgressPolicy().refusal(ipaddress.ip_address(address), purpose) == why


def test_the_allow_list_lets_chosen_ranges_through() -> None:
    policy = EgressPolicy(allow=(ipaddress.ip_network("127.0.0.0/8"),))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), WEBHOOK) is None
    assert policy.refusal(ipaddress.ip_address("::1"), WEBHOOK) is not None  # not in it
    meta = EgressPolicy(allow=(ipaddress.ip_network("169.254.169.254/32"),))
    assert meta.refusal(ipaddress.ip_address("::ffff:169.254.169.254"), CAMERA) is None


def test_a_refusal_names_the_field_the_address_and_the_setting() -> None:
    with pytest.raises(EgressRefused) as caught:
        EgressPolicy().check_url("rtsp_url", "rtsp://u:pw@169.254.169.254:554/x", CAMERA)
    assert str(caught.value) == (
        "rtsp_url: host 169.254.169.254 resolves to 169.254.169.254, a cloud metadata "
        "address; allow it with XUELIANG_EGRESS__ALLOW=169.254.169.254/32"
    )
    assert caught.value.field == "rtsp_url" and "pw" not in str(caught.value)


def test_names_are_judged_by_what_they_resolve_to() -> None:
    policy = EgressPolicy()
    with pytest.raises(EgressRefused, match=r"host localhost resolves to 127.0.0.1, a loopback"):
        policy.check("url", "localhost", WEBHOOK)
    with pytest.raises(EgressRefused, match=r"localhost resolves to 127.0.0.1"):
        asyncio.run(policy.check_async("url", "localhost", WEBHOOK))
    policy.check("rtsp_url", "localhost", CAMERA)
    policy.check("url", "no-such-host.invalid", WEBHOOK)  # unresolved: the connect fails
    with pytest.raises(EgressRefused, match=r"metadata.google.internal is a cloud metadata"):
        policy.check("onvif.host", "Metadata.Google.Internal.", CAMERA)


def test_many_hosts_are_resolved_at_once() -> None:
    found = EgressPolicy().resolve_all(["localhost", "192.0.2.7", "no-such-host.invalid"])
    assert found["localhost"] == [ipaddress.ip_address("127.0.0.1")]
    assert found["192.0.2.7"] == [ipaddress.ip_address("192.0.2.7")]
    assert "no-such-host.invalid" not in found


def test_the_allow_setting_takes_cidrs_from_the_environment() -> None:
    settings = load_settings(environ={"XUELIANG_EGRESS__ALLOW": "127.0.0.0/8, fd00::/8"})
    assert settings.egress.allow == ("127.0.0.0/8", "fd00::/8")
    policy = EgressPolicy.from_settings(settings)
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), WEBHOOK) is None
    with pytest.raises(ConfigError, match=r"egress\.allow"):
        load_settings(environ={"XUELIANG_EGRESS__ALLOW": "localhost"})
