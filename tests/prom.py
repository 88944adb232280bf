"""A real Prometheus for integration tests: install it if missing, run it, query it.

- :func:`ensure_prometheus` installs Debian's ``prometheus`` package (which ships
  ``promtool``) when ``/usr/bin/prometheus`` is absent: ``apt-get install`` first, and
  ``apt-get update`` then a second try only if that fails. Needs root, as CI runs.
- :func:`run_prometheus` starts ``/usr/bin/prometheus`` on a free loopback port with its own
  config and TSDB under a temporary directory, scraping the given targets every second with
  exemplar storage on; it waits for ``/-/ready``, and the caller then waits for
  :meth:`Prometheus.wait_up`. The process is stopped (and killed if need be) on exit.
- :func:`promtool_check_metrics` lints an exposition with ``promtool check metrics``.

Only the standard library talks to Prometheus (urllib + json), so a failure is a
Prometheus answer, not a client library's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.campaign.prometheus import prometheus_config
from tests.ports import free_port

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
_APT_INSTALL = [
    "apt-get",
    "install",
    "-y",
    "-qq",
    "--no-install-recommends",
    "-o",
    "DPkg::Lock::Timeout=300",
    "prometheus",
]


def ensure_prometheus() -> Path:
    """Return the Prometheus binary, installing the Debian package first if it is missing."""
    if PROMETHEUS.exists() and PROMTOOL.exists():
        return PROMETHEUS
    lock_path = Path(tempfile.gettempdir()) / "egresswatch-prometheus-install.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time (parallel sessions)
        if not (PROMETHEUS.exists() and PROMTOOL.exists()):
            first = _apt(_APT_INSTALL)
            if first.returncode != 0:
                _apt(["apt-get", "update", "-qq", "-o", "DPkg::Lock::Timeout=300"])
                second = _apt(_APT_INSTALL)
                if second.returncode != 0:
                    raise RuntimeError(
                        "could not install prometheus:\n" + first.stderr + second.stderr
                    )
    assert PROMETHEUS.exists() and PROMTOOL.exists(), "prometheus installed without promtool?"
    return PROMETHEUS


def _apt(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=_APT_ENV, capture_output=True, text=True, timeout=600)


def promtool_check_metrics(exposition: bytes) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check metrics`` on a text exposition; returncode 0 means clean."""
    ensure_prometheus()
    return subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=exposition.decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class Prometheus:
    """A running Prometheus: its base URL, its process and its log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str | float) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``; raise with Prometheus' error if any."""
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as rsp:
                body = json.load(rsp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query (at ``at`` when given); the ``result`` vector."""
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api(
            "query_exemplars", query=expr, start=f"{start:.3f}", end=f"{end:.3f}"
        )
        return result

    def wait_up(self, job: str, *, min_samples: str | None = None, timeout: float = 60) -> float:
        """Wait until ``up{job=...} == 1`` (and ``min_samples`` has a result, if given).

        Returns the timestamp of that ``up`` sample: query at it with an explicit time.
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self._check_alive()
            last = up = self.query(f'up{{job="{job}"}}')
            if up and up[0]["value"][1] == "1" and (not min_samples or self.query(min_samples)):
                return float(up[0]["value"][0])
            time.sleep(0.25)
        raise AssertionError(f"job {job!r} not up after {timeout} s (last: {last})\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.process.returncode}):\n{self.tail()}")


@contextlib.contextmanager
def run_prometheus(
    targets: Sequence[str],
    *,
    job: str,
    workdir: Path,
    scrape_interval: str = "1s",
    ready_timeout: float = 30,
) -> Iterator[Prometheus]:
    """Run a Prometheus scraping ``targets`` ("host:port") as ``job``; stop it on exit."""
    binary = ensure_prometheus()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(prometheus_config(job, targets, scrape_interval))
    check = subprocess.run(
        [str(PROMTOOL), "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(prom, ready_timeout)
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _wait_ready(prom: Prometheus, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        prom._check_alive()
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as rsp:
                if rsp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"prometheus not ready after {timeout} s:\n{prom.tail()}")
