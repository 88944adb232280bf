"""Run real ``egresswatch worker`` processes for integration tests, and talk to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Topics:
    """A private set of topic names (and app id) for one test's pipeline."""

    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    partitions: int = 8

    @property
    def probe(self) -> str:
        return f"{self.prefix}.probe"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    def env(self) -> dict[str, str]:
        return {
            "EGRESSWATCH_PROBE_TOPIC": self.probe,
            "EGRESSWATCH_DEAD_LETTER_TOPIC": self.dead_letters,
            "EGRESSWATCH_ALERTS_TOPIC": self.alerts,
            "EGRESSWATCH_PROBE_PARTITIONS": str(self.partitions),
        }


@dataclass
class Worker:
    """A worker subprocess with its HTTP port and log file."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    args: list[str]
    env: dict[str, str]

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"http://127.0.0.1:{self.port}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def pipeline(self) -> dict[str, Any]:
        """The pipeline figures of ``/v1/health/ready``, whether ready or not."""
        response = httpx.get(f"http://127.0.0.1:{self.port}/v1/health/ready", timeout=10)
        return dict(response.json()["pipeline"])

    def wait_ready(self, timeout: float = 90.0, *, owned: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}: {self.tail()}")
            try:
                response = httpx.get(f"http://127.0.0.1:{self.port}/v1/health/ready", timeout=2)
                last = response.json()
                if response.status_code == 200 and (
                    not owned or last["pipeline"]["owned_partitions"] > 0
                ):
                    return dict(last)
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout}s: {last}\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def tail(self, size: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return ""


def start_worker(
    bootstrap: str,
    topics: Topics,
    *,
    app_id: str,
    data_dir: Path,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Worker:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"worker-{port}.log"
    env = {
        **os.environ,
        **topics.env(),
        "EGRESSWATCH_TICK_INTERVAL_S": "0.5",
        "EGRESSWATCH_ALERT_INTERVAL_S": "0.5",
        **(extra_env or {}),
    }
    args = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "worker",
        "--bootstrap",
        bootstrap,
        "--http-port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--app-id",
        app_id,
    ]
    return _spawn(args, env, log, port)


def restart(worker: Worker) -> Worker:
    """Start the same worker again (same app id, port and data dir)."""
    return _spawn(worker.args, worker.env, worker.log, worker.port)


def _spawn(args: list[str], env: dict[str, str], log: Path, port: int) -> Worker:
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Worker(proc, port, log, args, env)
