"""Source addresses: the allowlist, trusted proxies and `X-Forwarded-For` (pure code)."""

from __future__ import annotations

import ipaddress

import pytest

from service.http.damping import FailureDamper
from service.sources import SourcePolicy, parse_address, parse_networks

PROXIES = parse_networks("10.0.0.0/8, 192.168.1.1, fd00::/8")
BEHIND_PROXIES = SourcePolicy(trusted_proxies=PROXIES)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # An untrusted peer: its header is ignored, forged or not.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        ("203.0.113.9", [], "203.0.113.9"),
        # A trusted proxy: the hop it reports.
        ("10.0.0.5", ["198.51.100.1"], "198.51.100.1"),
        # A chain of trusted proxies: the right-most untrusted hop.
        ("10.0.0.5", ["198.51.100.1, 10.1.1.1, 192.168.1.1"], "198.51.100.1"),
        # A client that forges hops to the left gains nothing.
        ("10.0.0.5", ["1.2.3.4, 198.51.100.1"], "198.51.100.1"),
        # Several headers form one chain, in order.
        ("10.0.0.5", ["1.2.3.4", "198.51.100.1, 10.1.1.1"], "198.51.100.1"),
        # Only trusted hops: the left-most of them.
        ("10.0.0.5", ["10.2.2.2, 10.1.1.1"], "10.2.2.2"),
        # IPv6, bracketed, with ports, and IPv4-mapped.
        ("fd00::1", ["2001:db8::7"], "2001:db8::7"),
        ("fd00::1", ["[2001:db8::7]:4711"], "2001:db8::7"),
        ("10.0.0.5", ["198.51.100.1:5555"], "198.51.100.1"),
        ("::ffff:10.0.0.5", ["198.51.100.1"], "198.51.100.1"),
        # Malformed hops end the walk at the last address known to be true.
        ("10.0.0.5", ["not-an-ip"], "10.0.0.5"),
        ("10.0.0.5", ["198.51.100.1, garbage, 10.1.1.1"], "10.1.1.1"),
        ("10.0.0.5", [""], "10.0.0.5"),
        ("10.0.0.5", ["[2001:db8::7"], "10.0.0.5"),
        ("10.0.0.5", ["198.51.100.1\r\nX-Evil: 1"], "10.0.0.5"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], client: str) -> None:
    assert BEHIND_PROXIES.client(peer, forwarded) == ipaddress.ip_address(client)


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert SourcePolicy().client("10.0.0.5", ["198.51.100.1"]) == ipaddress.ip_address("10.0.0.5")
    assert SourcePolicy().client(None, []) is None


def test_the_allowlist() -> None:
    policy = SourcePolicy(allowed=parse_networks("198.51.100.0/24, 2001:db8::/32"))
    assert policy.admits(ipaddress.ip_address("198.51.100.77"))
    assert policy.admits(ipaddress.ip_address("2001:db8::1"))
    assert not policy.admits(ipaddress.ip_address("198.51.101.1"))
    assert not policy.admits(None)
    assert SourcePolicy().admits(None)  # off by default


@pytest.mark.parametrize("text", ["10.0.0.0/33", "banana", "1.2.3.4/8/2"])
def test_bad_networks_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="is not an address or CIDR"):
        parse_networks(f"10.0.0.0/8, {text}")


def test_parse_address_forms() -> None:
    assert parse_address(" 1.2.3.4 ") == ipaddress.ip_address("1.2.3.4")
    assert parse_address("1.2.3.4:80") == ipaddress.ip_address("1.2.3.4")
    assert parse_address("[::1]") == ipaddress.ip_address("::1")
    assert parse_address("::1") == ipaddress.ip_address("::1")
    assert parse_address("unknown") is None


def test_damping_counts_failures_per_source_in_windows() -> None:
    damper = FailureDamper(limit=2, window=10)
    assert damper.fail("a", 0) is None
    assert damper.fail("a", 1) is None
    assert damper.fail("a", 2) == 8  # damped until the window ends
    assert damper.fail("b", 2) is None  # another source is not affected
    assert damper.fail("a", 10.5) is None  # a new window
    assert FailureDamper(limit=0, window=10).fail("a", 0) is None
