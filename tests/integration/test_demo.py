"""`make demo` runs the main job: events flow from a probed service to the worker's windows.
On the way out it stops the Kafka broker it started, leaves one it found, and says so last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import KAFKA_LOCAL
from tests.ports import free_port
from tests.rgw import RGW_LOCAL
from tests.workers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_demo_shows_events_and_windows(kafka_bootstrap: str) -> None:
    env = {**os.environ, "EGRESSWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap}
    args = ["--duration", "25", "--http-port", str(free_port())]
    args += ["--upstream-port", str(free_port())]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "demo: worker API" in out
    assert " GET 127.0.0.1:" in out  # events tailed from the probe topic
    assert "worker's 1m windows" in out
    assert "/users/{id}" in out  # a route template, never a raw id
    assert "secret-token" not in out  # query strings never reach an event
    assert "dropped 0" in out
    assert "critical events are written as JSONL to" in out
    assert f"demo: Kafka at {kafka_bootstrap} (given)" in out
    assert out.splitlines()[-1] == (
        f"demo: still running: Kafka at {kafka_bootstrap} (not the demo's: left as it was)"
    )


def test_ctrl_c_stops_the_broker_and_rgw_the_demo_started(tmp_path: Path) -> None:
    """No broker named, nothing running in their state dirs: the demo starts Kafka and RGW,
    and Ctrl-C (SIGINT to its whole process group, as a terminal sends it) stops them."""
    port, rgw_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESSWATCH_")}
    env.update(
        {
            "EGRESSWATCH_KAFKA_DIR": str(tmp_path / "kafka"),
            "EGRESSWATCH_KAFKA_PORT": str(port),
            "EGRESSWATCH_KAFKA_CONTROLLER_PORT": str(free_port()),
            "EGRESSWATCH_RGW_DIR": str(tmp_path / "rgw"),
            "EGRESSWATCH_RGW_PORT": str(rgw_port),
            "EGRESSWATCH_RGW_MON_PORT": str(free_port()),
        }
    )
    args = ["--rgw", "--http-port", str(free_port()), "--upstream-port", str(free_port())]
    demo = subprocess.Popen(
        [sys.executable, "-m", "pipeline.demo", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any("Ctrl-C stops" in line for line in lines):
            assert demo.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(90) == 0, "".join(lines)[-3000:]
        reader.join(10)
        assert f"demo: Kafka at 127.0.0.1:{port} (started by the demo)\n" in lines
        assert lines[-1].rstrip("\n") == (
            f"demo: stopped what it started: Kafka (127.0.0.1:{port}), "
            f"RGW (http://127.0.0.1:{rgw_port})"
        ), "".join(lines)[-3000:]
        for script in (KAFKA_LOCAL, RGW_LOCAL):  # status 1: nothing of it runs
            status = subprocess.run(
                [str(script), "status"], env=env, capture_output=True, text=True, check=False
            )
            assert status.returncode == 1, status.stdout
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
        for script in (KAFKA_LOCAL, RGW_LOCAL):
            subprocess.run(
                [str(script), "down", "--purge"], env=env, capture_output=True, check=False
            )
