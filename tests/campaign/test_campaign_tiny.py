"""The whole campaign, for real: ``egresswatch campaign run tiny`` on its own Kafka, Ceph RGW,
worker, Prometheus, Toxiproxy and namespaced upstream; then ``report`` and ``verify``; and a
run stopped with Ctrl-C, which still writes a report marked incomplete. Both leave nothing
running behind them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


def _campaign(*args: str, state: Path) -> list[str]:
    """``egresswatch campaign ARGS``; ``run`` gets ports of its own (two free pairs)."""
    command = [sys.executable, "-m", "pipeline.cli", "campaign", *args]
    if args[0] == "run":
        command += ["--kafka-port", str(_free_pair()), "--rgw-port", str(_free_pair())]
    return command


def _free_pair() -> int:
    """A port whose next one is free too (Kafka's controller, Ceph's mon)."""
    for _ in range(100):
        port = free_port()
        if port < 65000:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no two consecutive free ports")


def _processes() -> dict[int, str]:
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found[int(proc.name)] = cmd
    return found


_PIECES = ("pipeline.campaign.upstream", "pipeline.campaign.load", "toxiproxy/bin/server")


def _left_running(root: Path, before: dict[int, str]) -> list[str]:
    """Processes the run started and did not stop: any naming its folders (Kafka, Ceph,
    workers, Prometheus), and campaign pieces (upstream, load, Toxiproxy) new since ``before``."""
    return [
        f"{pid}: {cmd[:200]}"
        for pid, cmd in _processes().items()
        if str(root) in cmd or (pid not in before and any(p in cmd for p in _PIECES))
    ]


def _namespaces() -> str:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return out.stdout


def test_tiny_campaign_runs_judges_signs_and_cleans_up(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "run"
    before = _processes()
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    began = time.monotonic()
    run = subprocess.run(
        _campaign(
            "run",
            "tiny",
            "--out",
            str(out),
            "--state-dir",
            str(state),
            "--sign-key",
            str(key),
            state=state,
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    took = time.monotonic() - began
    assert run.returncode in (0, 1, 3), run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True, report.get("stop_reason")
    assert set(report["invariants"]) == {"I1", "I2", "I3", "I4", "I5"}
    for name in ("I1", "I2", "I3", "I4"):
        assert report["invariants"][name]["verdict"] == "pass", report["invariants"][name]
    i5 = report["invariants"]["I5"]
    assert i5["probe_errors"]["verdict"] == "pass"
    assert i5["ab"]["verdict"] in ("pass", "fail") and i5["ab"]["probed_count"] > 100
    assert {s["name"] for s in report["slos"]} >= {"latency-p99", "ws-delay-p99", "api-p95"}
    assert all(s["verdict"] in ("pass", "fail", "unknown") for s in report["slos"])
    kinds = {i["kind"]: i for i in report["incidents"]}
    assert set(kinds) == {"http_5xx", "rgw_down", "garbage_records", "kafka_down"}
    assert all(i["ran"] for i in kinds.values()), kinds
    assert kinds["garbage_records"]["effect_verdict"] == "pass"
    assert report["provenance"]["profile_sha256"]
    html = (out / "report.html").read_text()
    assert "<svg" in html and "<script src" not in html
    assert "INCOMPLETE" not in (out / "report.md").read_text()
    assert took < 150, f"the tiny campaign took {took:.0f} s (about 80 s on 2 idle cores)"

    verify = subprocess.run(
        _campaign("verify", str(out), state=state), cwd=REPO, capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    again = subprocess.run(
        _campaign("report", str(out), state=state), cwd=REPO, capture_output=True, text=True
    )
    assert again.returncode == run.returncode, again.stderr
    assert json.loads((out / "report.json").read_text()) == report  # re-rendered identically
    (out / "report.json").write_text(json.dumps(report | {"overall": "pass!"}))
    tampered = subprocess.run(
        _campaign("verify", str(out), state=state), cwd=REPO, capture_output=True, text=True
    )
    assert tampered.returncode == 1, tampered.stdout

    assert _left_running(tmp_path, before) == []
    assert "ewcamp" not in _namespaces()


def test_ctrl_c_stops_cleanly_and_writes_an_incomplete_report(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "run"
    before = _processes()
    proc = subprocess.Popen(
        _campaign("run", "tiny", "--out", str(out), "--state-dir", str(state), state=state),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    ticks = out / "raw" / "load.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if ticks.exists() and len(ticks.read_text().splitlines()) >= 5:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 3, err[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False
    assert report["stop_reason"] == "interrupted"
    assert report["overall"] != "pass"
    assert "INCOMPLETE" in (out / "report.md").read_text()
    assert _left_running(tmp_path, before) == []
    assert "ewcamp" not in _namespaces()
