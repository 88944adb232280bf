"""One local service shared by the pytest sessions that run at once, through lease files.

The test Kafka (``tests/conftest.py``) and the test RGW (``tests/rgw.py``) both live in a
state dir of their own under ``var/``. Each session that uses one leaves a lease file named
by its PID in ``<state dir>/pytest-leases`` while it runs (under an exclusive ``flock``);
the last session out stops the service, and deletes its data, only if a test session
started it (a ``started-by-pytest`` mark): a service someone started by hand keeps running.
Leases of sessions that died are swept on the way out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

__all__ = ["leased_script_service", "leased_service"]

T = TypeVar("T")
_STARTED_MARK = "started-by-pytest"


@contextlib.contextmanager
def _leases_locked(state_dir: Path) -> Iterator[Path]:
    state_dir.mkdir(parents=True, exist_ok=True)
    leases = state_dir / "pytest-leases"
    leases.mkdir(exist_ok=True)
    with open(state_dir / "pytest-leases.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield leases


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def leased_service(
    state_dir: Path,
    *,
    running: Callable[[], bool],
    up: Callable[[], T],
    down: Callable[[], None],
) -> Iterator[T]:
    """Hold a lease on the service of ``state_dir`` for the block; yields what ``up`` gave.

    ``running``: whether the service runs already (then this session did not start it).
    ``up``: start it if need be and return how to reach it (it may ``pytest.fail``).
    ``down``: stop it and delete its data (raises on failure).
    """
    with _leases_locked(state_dir) as leases:
        was_running = running()
        reached = up()
        if not was_running:
            (state_dir / _STARTED_MARK).touch()
        lease = leases / str(os.getpid())
        lease.touch()
    try:
        yield reached
    finally:
        with _leases_locked(state_dir) as leases:
            lease.unlink(missing_ok=True)
            for other in leases.iterdir():
                if not (other.name.isdigit() and _alive(int(other.name))):
                    other.unlink(missing_ok=True)
            marker = state_dir / _STARTED_MARK
            if not any(leases.iterdir()) and marker.exists():
                try:
                    down()
                finally:
                    marker.unlink(missing_ok=True)


def leased_script_service(
    state_dir: Path,
    script: Callable[..., subprocess.CompletedProcess[str]],
    name: str,
    *,
    running: Callable[[], bool],
    parse: Callable[[str], T],
) -> contextlib.AbstractContextManager[T]:
    """:func:`leased_service` of a service run by ``scripts/<name>``: ``up`` runs
    ``script("up")`` and ``parse``s its output; ``down`` runs ``script("down", "--purge")``."""

    def up() -> T:
        started = script("up")
        if started.returncode != 0:
            pytest.fail(f"scripts/{name} up failed ({started.returncode}):\n{started.stderr}")
        return parse(started.stdout)

    def down() -> None:
        stopped = script("down", "--purge")
        if stopped.returncode != 0:
            raise RuntimeError(f"scripts/{name} down failed:\n{stopped.stderr}")

    return leased_service(state_dir, running=running, up=up, down=down)
