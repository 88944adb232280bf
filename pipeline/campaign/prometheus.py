"""A real Prometheus for a campaign: scrape the workers every second, answer PromQL.

Debian's ``prometheus`` package (``scripts/setup-system`` installs it) run by hand on a free
loopback port, with its config and TSDB in the run's state folder. Only the standard library
talks to it, so an error is Prometheus' own answer.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["PROMETHEUS", "Prometheus", "PrometheusError", "prometheus_config"]

PROMETHEUS = Path("/usr/bin/prometheus")


class PrometheusError(RuntimeError):
    """Prometheus could not start or refused a query."""


def prometheus_config(job: str, targets: Sequence[str], interval: str = "1s") -> str:
    quoted = ", ".join(json.dumps(t) for t in targets)
    return (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  scrape_timeout: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        f"  - job_name: {json.dumps(job)}\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: [{quoted}]\n"
    )


class Prometheus:
    """``with Prometheus(workdir, port, job, targets) as prom: prom.query("up")``."""

    def __init__(self, workdir: Path, port: int, *, job: str, targets: Sequence[str]) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.job = job
        self.targets = list(targets)
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        if not PROMETHEUS.exists():
            raise PrometheusError(f"{PROMETHEUS} is missing: run `make setup` (Debian prometheus)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(prometheus_config(self.job, self.targets))
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - a fixed binary, our arguments
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            self._wait_ready(30)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def query(self, expr: str, timeout: float = 2.0) -> list[dict[str, Any]]:
        """An instant query's result vector; :class:`PrometheusError` on an error answer."""
        q = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=timeout) as rsp:  # noqa: S310
                body = json.load(rsp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        except (urllib.error.URLError, OSError) as exc:
            raise PrometheusError(f"query {expr!r}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"query {expr!r}: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as rsp:  # noqa: S310
                    if rsp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {timeout} s")
