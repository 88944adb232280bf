"""The background services of ``make demo`` (Kafka, and RGW with ``--rgw``): found or started,
and on the way out stopped if the demo started them.

Contract: :func:`kafka_up` and :func:`rgw_up` return a :class:`LocalService` that remembers
whether the demo started it (``scripts/<script> status`` said nothing was running before) or
found it (already running, or named by ``EGRESSWATCH_KAFKA_BOOTSTRAP``). :func:`shut_down`
stops the started ones (``scripts/<script> down``: data kept for the next demo) unless asked to
keep them, and returns the demo's last line: what it stopped, and what is still running with
the command that stops it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["LocalService", "kafka_up", "rgw_up", "shut_down"]

REPO: Final = Path(__file__).resolve().parent.parent
_DOWN_TIMEOUT_S: Final = 60.0


@dataclass
class LocalService:
    """One background service the demo uses."""

    name: str
    """``Kafka`` or ``RGW``."""
    address: str
    script: str | None
    """``kafka-local`` / ``rgw-local``; None for a service the project's scripts do not run."""
    started: bool
    """The demo started it (so it stops it)."""
    state_env: str = ""
    """The state-dir variable of the script, repeated in the stop command when it is set."""

    def origin(self) -> str:
        """How the demo came by it, for its first lines."""
        if self.script is None:
            return "given"
        return "started by the demo" if self.started else "already running"

    def stop_command(self) -> str:
        if self.script is None:
            return ""
        prefix = ""
        if self.state_env and os.environ.get(self.state_env):
            prefix = f"{self.state_env}={shlex.quote(os.environ[self.state_env])} "
        return f"{prefix}scripts/{self.script} down"


def _script(name: str, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own scripts
        [str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _up(script: str, *, stop_if_interrupted: bool) -> subprocess.CompletedProcess[str]:
    """``scripts/<script> up``; a Ctrl-C while it starts stops what it had started."""
    try:
        return _script(script, "up")
    except KeyboardInterrupt:
        if stop_if_interrupted:
            _script(script, "down", timeout=_DOWN_TIMEOUT_S)
        raise


def kafka_up() -> LocalService:
    """The broker named by EGRESSWATCH_KAFKA_BOOTSTRAP, else the project's local one."""
    named = os.environ.get("EGRESSWATCH_KAFKA_BOOTSTRAP")
    if named:
        return LocalService("Kafka", named, None, started=False)
    was_running = _script("kafka-local", "status").returncode == 0
    out = _up("kafka-local", stop_if_interrupted=not was_running)
    if out.returncode != 0:
        sys.exit(f"demo: could not start Kafka:\n{out.stderr[-2000:]}")
    address = out.stdout.strip().removeprefix("KAFKA_BOOTSTRAP=")
    return LocalService(
        "Kafka", address, "kafka-local", started=not was_running, state_env="EGRESSWATCH_KAFKA_DIR"
    )


def rgw_up() -> tuple[LocalService, dict[str, str]]:
    """The project's local Ceph RGW (started if none of its daemons runs); the worker's env."""
    # status: 0 all running, 1 none, 3 some: only "none" means the demo starts (and stops) it.
    was_stopped = _script("rgw-local", "status").returncode == 1
    out = _up("rgw-local", stop_if_interrupted=was_stopped)
    if out.returncode != 0:
        sys.exit(f"demo: could not start the local RGW:\n{out.stderr[-2000:]}")
    found = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    service = LocalService(
        "RGW",
        found["S3_ENDPOINT"],
        "rgw-local",
        started=was_stopped,
        state_env="EGRESSWATCH_RGW_DIR",
    )
    return service, {
        "EGRESSWATCH_S3_ENDPOINT": found["S3_ENDPOINT"],
        "EGRESSWATCH_S3_ACCESS_KEY": found["S3_ACCESS_KEY"],
        "EGRESSWATCH_S3_SECRET_KEY": found["S3_SECRET_KEY"],
    }


def shut_down(services: Sequence[LocalService], *, keep: bool = False) -> str:
    """Stop the services the demo started (unless ``keep``); the demo's last line."""
    stopped: list[str] = []
    running: list[str] = []
    for service in services:
        if service.started and not keep:
            done = _script(service.script or "", "down", timeout=_DOWN_TIMEOUT_S)
            if done.returncode == 0:
                stopped.append(f"{service.name} ({service.address})")
                continue
        running.append(_still_running(service, keep=keep))
    parts = []
    if stopped:
        parts.append("stopped what it started: " + ", ".join(stopped))
    if running:
        parts.append("still running: " + "; ".join(running))
    if not parts:
        return "demo: done, nothing left running"
    return "demo: " + "; ".join(parts)


def _still_running(service: LocalService, *, keep: bool) -> str:
    if service.script is None:
        return f"{service.name} at {service.address} (not the demo's: left as it was)"
    if service.started and keep:
        why = "kept (--keep)"
    elif service.started:
        why = "it did not stop"
    else:
        why = "it was running before the demo"
    return f"{service.name} at {service.address} ({why}), stop it with {service.stop_command()}"
