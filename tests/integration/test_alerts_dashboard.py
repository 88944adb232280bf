"""Alerts where operators look, and the dashboard's history, end to end for real.

Two real workers share the partitions (the alert is evaluated by whichever owns the key),
a real Kafka and a real Ceph RGW; Debian's Chromium driven by Playwright.

1. History: events of the last five minutes are already in the workers when a page opens;
   its latency chart is drawn from ``/v1/metrics/network/history`` at once, not point by
   point from the live polls.
2. Alerts: a service calls a local HTTP server through the real probe (httpx transport and
   Kafka emitter). The server answers 503 for a while: an SLO alert (test rules: short
   windows, ``resolve_after_s = 2``) fires, and the page's alerts panel shows it from a live
   ``alert`` message; the server heals, the alert resolves, the panel says so. Both workers'
   ``GET /v1/alerts`` hold the same episode. ``egresswatch replay --kind alerts`` reads the
   FIRING and RESOLVED records back from RGW. A worker restarted afterwards knows the
   alert too (its feed re-reads the last day of the alerts topic).
Screenshot: ``test-artifacts/dashboard-alerts.png``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from pipeline.probe import ProbeConfig, SyncProbeTransport
from pipeline.probe.emitter import KafkaEmitter
from tests.eventgen import make_event, produce
from tests.integration.test_dashboard import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS
from tests.rgw import S3Endpoint
from tests.workers import REPO, Topics, Worker, restart, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SERVICE = "payments"
HISTORY_SERVICE = "ledger"
RULE = "it-error-burst"
RULES = f"""
version = 1

