"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a real worker
and a real Kafka: events appear live, a filter narrows them on the server, and the page
comes back by itself after the worker restarts. Screenshot: ``test-artifacts/dashboard.png``.

And the feed behind it: with two workers sharing the partitions, a client of either one
sees the events of every partition.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from playwright.sync_api import Page, sync_playwright

from tests.eventgen import make_event, produce, route_for_partition
from tests.workers import REPO, Topics, Worker, restart, start_worker

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/lib/chromium/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"
ROUTES = ("/orders/{id}", "/orders/{id}/items", "/users/{id}")
STATUSES = (200, 200, 200, 404, 503)
ROWS = "#events tbody tr[data-route]"


class Traffic:
    """Produces a few probe events every 0.3 s from a thread, until stopped."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.stop = threading.Event()
        self.sent = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(5)
        while not self.stop.is_set():
            now = time.time()
            events = [
                make_event(
                    service=rng.choice(("checkout", "search")),
                    route=rng.choice(ROUTES),
                    started_at=now - 0.05,
                    elapsed_ms=rng.uniform(2, 80),
                    status_code=rng.choice(STATUSES),
                    rng=rng,
                )
                for _ in range(12)
            ]
            try:
                asyncio.run(
                    produce(
                        self.bootstrap,
                        self.topics.probe,
                        events,
                        partitions=self.topics.partitions,
                    )
                )
                self.sent += len(events)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
            self.stop.wait(0.3)


@pytest.fixture
def traffic(kafka_bootstrap: str) -> Iterator[Traffic]:
    topics = Topics(partitions=4)
    running = Traffic(kafka_bootstrap, topics)
    yield running
    running.stop.set()
    running.thread.join(10)


def rows(page: Page) -> list[dict[str, Any]]:
    return list(
        page.eval_on_selector_all(
            ROWS,
            "rows => rows.map(r => ({trace: r.dataset.trace, route: r.dataset.route,"
            " severity: r.dataset.severity, service: r.dataset.service}))",
        )
    )


def wait_new_rows(
    page: Page, seen: set[str], n: int, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = [row for row in rows(page) if row["trace"] not in seen]
        if len(fresh) >= n:
            return fresh
        page.wait_for_timeout(200)
    raise AssertionError(f"fewer than {n} new rows within {timeout_s}s: {rows(page)[:5]}")


def test_dashboard_live_filter_and_restart(
    kafka_bootstrap: str, traffic: Traffic, tmp_path: Path
) -> None:
    assert CHROMIUM.exists(), "needs Debian's chromium (scripts/setup-system installs it)"
    worker: Worker = start_worker(
        kafka_bootstrap, traffic.topics, app_id=f"dash-{traffic.topics.prefix}", data_dir=tmp_path
    )
    try:
        worker.wait_ready()
        traffic.thread.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 960})
            page_errors: list[str] = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{worker.port}/")

            # 1. The page loads and live events appear, from every partition.
            page.wait_for_selector('#status[data-state="live"]', timeout=15_000)
            first = wait_new_rows(page, set(), 20)
            assert {row["route"] for row in first} == set(ROUTES)
            assert {row["severity"] for row in first} >= {"info", "critical"}

            # 2. A filter narrows them: on the server (new rows obey it too).
            page.select_option("select[name=min_severity]", "critical")
            page.fill("input[name=route]", "/orders/*")
            page.wait_for_selector("#filter-state:has-text('filter applied')")
            seen = {row["trace"] for row in rows(page)}
            narrowed = wait_new_rows(page, seen, 5)
            for row in rows(page):
                assert row["severity"] == "critical", row
                assert row["route"].startswith("/orders/"), row

            # 3. The worker stops and starts again: the page reconnects by itself.
            worker.stop()
            page.wait_for_selector('#status[data-state="down"]', timeout=15_000)
            worker = restart(worker)
            worker.wait_ready()
            page.wait_for_selector('#status[data-state="live"]', timeout=30_000)
            seen |= {row["trace"] for row in narrowed}
            after = wait_new_rows(page, seen, 5)
            for row in after:  # the filter survived the reconnect
                assert row["severity"] == "critical" and row["route"].startswith("/orders/")
            assert page.locator("#counters").inner_text().startswith("session ")
            # Server-side filtering: after the confirmation, no event broke the filter.
            assert page.evaluate("document.body.dataset.unfiltered") is None

            page.wait_for_selector("#routes tbody tr", timeout=20_000)  # latency table filled
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            browser.close()
        assert not page_errors, page_errors
        assert not traffic.errors, traffic.errors[:3]
    finally:
        worker.stop()


async def test_either_workers_clients_see_every_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=4)
    pair = [
        start_worker(
            kafka_bootstrap, topics, app_id=f"{topics.prefix}-two", data_dir=tmp_path / f"w{i}"
        )
        for i in range(2)
    ]
    routes = {route_for_partition(p, topics.partitions): p for p in range(topics.partitions)}
    seen: list[set[str]] = [set(), set()]

    async def listen(worker: Worker, into: set[str]) -> None:
        async with websockets.connect(f"ws://127.0.0.1:{worker.port}/v1/ws/events") as ws:
            async for frame in ws:
                for line in str(frame).split("\n"):
                    message = json.loads(line)
                    if message["type"] == "event":
                        into.add(message["route"])

    try:
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready) for w in pair))
        deadline = time.monotonic() + 60
        while not all(w.pipeline()["owned_partitions"] > 0 for w in pair):
            assert time.monotonic() < deadline, "both workers never owned partitions"
            await asyncio.sleep(0.5)
        owned = [w.pipeline()["owned_partitions"] for w in pair]
        assert sum(owned) == topics.partitions and min(owned) < topics.partitions
        listeners = [asyncio.ensure_future(listen(w, s)) for w, s in zip(pair, seen, strict=True)]
        try:
            while not all(s == set(routes) for s in seen):  # the feeds start at the end: repeat
                assert time.monotonic() < deadline + 30, seen
                for listener in listeners:
                    if listener.done():
                        listener.result()
                now = time.time()
                events = [
                    make_event(route=route, started_at=now, elapsed_ms=4.0) for route in routes
                ]
                await produce(kafka_bootstrap, topics.probe, events, partitions=topics.partitions)
                await asyncio.sleep(0.5)
        finally:
            for listener in listeners:
                listener.cancel()
    finally:
        for worker in pair:
            worker.stop()
