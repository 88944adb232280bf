"""Simulated source NAT: the public address an outbound connection would egress from.

Nothing here touches the network: the external address is a label that lets operators group
calls the way a real NAT gateway would. Rules map an internal CIDR to a public pool; the first
rule whose network contains the internal address wins, and the pool address is picked by a
stable hash (CRC-32) of ``"<internal_ip>|<upstream>"``, so the same pair always maps to the
same address, in every process and every run. An address no rule covers egresses as itself.

The default rules map loopback and private ranges into documentation prefixes that are never
routed: ``203.0.113.0/28`` (TEST-NET-3) and ``2001:db8::/124``.
"""

from __future__ import annotations

import ipaddress
import threading
import zlib
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["DEFAULT_NAT_RULES", "NatMapping"]

DEFAULT_NAT_RULES: Final[tuple[tuple[str, str], ...]] = (
    ("127.0.0.0/8", "203.0.113.0/28"),
    ("10.0.0.0/8", "203.0.113.0/28"),
    ("172.16.0.0/12", "203.0.113.0/28"),
    ("192.168.0.0/16", "203.0.113.0/28"),
    ("::1/128", "2001:db8::/124"),
    ("fc00::/7", "2001:db8::/124"),
)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NatMapping:
    """CIDR -> public pool rules with a bounded cache of ``(internal_ip, upstream)`` lookups."""

    def __init__(
        self,
        rules: Mapping[str, str] | Iterable[tuple[str, str]] = DEFAULT_NAT_RULES,
        *,
        cache_size: int = 4096,
    ) -> None:
        pairs = rules.items() if isinstance(rules, Mapping) else rules
        compiled: list[tuple[_Network, int, int, int]] = []
        for internal, pool in pairs:
            inside = ipaddress.ip_network(internal, strict=False)
            public = ipaddress.ip_network(pool, strict=False)
            if inside.version != public.version:
                raise ValueError(f"NAT rule {internal} -> {pool} mixes IPv4 and IPv6")
            base, size = int(public.network_address), public.num_addresses
            if size > 2:  # skip network and broadcast addresses, like a real pool
                base, size = base + 1, size - 2
            compiled.append((inside, public.version, base, size))
        self._rules = tuple(compiled)
        self._cache: dict[tuple[str, str], str] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def rules(self) -> tuple[tuple[str, str], ...]:
        """The rules, as ``(internal CIDR, first pool address/size)`` strings, for display."""
        return tuple((str(net), f"{_addr(v, b)}+{n}") for net, v, b, n in self._rules)

    def external_ip(self, internal_ip: str | None, upstream: str) -> str | None:
        """The simulated public address for a connection from ``internal_ip`` to ``upstream``.

        ``None`` only when ``internal_ip`` is ``None`` or not an IP address.
        """
        if internal_ip is None:
            return None
        key = (internal_ip, upstream)
        hit = self._cache.get(key)
        if hit is not None:
            return hit or None  # "" caches "not an IP address"
        value = self._compute(internal_ip, upstream)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[key] = value or ""
        return value

    def _compute(self, internal_ip: str, upstream: str) -> str | None:
        try:
            address = ipaddress.ip_address(internal_ip.split("%", 1)[0])
        except ValueError:
            return None
        for network, version, base, size in self._rules:
            if address.version == version and address in network:
                index = zlib.crc32(f"{internal_ip}|{upstream}".encode()) % size
                return _addr(version, base + index)
        return str(address)


def _addr(version: int, value: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))
