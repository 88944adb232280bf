"""A "host" in its own network namespace, where the campaign injects real packet loss.

``with LossyHost("ewcamp") as host:`` makes the namespace ``ewcamp`` and a veth pair: one end
(``ewcamp-out``) in the root namespace with ``host.root_address``, the other (``ewcamp-in``)
inside with ``host.address``, on a private /30 of 10.213.0.0/16 that no address or route of
the root namespace touches. The namespace has no other link and no default route: its
processes reach the root namespace's veth address and nothing else. ``host.run_in(argv)``
starts a process inside (``host.wrap(argv)`` gives the argv, for callers that start it);
``host.set_loss(10)`` installs an nftables table inside that drops a random 10 % of the
packets on the namespace's input and output hooks (so both directions lose), and
``host.clear_loss()`` removes it.

On exit (also after an exception or Ctrl-C) everything made is removed: the processes left
inside the namespace (SIGTERM, then SIGKILL), the nftables table, the namespace and both veth
ends. A namespace of the same name left by a run that crashed is removed on entry.

It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), ``ip`` and ``nft``; :func:`available`
says whether it can run here and why not, and installs Debian's ``nftables`` when ``nft`` is
missing and we are root. Where it cannot run, packet loss is "not run", never passed.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import zlib
from collections.abc import Sequence
from typing import Any, Final, Self

__all__ = ["LOSS_TABLE", "LossyHost", "NetnsError", "available"]

LOSS_TABLE: Final = "egresswatch_loss"
_POOL: Final = ipaddress.IPv4Network("10.213.0.0/16")
# Namespace name = prefix, veth names = prefix + "-out" / "-in": at most 15 bytes (IFNAMSIZ).
_PREFIX: Final = re.compile(r"[a-z][a-z0-9-]{0,10}")
_CAP_NET_ADMIN: Final = 12
_CAP_SYS_ADMIN: Final = 21
_COMMAND_TIMEOUT_S: Final = 30.0


class NetnsError(RuntimeError):
    """A namespace step failed; the message names the command and what it printed."""


def available(*, install: bool = True) -> tuple[bool, str]:
    """``(True, "")`` when :class:`LossyHost` can run here, else ``(False, why not)``."""
    if os.geteuid() != 0:
        return False, f"needs root for network namespaces (running as uid {os.geteuid()})"
    missing = [c for c in (_CAP_NET_ADMIN, _CAP_SYS_ADMIN) if not _has_capability(c)]
    if missing:
        return False, f"root without capabilities {missing} (CAP_NET_ADMIN=12, CAP_SYS_ADMIN=21)"
    if shutil.which("ip") is None:
        return False, "`ip` (iproute2) is not installed"
    if shutil.which("nft") is None and install:
        _install_nftables()
    if shutil.which("nft") is None:
        return False, "`nft` is not installed (Debian package nftables)"
    return True, ""


def _has_capability(bit: int) -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return False


def _install_nftables() -> None:
    if shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nftables"]
    for argv in (install, ["apt-get", "update", "-qq"], install):
        # The first install works when the package lists are fresh; update only if not.
        done = subprocess.run(argv, env=env, capture_output=True, timeout=600, check=False)  # noqa: S603
        if argv is install and done.returncode == 0:
            return


class LossyHost:
    """A network namespace joined to the root one by a veth pair; see the module doc."""

    def __init__(self, name_prefix: str = "ewcamp") -> None:
        if not _PREFIX.fullmatch(name_prefix):
            raise ValueError(
                f"name_prefix {name_prefix!r}: 1-11 characters of a-z, 0-9 and '-', "
                "starting with a letter (veth names are limited to 15 bytes)"
            )
        self.name = name_prefix
        self.outer_link = f"{name_prefix}-out"
        self.inner_link = f"{name_prefix}-in"
        self.address = ""
        """The namespace's address (servers inside listen on it)."""
        self.root_address = ""
        """The root namespace's end of the veth (the only peer the namespace can reach)."""
        self.loss_percent = 0.0
        self._processes: list[subprocess.Popen[bytes]] = []
        self._entered = False

    # ------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        ok, reason = available()
        if not ok:
            raise NetnsError(f"cannot make network namespace {self.name!r}: {reason}")
        self._remove_everything()  # a namespace left by a crashed run of the same prefix
        self._entered = True
        try:
            subnet = self._free_subnet()
            root_ip, ns_ip = list(subnet.hosts())
            self.root_address, self.address = str(root_ip), str(ns_ip)
            _ip("netns", "add", self.name)
            _ip("link", "add", self.outer_link, "type", "veth", "peer", "name", self.inner_link,
                "netns", self.name)  # fmt: skip
            _ip("addr", "add", f"{root_ip}/{subnet.prefixlen}", "dev", self.outer_link)
            _ip("link", "set", self.outer_link, "up")
            _ip("-n", self.name, "addr", "add", f"{ns_ip}/{subnet.prefixlen}",
                "dev", self.inner_link)  # fmt: skip
            _ip("-n", self.name, "link", "set", self.inner_link, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
            self.clear_loss()  # proves nftables works in the namespace before anyone relies on it
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove everything this host made; idempotent."""
        if not self._entered:
            return
        for process in self._processes:
            _terminate(process)
        self._processes.clear()
        self._remove_everything()
        self.address = self.root_address = ""
        self.loss_percent = 0.0
        self._entered = False

    def _remove_everything(self) -> None:
        if self.name in _namespaces():
            pids = _run(["ip", "netns", "pids", self.name], check=False).split()
            _kill_all([int(pid) for pid in pids if pid.isdigit()])
            _run(["ip", "netns", "exec", self.name, "nft", "delete", "table", "inet", LOSS_TABLE],
                 check=False)  # fmt: skip
            _run(["ip", "netns", "del", self.name], check=False)
        # Deleting the namespace deletes the inner end and with it the outer one; this covers a
        # crash between `link add` and the move into the namespace.
        if _link_exists(self.outer_link):
            _run(["ip", "link", "del", self.outer_link], check=False)
        if self.name in _namespaces():
            raise NetnsError(f"network namespace {self.name!r} could not be removed")

    def _free_subnet(self) -> ipaddress.IPv4Network:
        used = _used_networks()
        candidates = list(_POOL.subnets(new_prefix=30))
        # Start where the prefix hashes to, so hosts of different prefixes rarely race.
        start = zlib.crc32(self.name.encode()) % len(candidates)
        for subnet in candidates[start:] + candidates[:start]:
            if not any(subnet.overlaps(net) for net in used):
                return subnet
        raise NetnsError(f"no free /30 left in {_POOL}")

    # -------------------------------------------------------------------------- processes

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec NAME ...``)."""
        if not argv:
            raise ValueError("argv is empty")
        return ["ip", "netns", "exec", self.name, *argv]

    def run_in(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace; it is stopped when the host closes."""
        self._require_entered()
        popen.setdefault("stdin", subprocess.DEVNULL)
        process: subprocess.Popen[bytes] = subprocess.Popen(self.wrap(argv), **popen)  # noqa: S603
        self._processes.append(process)
        return process

    # ------------------------------------------------------------------------------- loss

    def set_loss(self, percent: float) -> None:
        """Drop ``percent`` % of the packets in and out of the namespace (0.01 % steps)."""
        self._require_entered()
        if isinstance(percent, bool) or not math.isfinite(percent) or not 0 <= percent <= 100:
            raise ValueError(f"loss percent must be a number in [0, 100], got {percent!r}")
        # `numgen random mod 10000 < P*100`: the issue's `mod 100 < P`, with 0.01 % resolution.
        threshold = round(percent * 100)
        chains = "\n".join(
            f"  chain {hook} {{\n"
            f"    type filter hook {hook} priority 0; policy accept;\n"
            f"    numgen random mod 10000 < {threshold} counter drop\n"
            "  }"
            for hook in ("input", "output")
        )
        # `table X` + `delete table X` first: replace an earlier loss atomically in one batch.
        script = (
            f"table inet {LOSS_TABLE}\ndelete table inet {LOSS_TABLE}\n"
            f"table inet {LOSS_TABLE} {{\n{chains}\n}}\n"
        )
        _run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], stdin=script)
        self.loss_percent = float(percent)

    def clear_loss(self) -> None:
        """Remove the loss table (nothing dropped any more); fine when there is none."""
        self._require_entered()
        script = f"table inet {LOSS_TABLE}\ndelete table inet {LOSS_TABLE}\n"
        _run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], stdin=script)
        self.loss_percent = 0.0

    def dropped_packets(self) -> int:
        """Packets the loss rules dropped since :meth:`set_loss` (0 when no loss is set)."""
        self._require_entered()
        out = _run(["ip", "netns", "exec", self.name, "nft", "-j", "list", "table", "inet",
                    LOSS_TABLE], check=False)  # fmt: skip
        if not out:
            return 0
        total = 0
        for item in json.loads(out).get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["packets"])
        return total

    def _require_entered(self) -> None:
        if not self._entered:
            raise NetnsError(f"network namespace {self.name!r} is not up (use `with LossyHost()`)")


# ----------------------------------------------------------------------------------- helpers


def _run(argv: list[str], *, check: bool = True, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - ip/nft with our arguments, no shell
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        if check:
            raise NetnsError(f"`{' '.join(argv)}` failed: {exc}") from exc
        return ""
    if done.returncode != 0:
        if check:
            message = (done.stderr or done.stdout).strip() or f"exit {done.returncode}"
            raise NetnsError(f"`{' '.join(argv)}` failed: {message}")
        return ""
    return done.stdout


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _namespaces() -> set[str]:
    out = _run(["ip", "-j", "netns", "list"], check=False).strip()
    return {str(ns["name"]) for ns in json.loads(out)} if out else set()


def _link_exists(name: str) -> bool:
    return bool(_run(["ip", "-j", "link", "show", "dev", name], check=False).strip())


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network on an address or a route of the root namespace."""
    used: list[ipaddress.IPv4Network] = []
    for link in json.loads(_run(["ip", "-j", "-4", "addr"]) or "[]"):
        for addr in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    for route in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        dst = str(route.get("dst", ""))
        if dst and dst != "default":
            try:
                used.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                continue
    return used


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _kill_all(pids: list[int]) -> None:
    """SIGTERM the processes still in our namespace, SIGKILL those alive after 3 s."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        time.sleep(0.05)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Running (a zombie has left its namespace already, and is its parent's to reap)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
