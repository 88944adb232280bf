"""The callers' path to their upstream: Toxiproxy in front of the fault upstream, which lives
in a network namespace of its own where that can be made.

::

    load (probed clients) ──► Toxiproxy 127.0.0.1:P ──► veth ──► fault upstream 10.213.x.y:8000
                              TCP faults (toxics)        nftables   HTTP faults (control API)
                                                         packet loss

Without root (no namespace), the upstream listens on 127.0.0.1 and ``packet_loss`` is not
run; without the Toxiproxy binary, callers go straight to the upstream and the TCP faults
are not run. Both reasons reach the report; neither is ever counted as a pass.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from pipeline.campaign._ports import free_port
from pipeline.campaign.incidents import IncidentTargets
from pipeline.campaign.netns import LossyHost, available
from pipeline.campaign.profile import Plan
from pipeline.campaign.stack import REPO, ComponentError
from pipeline.campaign.toxiproxy import BINARY, TcpFaults, Toxiproxy
from pipeline.campaign.upstream import UpstreamControl

__all__ = ["UpstreamPath"]

_PROXY = "upstream"
_UPSTREAM_PORT = 8000


class UpstreamPath:
    def __init__(self, plan: Plan, state: Path, logs: Path, console: Console) -> None:
        self.plan = plan
        self.state = state
        self.logs = logs
        self.console = console
        self.host: LossyHost | None = None
        self.host_missing = "no network namespace was made"
        self.toxiproxy: Toxiproxy | None = None
        self.toxiproxy_missing = "Toxiproxy is not running"
        self.process: subprocess.Popen[bytes] | None = None
        self.direct_url = ""
        self.caller_url = ""
        self.control: UpstreamControl | None = None
        self._stack = contextlib.ExitStack()

    def up(self) -> None:
        try:
            self._up()
        except BaseException:
            self.close()
            raise

    def _up(self) -> None:
        ok, reason = available()
        address = "127.0.0.1"
        if ok:
            self.host = self._stack.enter_context(LossyHost("ewcamp"))
            address = self.host.address
        else:
            self.host_missing = f"packet loss needs a network namespace: {reason}"
        port = _UPSTREAM_PORT if self.host is not None else free_port()
        argv = [
            sys.executable,
            "-m",
            "pipeline.campaign.upstream",
            "--host",
            address,
            "--port",
            str(port),
            "--seed",
            str(self.plan.seed),
            "--median-ms",
            str(self.plan.upstream.median_ms),
            "--sigma",
            str(self.plan.upstream.sigma),
            "--body-bytes",
            str(self.plan.upstream.body_bytes),
        ]
        if self.host is not None:
            argv = self.host.wrap(argv)
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "upstream.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own module
                argv, cwd=REPO, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        self._wait_ready_line(30)
        self.direct_url = f"http://{address}:{port}"
        self.control = UpstreamControl(self.direct_url)
        self.control.wait_ready(10)
        self.caller_url = self.direct_url
        if os.access(BINARY, os.X_OK):
            self.toxiproxy = self._stack.enter_context(
                Toxiproxy(log_path=self.logs / "toxiproxy.log")
            )
            listen = free_port()
            self.toxiproxy.client.create_proxy(_PROXY, listen, f"{address}:{port}")
            self.caller_url = f"http://127.0.0.1:{listen}"
        else:
            self.toxiproxy_missing = (
                f"no Toxiproxy binary at {BINARY}: run `make setup` (scripts/toxiproxy-build)"
            )

    def _wait_ready_line(self, timeout: float) -> None:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        stdout = self.process.stdout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComponentError(f"the fault upstream exited: see {self.logs}/upstream.log")
            ready, _, _ = select.select([stdout], [], [], 0.2)
            if ready and stdout.readline().startswith(b"UPSTREAM_READY"):
                return
        raise ComponentError(f"the fault upstream did not start in {timeout:.0f} s")

    def describe(self) -> str:
        where = f"namespace {self.host.name}" if self.host is not None else "loopback"
        through = "through Toxiproxy" if self.toxiproxy is not None else "direct"
        return f"{self.direct_url} ({where}), callers use {self.caller_url} ({through})"

    def incident_targets(self) -> IncidentTargets:
        tcp = TcpFaults(self.toxiproxy.client, _PROXY) if self.toxiproxy is not None else None
        return IncidentTargets(
            upstream=self.control,
            tcp=tcp,
            tcp_missing=self.toxiproxy_missing,
            loss=self.host,
            loss_missing=self.host_missing,
        )

    def pids(self) -> dict[str, int]:
        found = {}
        if self.process is not None and self.process.poll() is None:
            found["upstream"] = self.process.pid
        if self.toxiproxy is not None and self.toxiproxy.process is not None:
            found["toxiproxy"] = self.toxiproxy.process.pid
        return found

    def versions(self) -> dict[str, str]:
        from pipeline.campaign.provenance import toxiproxy_version

        return {"toxiproxy": toxiproxy_version(BINARY) if self.toxiproxy else "not used"}

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._stack.close()
