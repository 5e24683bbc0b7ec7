"""Who sent a request: the peer, or behind trusted proxies the right-most untrusted hop.

`X-Forwarded-For` is believed only as far as the proxies that wrote it are trusted:
walking the chain from the peer leftwards, each hop is accepted while the one after it
is a trusted proxy. A forged header from an untrusted peer therefore changes nothing,
and a malformed hop ends the walk at the last address that is known to be true.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs or addresses; raises ValueError naming the bad entry."""
    networks = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an address or CIDR") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as written in a header hop: bare, `[v6]`, `[v6]:port` or `v4:port`."""
    value = text.strip()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """The allowlist and the trusted proxies; an empty allowlist lets every source in."""

    allowed: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> Address | None:
        """The client's address, or None when even the peer is unknown."""
        current = parse_address(peer) if peer else None
        if current is None or not self.trusted_proxies:
            return current
        hops = [hop for header in forwarded_for for hop in header.split(",")]
        while _within(current, self.trusted_proxies) and hops:
            previous = parse_address(hops.pop())
            if previous is None:
                break
            current = previous
        return current

    def admits(self, client: Address | None) -> bool:
        """Whether the allowlist lets `client` in."""
        if not self.allowed:
            return True
        return client is not None and _within(client, self.allowed)
