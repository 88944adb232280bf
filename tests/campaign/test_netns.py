"""LossyHost for real (we are root here and in CI): a namespace, a veth, nftables loss.

A tiny HTTP server runs inside the namespace and is reached from the root namespace over the
veth with httpx; 30 % loss shows as retransmission delays and timeouts, then goes away; after
the block (also after an exception or Ctrl-C) no namespace, link or process is left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.campaign.netns import LOSS_TABLE, LossyHost, NetnsError, available

_TAG = f"ewt{os.getpid() % 10000}"


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return {ns["name"] for ns in json.loads(out or "[]")}


def links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def assert_nothing_left(prefix: str) -> None:
    assert prefix not in namespaces()
    assert not {name for name in links() if name.startswith(prefix)}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LossyHost, str]]:
    """A LossyHost with `python -m http.server` inside it, and the server's URL."""
    (tmp_path / "ok").write_bytes(b"ok")
    with LossyHost(f"{_TAG}s") as host:
        port = 8000
        host.run_in(
            [sys.executable, "-m", "http.server", "--bind", host.address, str(port)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://{host.address}:{port}/ok"
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(url, timeout=0.5, trust_env=False).content == b"ok":
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield host, url
    assert_nothing_left(f"{_TAG}s")


def short_requests(url: str, count: int, timeout_s: float) -> list[float | None]:
    """Each request on a new connection (http.server closes it): seconds taken, None failed."""
    taken: list[float | None] = []
    for _ in range(count):
        began = time.monotonic()
        try:
            response = httpx.get(url, timeout=timeout_s, trust_env=False)
            taken.append(time.monotonic() - began if response.content == b"ok" else None)
        except httpx.HTTPError:
            taken.append(None)
    return taken


def test_available_here() -> None:
    assert available() == (True, "")


def test_reachable_over_the_veth_and_nowhere_else(served: tuple[LossyHost, str]) -> None:
    host, url = served
    assert host.name in namespaces()
    assert host.address.startswith("10.213.") and host.root_address.startswith("10.213.")
    routes = subprocess.run(
        host.wrap(["ip", "-j", "-4", "route"]), capture_output=True, text=True, check=True
    ).stdout
    # Only the /30 of the veth: no default route, no way out of the machine.
    subnet = ipaddress.IPv4Network(f"{host.address}/30", strict=False)
    assert [r["dst"] for r in json.loads(routes)] == [str(subnet)]
    assert ipaddress.IPv4Address(host.root_address) in subnet
    assert all(t is not None and t < 0.2 for t in short_requests(url, 5, 1.0))


def test_loss_delays_and_fails_requests_then_clears(served: tuple[LossyHost, str]) -> None:
    host, url = served
    host.set_loss(30)
    assert host.loss_percent == 30
    listed = subprocess.run(
        host.wrap(["nft", "list", "table", "inet", LOSS_TABLE]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listed.count("numgen random mod 10000 < 3000") == 2
    # A TCP exchange is ~8 packets: at 30 % loss nearly every one loses a packet and waits
    # for a retransmission (>= 200 ms RTO, 1 s for a SYN) or times out.
    lossy = short_requests(url, 10, 0.5)
    hit = [t for t in lossy if t is None or t >= 0.18]
    assert len(hit) >= 5, lossy
    assert host.dropped_packets() > 0
    host.set_loss(0.5)  # replaces the earlier table
    assert host.loss_percent == 0.5
    host.clear_loss()
    assert host.dropped_packets() == 0
    clean = short_requests(url, 10, 1.0)
    # Every request answers; on a loaded machine one may be slow, not retransmit-slow as most.
    assert all(t is not None for t in clean), clean
    assert sorted(t for t in clean if t is not None)[len(clean) // 2] < 0.2, clean
    host.clear_loss()  # twice is fine


def test_cleanup_after_an_exception_kills_processes_inside() -> None:
    prefix = f"{_TAG}e"
    with pytest.raises(RuntimeError, match="boom"), LossyHost(prefix) as host:
        ours = host.run_in(["sleep", "60"])
        # Started by a caller with wrap(): not tracked, still removed with the namespace.
        theirs = subprocess.Popen(host.wrap(["sleep", "60"]))
        host.set_loss(50)
        raise RuntimeError("boom")
    assert ours.poll() is not None
    assert theirs.wait(5) is not None
    assert_nothing_left(prefix)


def test_cleanup_after_keyboard_interrupt() -> None:
    prefix = f"{_TAG}k"
    with pytest.raises(KeyboardInterrupt), LossyHost(prefix) as host:
        process = host.run_in(["sleep", "60"])
        raise KeyboardInterrupt
    assert process.poll() is not None
    assert_nothing_left(prefix)


def test_a_stale_namespace_of_the_same_prefix_is_replaced() -> None:
    prefix = f"{_TAG}c"
    subprocess.run(["ip", "netns", "add", prefix], check=True)
    subprocess.run(
        ["ip", "link", "add", f"{prefix}-out", "type", "veth", "peer", "name", f"{prefix}-x"],
        check=True,
    )
    try:
        with LossyHost(prefix) as host:
            assert host.name in namespaces()
            assert f"{prefix}-x" not in links()
    finally:
        subprocess.run(["ip", "netns", "del", prefix], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{prefix}-out"], capture_output=True)
    assert_nothing_left(prefix)


def test_two_hosts_get_distinct_subnets() -> None:
    with LossyHost(f"{_TAG}a") as one, LossyHost(f"{_TAG}b") as two:
        first = ipaddress.IPv4Network(f"{one.address}/30", strict=False)
        second = ipaddress.IPv4Network(f"{two.address}/30", strict=False)
        assert not first.overlaps(second)
    assert_nothing_left(f"{_TAG}a")
    assert_nothing_left(f"{_TAG}b")


@pytest.mark.parametrize("prefix", ["", "1abc", "UPPER", "much-too-long", "a b"])
def test_bad_prefix_is_named(prefix: str) -> None:
    with pytest.raises(ValueError, match="name_prefix"):
        LossyHost(prefix)


def test_bad_loss_percent_is_named() -> None:
    with LossyHost(f"{_TAG}p") as host:
        for percent in (-1, 101, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="loss percent"):
                host.set_loss(percent)


def test_loss_needs_the_host_up() -> None:
    with pytest.raises(NetnsError, match="is not up"):
        LossyHost(f"{_TAG}n").set_loss(10)


def test_available_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert available() == (False, "needs root for network namespaces (running as uid 1000)")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda c: None if c == "nft" else real_which(c))
    assert available(install=False) == (False, "`nft` is not installed (Debian package nftables)")
    monkeypatch.setattr(shutil, "which", lambda c: None)
    assert available(install=False) == (False, "`ip` (iproute2) is not installed")


def test_entering_where_it_cannot_run_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsError, match="needs root"), LossyHost(f"{_TAG}r"):
        pass
    assert_nothing_left(f"{_TAG}r")
