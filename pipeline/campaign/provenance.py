"""Provenance of a campaign run: which code, which packages, which components, which machine.

:func:`collect` returns a plain JSON-ready dict that the report copies under ``provenance``,
so anyone reading a report can rebuild the same setup: the git commit (and whether the tree
had uncommitted changes), Python and the versions of the packages that shape the results,
the versions of Kafka, Ceph, Prometheus and Toxiproxy the runner found, the machine (cores,
memory, kernel), and the profile file with its sha256.

Nothing here fails a run: a fact that cannot be found is recorded as ``"unknown"`` (or
``None`` with the reason next to it), never guessed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import socket
import subprocess  # noqa: S404 - fixed argument lists, no shell
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

__all__ = [
    "PACKAGES",
    "UNKNOWN",
    "ceph_version",
    "collect",
    "kafka_version",
    "prometheus_version",
    "toxiproxy_version",
]

UNKNOWN: Final = "unknown"
# The packages whose versions change what a campaign measures.
PACKAGES: Final = (
    "egresswatch",
    "faust-streaming",
    "aiokafka",
    "httpx",
    "httpcore",
    "msgspec",
    "s3fs",
    "pyarrow",
    "hdrhistogram",
    "prometheus-client",
    "starlette",
    "uvicorn",
    "websockets",
    "ddsketch",
    "matplotlib",
    "rich",
    "psutil",
)
_COMMAND_TIMEOUT_S: Final = 10.0
_KAFKA_VERSION: Final = re.compile(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>")


def collect(repo: Path, profile_path: Path, versions: dict[str, str]) -> dict[str, Any]:
    """Everything a reader needs to tell which setup produced a report.

    ``versions`` holds the component versions the runner found (``kafka``, ``ceph``,
    ``prometheus``, ``toxiproxy``, ...); they are copied under ``components``.
    """
    now = time.time()
    commit, dirty, git_error = _git_state(repo)
    facts: dict[str, Any] = {
        "collected_at": now,
        "collected_at_utc": _utc(now),
        "commit": commit,
        "dirty": dirty,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": {name: _package_version(name) for name in PACKAGES},
        "components": {str(k): str(v) for k, v in sorted(versions.items())},
        "machine": _machine(),
        "profile_path": str(profile_path),
        "profile_sha256": _sha256_of(profile_path),
        "command": " ".join(sys.argv),
    }
    if git_error is not None:
        facts["git_error"] = git_error
    return facts


def kafka_version(repo: Path) -> str:
    """The Kafka version ``scripts/kafka-local`` installs (``kafka.version`` in its pom.xml)."""
    try:
        text = (repo / "scripts" / "kafka" / "pom.xml").read_text(encoding="utf-8")
    except OSError:
        return UNKNOWN
    found = _KAFKA_VERSION.search(text)
    return found.group(1) if found else UNKNOWN


def ceph_version() -> str:
    """``ceph --version`` as printed (``ceph version 16.2.15 (...) pacific (stable)``)."""
    return _first_line(["ceph", "--version"])


def prometheus_version() -> str:
    """The first line of ``prometheus --version``."""
    return _first_line(["prometheus", "--version"])


def toxiproxy_version(server: Path) -> str:
    """The first line of ``<toxiproxy server binary> -version``."""
    return _first_line([str(server), "-version"])


def _first_line(argv: list[str]) -> str:
    """First non-empty output line of a version command, ``unknown`` on any failure."""
    try:
        done = subprocess.run(  # noqa: S603 - argv is fixed by the callers above
            argv,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    if done.returncode != 0:
        return UNKNOWN
    # Some tools print their version on stderr.
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if line.strip():
            return line.strip()
    return UNKNOWN


def _git_state(repo: Path) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, why unknown): the git CLI's view of ``repo``; no git is not an error."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - fixed git arguments
            ["git", "-C", str(repo), *args],  # noqa: S607 - git from PATH, as a user runs it
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None, f"git rev-parse failed: {head.stderr.strip() or head.returncode}"
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError) as exc:
        return None, None, f"git not usable: {exc}"
    commit = head.stdout.strip()
    if status.returncode != 0:
        return commit, None, f"git status failed: {status.stderr.strip() or status.returncode}"
    # Untracked files do not change what runs; modified tracked files do.
    return commit, bool(status.stdout.strip()), None


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _machine() -> dict[str, Any]:
    uname = platform.uname()
    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_bytes": _memory_total(),
        "kernel": uname.release,
        "system": uname.system,
        "arch": uname.machine,
        "cpu_model": _cpu_model(),
    }
    return facts


def _memory_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip() or UNKNOWN
    except OSError:
        pass
    return platform.processor() or UNKNOWN


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")
