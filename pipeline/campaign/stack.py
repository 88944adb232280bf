"""The infrastructure a campaign runs on: Kafka, Ceph RGW, workers, Prometheus.

Each piece is started with the project's own scripts (``scripts/kafka-local``,
``scripts/rgw-local``) or CLI (``egresswatch worker``), in a state folder of its own
(``var/campaign/`` by default, on ports apart from the demo's and the tests'), so a campaign
never shares a broker or a cluster with anything else. Everything :class:`Stack` started is
stopped by :meth:`Stack.close` (the runner calls it from a ``finally``), and the broker's and
cluster's data are deleted unless ``keep_data``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["ComponentError", "KafkaLocal", "RgwLocal", "StackSettings", "WorkerProcess"]

REPO = Path(__file__).resolve().parents[2]


class ComponentError(RuntimeError):
    """A component of the stack could not be started or stopped; the message says which."""


@dataclass(frozen=True)
class StackSettings:
    """Where the stack's state lives and on which ports it listens."""

    state: Path = REPO / "var" / "campaign"
    kafka_port: int = 19392
    rgw_port: int = 17680
    keep_data: bool = False


def _script(
    name: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - the project's own scripts
            [str(REPO / "scripts" / name), *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ComponentError(f"scripts/{name} {' '.join(args)}: no answer in {timeout} s") from exc


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


class KafkaLocal:
    """The campaign's broker, run by ``scripts/kafka-local`` in its own state folder."""

    def __init__(self, settings: StackSettings) -> None:
        self.dir = settings.state / "kafka"
        self.port = settings.kafka_port
        self.keep_data = settings.keep_data
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.running = False

    def _env(self) -> dict[str, str]:
        return {
            "EGRESSWATCH_KAFKA_DIR": str(self.dir),
            "EGRESSWATCH_KAFKA_PORT": str(self.port),
            "EGRESSWATCH_KAFKA_CONTROLLER_PORT": str(self.port + 1),
        }

    def up(self) -> str:
        out = _script("kafka-local", "up", env=self._env())
        if out.returncode != 0:
            raise ComponentError(f"Kafka did not start:\n{out.stderr[-2000:]}")
        self.running = True
        self.bootstrap = out.stdout.strip().removeprefix("KAFKA_BOOTSTRAP=")
        return self.bootstrap

    def down(self, *, purge: bool = False) -> None:
        out = _script("kafka-local", "down", *(["--purge"] if purge else []), env=self._env())
        self.running = False
        if out.returncode != 0:
            raise ComponentError(f"Kafka did not stop:\n{out.stderr[-2000:]}")

    def close(self) -> None:
        self.down(purge=not self.keep_data)

    @property
    def pid(self) -> int | None:
        return _read_pid(self.dir / "kafka.pid")


class RgwLocal:
    """The campaign's Ceph (mon, OSD, radosgw), run by ``scripts/rgw-local``."""

    def __init__(self, settings: StackSettings) -> None:
        self.dir = settings.state / "rgw"
        self.port = settings.rgw_port
        self.keep_data = settings.keep_data
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key = ""
        self.secret_key = ""
        self.running = False

    def _env(self) -> dict[str, str]:
        return {"EGRESSWATCH_RGW_DIR": str(self.dir), "EGRESSWATCH_RGW_PORT": str(self.port)}

    def up(self) -> None:
        out = _script("rgw-local", "up", env=self._env())
        if out.returncode != 0:
            raise ComponentError(f"Ceph RGW did not start:\n{out.stderr[-2000:]}")
        found = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        self.endpoint = found["S3_ENDPOINT"]
        self.access_key = found["S3_ACCESS_KEY"]
        self.secret_key = found["S3_SECRET_KEY"]
        self.running = True

    def rgw_stop(self) -> None:
        out = _script("rgw-local", "rgw-stop", env=self._env(), timeout=60)
        if out.returncode != 0:
            raise ComponentError(f"radosgw did not stop:\n{out.stderr[-2000:]}")

    def rgw_start(self) -> None:
        out = _script("rgw-local", "rgw-start", env=self._env(), timeout=120)
        if out.returncode != 0:
            raise ComponentError(f"radosgw did not start again:\n{out.stderr[-2000:]}")

    def close(self) -> None:
        out = _script(
            "rgw-local", "down", *([] if self.keep_data else ["--purge"]), env=self._env()
        )
        self.running = False
        if out.returncode != 0:
            raise ComponentError(f"Ceph did not stop:\n{out.stderr[-2000:]}")

    def pids(self) -> dict[str, int]:
        run = self.dir / "cluster" / "run"
        found = {}
        for name, file in (("ceph-mon", "mon"), ("ceph-osd", "osd"), ("radosgw", "rgw.gw")):
            pid = _read_pid(run / f"{file}.pid")
            if pid is not None:
                found[name] = pid
        return found


@dataclass
class WorkerProcess:
    """One ``egresswatch worker`` subprocess; :meth:`start` again after a kill restarts it."""

    name: str
    port: int
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
                self.args,
                cwd=REPO,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the runner only
            )
        self.starts.append(time.time())

    def kill(self) -> int | None:
        """SIGKILL (the crash of the host's process); returns the pid killed."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return pid

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            rsp = httpx.get(f"{self.url}/v1/health/ready", timeout=1)
            return rsp.status_code == 200
        return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise ComponentError(f"{self.name} exited during start-up:\n{tail}")
            if self.ready():
                return
            time.sleep(0.3)
        raise ComponentError(f"{self.name} not ready after {timeout:.0f} s (log: {self.log})")


def worker_process(
    name: str,
    *,
    port: int,
    bootstrap: str,
    data_dir: Path,
    log: Path,
    env: dict[str, str],
) -> WorkerProcess:
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
        # A worker restarted during an RGW outage incident starts and spools (docs/sinks.md).
        "--allow-rgw-down",
    ]
    return WorkerProcess(name=name, port=port, args=args, env=env, log=log)