[[rule]]
name = "{RULE}"
service = "{SERVICE}"
route = "*"
kind = "error_rate"
objective = 0.9
windows = [{{ long = "1m", short = "10s", burn_rate = 3 }}]
min_requests = 5
for_s = 0
resolve_after_s = 2
resolve_ratio = 1
severity = "page"
"""


class Upstream:
    """A local HTTP server whose every answer is ``status`` (200 or 503), changeable."""

    def __init__(self) -> None:
        self.status = 200
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = b"ok" if upstream.status == 200 else b"unavailable"
                self.send_response(upstream.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def probed_calls(bootstrap: str, topic: str, url: str, per_s: float) -> Iterator[dict[str, int]]:
    """Calls ``url`` through the real probe ``per_s`` times a second, from a thread."""
    stop = threading.Event()
    counts = {"calls": 0, "errors": 0}
    emitter = KafkaEmitter(bootstrap, service=SERVICE, topic=topic, flush_interval_s=0.2).start()
    config = ProbeConfig(service=SERVICE, retry=None, breaker=None)
    client = httpx.Client(transport=SyncProbeTransport(config, emitter), timeout=5)

    def run() -> None:
        while not stop.is_set():
            try:
                if client.get(f"{url}/pay").status_code != 200:
                    counts["errors"] += 1
            except httpx.HTTPError:
                counts["errors"] += 1
            counts["calls"] += 1
            stop.wait(1 / per_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(10)
        client.close()
        emitter.close()


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s}s (last: {last!r})")


def alert_rows(page: Page) -> list[dict[str, str]]:
    return list(
        page.eval_on_selector_all(
            "#alerts-table tbody tr",
            "rows => rows.map(r => ({...r.dataset, text: r.innerText}))",
        )
    )


def replay_alerts(
    endpoint: S3Endpoint, bucket: str, since: float
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EGRESSWATCH_S3_ENDPOINT": endpoint.url,
        "EGRESSWATCH_S3_ACCESS_KEY": endpoint.access_key,
        "EGRESSWATCH_S3_SECRET_KEY": endpoint.secret_key,
        "EGRESSWATCH_S3_BUCKET": bucket,
    }
    args = ["replay", "--kind", "alerts", "--service", SERVICE]
    args += ["--since", str(int(since)), "--until", str(int(time.time()) + 60)]
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def scenario(bootstrap: str, endpoint: S3Endpoint, bucket: str, tmp_path: Path) -> None:
    topics = Topics(partitions=4)
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    env = {
        "EGRESSWATCH_SLO_RULES_PATH": str(rules),
        "EGRESSWATCH_S3_ENDPOINT": endpoint.url,
        "EGRESSWATCH_S3_ACCESS_KEY": endpoint.access_key,
        "EGRESSWATCH_S3_SECRET_KEY": endpoint.secret_key,
        "EGRESSWATCH_S3_BUCKET": bucket,
        "EGRESSWATCH_SINK_IDLE_S": "1.0",
        "EGRESSWATCH_SINK_MAX_AGE_S": "3.0",
    }
    began = time.time()
    workers: list[Worker] = [
        start_worker(
            bootstrap,
            topics,
            app_id=f"{topics.prefix}-alerts",
            data_dir=tmp_path / f"w{i}",
            extra_env=env,
        )
        for i in range(2)
    ]
    try:
        for worker in workers:
            worker.wait_ready(owned=False)
        viewer = workers[1]

        # 1. Five minutes of windows are in the workers before the page opens.
        now = time.time()
        past = [
            make_event(
                service=HISTORY_SERVICE, route="/entries", started_at=now - 300 + i, elapsed_ms=8.0
            )
            for i in range(300)
        ]
        asyncio.run(produce(bootstrap, topics.probe, past, partitions=topics.partitions))
        history_url = f"/v1/metrics/network/history?service={HISTORY_SERVICE}"

        def history_points() -> int:
            series = viewer.get(history_url)["series"]
            return len(series[0]["points"]) if series else 0

        held = wait_for("the worker holds the past windows", lambda: history_points() >= 25, 30)
        assert held

        with sync_playwright() as pw, Upstream() as upstream:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page_errors: list[str] = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            opened = time.monotonic()
            page.goto(f"http://127.0.0.1:{viewer.port}/")
            page.wait_for_selector(
                f'#chart[data-history="{HISTORY_SERVICE} GET /entries"]', timeout=5_000
            )
            drawn = int(page.get_attribute("#chart", "data-points") or 0)
            assert drawn >= 25, drawn  # 1m views over ~5 minutes, not one live point
            assert time.monotonic() - opened < 5
            page.wait_for_selector('#status[data-state="live"]', timeout=15_000)
            page.wait_for_selector("#alerts-note[data-loaded]", timeout=5_000)
            assert alert_rows(page) == []

            # 2. Healthy calls, an error burst, healthy again.
            with probed_calls(bootstrap, topics.probe, upstream.url, per_s=20) as calls:
                time.sleep(4)
                upstream.status = 503
                page.wait_for_selector(
                    f'#alerts-table tr[data-state="firing"][data-rule="{RULE}"]', timeout=45_000
                )
                upstream.status = 200
                (firing,) = alert_rows(page)
                assert firing["service"] == SERVICE and firing["route"] == "/pay"
                assert "burn" in firing["text"] and "for " in firing["text"]
                assert not page.is_hidden("#alerts")  # the banner shows what fires
                page.wait_for_selector(
                    f'#alerts-table tr[data-state="resolved"][data-alert-id="{firing["alertId"]}"]',
                    timeout=45_000,
                )
                assert calls["errors"] > 0
            assert int(page.evaluate("document.body.dataset.liveAlerts") or 0) >= 2
            assert page.is_hidden("#alerts")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-alerts.png"), full_page=True)
            browser.close()
        assert not page_errors, page_errors

        # Every worker answers for the alert, whichever evaluated it.
        for worker in workers:
            body = worker.get("/v1/alerts", service=SERVICE)
            assert [(i["alert_id"], i["state"]) for i in body["items"]] == [
                (firing["alertId"], "resolved")
            ], body
            assert worker.get("/v1/alerts", state="firing", service=SERVICE)["items"] == []

        # A worker started after the alert (here: restarted) knows it from the alerts topic.
        workers[0].stop()
        workers[0] = restart(workers[0])
        workers[0].wait_ready(owned=False)

        def known_after_restart() -> list[tuple[str, str]]:
            items = workers[0].get("/v1/alerts", service=SERVICE)["items"]
            return [(i["alert_id"], i["state"]) for i in items]

        after = wait_for("the restarted worker knows the alert", known_after_restart, 20)
        assert after == [(firing["alertId"], "resolved")]

        # 3. Both records are in RGW, and replay reads them back.
        def replayed() -> list[dict[str, Any]] | None:
            done = replay_alerts(endpoint, bucket, began - 60)
            assert done.returncode == 0 or "no service" in done.stderr, done.stderr
            lines = [json.loads(line) for line in done.stdout.splitlines()]
            return lines if len(lines) >= 2 else None

        records = wait_for("replay --kind alerts finds both records", replayed, 40, every_s=2)
        assert [(r["alert_id"], r["status"]) for r in records] == [
            (firing["alertId"], "firing"),
            (firing["alertId"], "resolved"),
        ]
    finally:
        for worker in workers:
            worker.stop()


async def test_history_on_open_and_an_alert_raised_shown_resolved_replayed(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    assert CHROMIUM.exists(), "needs Debian's chromium (scripts/setup-system installs it)"
    await asyncio.to_thread(scenario, kafka_bootstrap, s3_endpoint, s3_bucket, tmp_path)
