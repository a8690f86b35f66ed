"""Network rules shared by the HTTP side and the realtime side: trusted proxies, the client's
real address behind them, and address allowlists (server API, metrics). Neither proxy/ nor
realtime/ owns them, so neither imports the other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tornado.httputil import HTTPHeaders

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Which peers are proxies whose forwarding headers are believed (``proxy.trusted_proxies``),
    and so who the client really is."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted = parse_networks(trusted_proxies)

    def is_trusted(self, peer: str) -> bool:
        return bool(self._trusted) and in_networks(peer, self._trusted)

    def client_ip(self, peer: str, headers: HTTPHeaders) -> str:
        """The client's address: the peer itself or, when the peer is a trusted proxy, the
        nearest address in ``X-Forwarded-For`` that is not one (``X-Real-IP`` without it).
        Access logs show it, and the metrics and API allowlists check it, so a request that
        nginx forwards from the internet is not taken for a local one."""
        if not self.is_trusted(peer):
            return peer
        hops = [
            hop.strip()
            for value in headers.get_list("X-Forwarded-For")
            for hop in value.split(",")
            if hop.strip()
        ]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else headers.get("X-Real-IP", "").strip() or peer


def in_networks(address: str, networks: Iterable[IPNetwork]) -> bool:
    """Whether ``address`` (an IP; IPv4-mapped IPv6 counts as IPv4) is in one of ``networks``;
    anything that is not an IP address is in none."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def parse_networks(networks: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(n, strict=False) for n in networks]
