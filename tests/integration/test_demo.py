"""`make demo` runs the main job: events flow from a probed service to the worker's windows."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.ports import free_port
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
