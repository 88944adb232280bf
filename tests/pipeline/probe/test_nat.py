"""Simulated NAT: deterministic, in-pool, rule order, no network."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.probe.nat import NatMapping

POOL = ipaddress.ip_network("203.0.113.0/28")


def test_default_rules_map_loopback_and_private_into_test_net_3() -> None:
    nat = NatMapping()
    for internal in ("127.0.0.1", "10.1.2.3", "172.20.0.9", "192.168.1.1"):
        external = nat.external_ip(internal, "api.test:443")
        assert external is not None
        address = ipaddress.ip_address(external)
        assert address in POOL and address not in (POOL.network_address, POOL.broadcast_address)
    v6 = nat.external_ip("::1", "api.test:443")
    assert v6 is not None and ipaddress.ip_address(v6) in ipaddress.ip_network("2001:db8::/124")


def test_public_addresses_and_unknowns() -> None:
    nat = NatMapping()
    assert nat.external_ip("198.51.100.7", "a:1") == "198.51.100.7"  # no rule: itself
    assert nat.external_ip(None, "a:1") is None
    assert nat.external_ip("not-an-ip", "a:1") is None
    assert nat.external_ip("not-an-ip", "a:1") is None  # cached negative


@given(
    st.ip_addresses(v=4, network="10.0.0.0/8").map(str),
    st.from_regex(r"[a-z]{1,10}\.test:[0-9]{2,4}", fullmatch=True),
)
def test_deterministic_and_in_pool(internal: str, upstream: str) -> None:
    first = NatMapping().external_ip(internal, upstream)
    assert first == NatMapping().external_ip(internal, upstream)
    assert first is not None and ipaddress.ip_address(first) in POOL


def test_stable_across_processes() -> None:
    code = (
        "from pipeline.probe.nat import NatMapping; "
        "print(NatMapping().external_ip('10.9.8.7', 'x:1'))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert runs == {f"{NatMapping().external_ip('10.9.8.7', 'x:1')}\n"}


def test_spreads_over_the_pool() -> None:
    nat = NatMapping()
    used = {nat.external_ip("127.0.0.1", f"upstream-{n}.test:443") for n in range(200)}
    assert len(used) == 14  # every usable address of the /28


def test_custom_rules_first_match_wins_and_single_address_pools() -> None:
    nat = NatMapping({"10.1.0.0/16": "198.51.100.7/32", "10.0.0.0/8": "198.51.100.64/30"})
    assert nat.external_ip("10.1.2.3", "a:1") == "198.51.100.7"
    assert nat.external_ip("10.2.2.3", "a:1") in {"198.51.100.65", "198.51.100.66"}
    assert nat.rules[0][0] == "10.1.0.0/16"


def test_bad_rules() -> None:
    with pytest.raises(ValueError):
        NatMapping({"10.0.0.0/8": "2001:db8::/64"})
    with pytest.raises(ValueError):
        NatMapping({"10.0.0.0/33": "198.51.100.0/24"})


def test_cache_is_bounded() -> None:
    nat = NatMapping(cache_size=10)
    for n in range(100):
        nat.external_ip("127.0.0.1", f"u{n}:1")
    assert len(nat._cache) <= 10
