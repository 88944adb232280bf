"""Every query of the provisioned Grafana dashboard answers from a real Prometheus scraping a
real worker fed by the probe, and its p99 agrees with the worker's REST API bucket-wise.

The stack: the test Kafka, one ``egresswatch worker``, the demo's faulty upstream
(``pipeline.demo_upstream``: lognormal latencies, a ``/flaky`` route failing 30% with 503,
a ``/slow`` one slower than the client's read timeout now and then), a probed httpx client
calling it through :class:`~pipeline.probe.ProbeTransport` and the Kafka emitter, and Debian's
Prometheus 2.42 scraping the worker every second with deploy/prometheus/rules.yml loaded
(config reload by SIGHUP, as an operator would). A garbage record and an event two minutes
behind its partition's watermark make the dead-letter and late-event series exist.

Grafana itself cannot be had here, so its part is done by hand: template variables filled
with the test's service and "All" routes (regex-escaped as Grafana does), interval macros
replaced by ``1m``. ``histogram_quantile`` interpolates inside a bucket (docs/metrics.md), so
the p99 check is bucket against bucket: the same or an adjacent bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import signal
import subprocess
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.partitioning import partition_for_key
from pipeline.probe import BreakerConfig, ProbeConfig, ProbeTransport, RetryConfig, Timeouts
from pipeline.probe.emitter import EmitterStats, KafkaEmitter
from tables.metrics import DURATION_BUCKETS
from tests.deploy.dashboard import ALL, Query, dashboard_queries, fill, load_dashboard
from tests.eventgen import make_event, produce
from tests.integration.test_worker import _create_topics
from tests.ports import free_port
from tests.prom import Prometheus, run_prometheus
from tests.workers import REPO, Topics, Worker, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SERVICE = "storefront"
ROUTE = "/users/{id}"
JOB = "egresswatch-workers"  # the job name compose gives the workers (rules match egresswatch*)
PARTITIONS = 2
TRAFFIC_S = 12.0
CALLERS = 4
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RULE_GROUPS = {"egresswatch-recording", "egresswatch-slo", "egresswatch-pipeline"}
_LABEL_VALUES = re.compile(r"label_values\((.+), (\w+)\)")


@contextlib.contextmanager
def demo_upstream(log: Path) -> Iterator[str]:
    """``python -m pipeline.demo_upstream`` on a free loopback port; stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "pipeline.demo_upstream", str(port)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            assert time.monotonic() < deadline, "demo upstream did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def load_rules(prom: Prometheus, config: Path) -> None:
    """Add rules.yml to the running Prometheus' config and reload it (SIGHUP)."""
    config.write_text(config.read_text() + f"rule_files:\n  - {json.dumps(str(RULES))}\n")
    prom.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: {g["name"] for g in prom.api("rules")["groups"]} == RULE_GROUPS,
        "rules.yml loaded",
        timeout=20,
    )


def wait_for(check: Callable[[], Any], what: str, *, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


async def probed_traffic(bootstrap: str, topic: str, upstream: str) -> EmitterStats:
    """CALLERS concurrent callers through the probe for TRAFFIC_S seconds (the demo's mix)."""
    config = ProbeConfig(
        service=SERVICE,
        route_templates=(ROUTE, "/orders/{id}/items"),
        timeouts=Timeouts(connect=1.0, read=0.5, write=1.0, pool=1.0),
        retry=RetryConfig(max_attempts=2, backoff_base_s=0.02),
        # Trip only when every call of the window fails: refused attempts are not sent, so
        # the API's sketch leaves them out while the histogram counts them at ~0 ms, and a
        # breaker opened by a loaded machine would make the p99s incomparable.
        breaker=BreakerConfig(failure_rate_threshold=1.0),
    )
    rng = random.Random(15)
    emitter = KafkaEmitter(bootstrap, service=SERVICE, topic=topic, flush_interval_s=0.2)
    transport = ProbeTransport(config, sink=emitter)
    end = time.monotonic() + TRAFFIC_S

    async def caller(client: httpx.AsyncClient) -> None:
        while time.monotonic() < end:
            path = rng.choice(
                [
                    f"/users/{rng.randint(1, 500)}",
                    f"/users/{rng.randint(1, 500)}",
                    f"/orders/{rng.randint(1, 99)}/items",
                    "/flaky",
                    "/slow",
                ]
            )
            with contextlib.suppress(httpx.HTTPError):
                await client.get(path)
            await asyncio.sleep(0.01)  # a caller's pace, whatever the upstream does

    try:
        async with httpx.AsyncClient(
            base_url=upstream, transport=transport, trust_env=False
        ) as client:
            await asyncio.gather(*(caller(client) for _ in range(CALLERS)))
    finally:
        stats = await emitter.aclose()
    assert stats.dropped_total == 0, stats
    return stats


async def dead_letter_and_late_event(bootstrap: str, topics: Topics) -> None:
    """A record that is no batch envelope, and an event 120 s behind its partition's
    watermark (a route of its own on the partition of ROUTE, so ROUTE's figures stay the
    probe's)."""
    partition = partition_for_key(f"{SERVICE}|GET|{ROUTE}", PARTITIONS)
    late_route = next(
        route
        for route in (f"/late/{n}" for n in range(10_000))
        if partition_for_key(f"{SERVICE}|GET|{route}", PARTITIONS) == partition
    )
    late = make_event(
        service=SERVICE, route=late_route, started_at=time.time() - 120, elapsed_ms=5.0
    )
    await produce(
        bootstrap,
        topics.probe,
        [late],
        partitions=PARTITIONS,
        extra_records=[(partition, b"not a batch envelope")],
    )


def scalar(prom: Prometheus, expr: str, at: float | None = None) -> float | None:
    result = prom.query(expr, at)
    return float(result[0]["value"][1]) if result else None


def run(prom: Prometheus, query: Query, expr: str, at: float) -> list[dict[str, Any]]:
    """The series a panel target, annotation or variable query gets from Prometheus."""
    variable = _LABEL_VALUES.fullmatch(expr)
    if variable:  # Grafana's label_values(selector, label): the label's values there
        selector, label = variable.groups()
        values = prom.api(f"label/{label}/values", **{"match[]": selector, "end": f"{at:.3f}"})
        return [{"metric": {label: v}, "value": [at, "1"]} for v in values]
    return prom.query(expr, at)


def bucket_of(seconds: float) -> int:
    """Index of the frozen histogram bucket holding ``seconds`` (upper bound inclusive)."""
    return bisect_left(DURATION_BUCKETS, seconds)


async def test_every_dashboard_query_answers_and_p99_agrees_with_the_api(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    worker = start_worker(
        kafka_bootstrap, topics, app_id=f"{topics.prefix}-g", data_dir=tmp_path / "worker"
    )
    try:
        with (
            demo_upstream(tmp_path / "upstream.log") as upstream,
            run_prometheus(
                [f"127.0.0.1:{worker.port}"], job=JOB, workdir=tmp_path / "prom"
            ) as prom,
        ):
            load_rules(prom, tmp_path / "prom" / "prometheus.yml")
            await asyncio.to_thread(worker.wait_ready)
            await asyncio.to_thread(prom.wait_up, JOB)
            stats = await probed_traffic(kafka_bootstrap, topics.probe, upstream)
            await dead_letter_and_late_event(kafka_bootstrap, topics)
            at = await asyncio.to_thread(settle, prom, stats.sent_events + 1)
            await asyncio.to_thread(check_every_query, prom, at)
            await asyncio.to_thread(check_what_the_series_say, prom, at)
            await asyncio.to_thread(check_p99_against_the_api, prom, worker, at)
    finally:
        worker.stop()


def settle(prom: Prometheus, events: int) -> float:
    """Wait until Prometheus has scraped every event, the dead letter, the late event and
    the rules' alerts; return a time to query at."""
    total = f'sum(egresswatch_outbound_requests_total{{service="{SERVICE}"}})'
    wait_for(lambda: (scalar(prom, total) or 0) >= events, f"{events} events scraped", timeout=40)
    wait_for(lambda: prom.query("egresswatch_dead_letters_total"), "a dead letter scraped")
    wait_for(lambda: prom.query("egresswatch_late_events_total > 0"), "a late event scraped")
    wait_for(lambda: prom.query('ALERTS{alertstate="firing"}'), "a rule's alert firing")
    firing = 'max(egresswatch_alert_log_episodes{state="firing"}) > 0'
    wait_for(lambda: prom.query(firing), "the worker's own SLO alert firing")
    time.sleep(2.5)  # two more scrapes: every rate() has its samples past the last step
    return time.time()


def check_every_query(prom: Prometheus, at: float) -> None:
    dashboard = load_dashboard()
    values = {"service": SERVICE, "route": ALL}
    queries = list(dashboard_queries(dashboard))
    assert len(queries) >= 25
    empty = []
    for query in queries:
        expr = fill(query.expr, dashboard, values)
        series = run(prom, query, expr, at)
        if query.where.startswith("variable "):
            offered = {s["metric"][query.where.removeprefix("variable ")] for s in series}
            wanted = {SERVICE} if query.where == "variable service" else {ROUTE, "/flaky"}
            assert wanted <= offered, f"{query.where} offers {offered}"
        finite = [s for s in series if math.isfinite(float(s["value"][1]))]
        if not finite:
            empty.append(f"{query.where}: {expr} -> {series}")
    assert not empty, "queries without a series:\n" + "\n".join(empty)


def check_what_the_series_say(prom: Prometheus, at: float) -> None:
    """The traffic's faults show where the panels look (the panels' own expressions)."""
    sel = f'service="{SERVICE}"'
    errors = prom.query(
        f"sum by (route, error_class) (egresswatch_outbound_errors_total{{{sel}}})", at
    )
    assert {"route": "/flaky", "error_class": "http_5xx"} in [e["metric"] for e in errors]
    timeouts = prom.query(f"sum by (route) (egresswatch_outbound_timeouts_total{{{sel}}})", at)
    assert "/slow" in {t["metric"]["route"] for t in timeouts}
    assert (scalar(prom, f"sum(egresswatch_outbound_retries_total{{{sel}}})", at) or 0) > 0
    states = prom.query(f"egresswatch_breaker_state{{{sel}}}", at)
    assert states and all(s["value"][1] in ("0", "1", "2") for s in states)
    assert prom.query('egresswatch_dead_letters_total{reason!=""}', at)
    alerts = {
        (a["metric"]["alertname"], a["metric"].get("route"))
        for a in prom.query('ALERTS{alertstate="firing"}', at)
    }
    assert ("EgressErrorBudgetFastBurn", "/flaky") in alerts, alerts
    assert ("EgresswatchDeadLetters", None) in alerts, alerts


def check_p99_against_the_api(prom: Prometheus, worker: Worker, at: float) -> None:
    dashboard = load_dashboard()
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Latency p99 per route"]
    expr = fill(panel["targets"][0]["expr"], dashboard, {"service": SERVICE, "route": ROUTE})
    (series,) = prom.query(expr, at)
    prom_p99 = float(series["value"][1])
    page = worker.get(
        "/v1/metrics/network", window="5m", service=SERVICE, route=ROUTE, method="GET"
    )
    (item,) = page["items"]
    api_p99 = float(item["p99_ms"]) / 1000
    count = scalar(
        prom,
        f'sum(egresswatch_outbound_request_duration_seconds_count{{service="{SERVICE}",'
        f'route="{ROUTE}"}})',
        at,
    )
    figures = (
        f"prometheus p99 {prom_p99:.4f} s (bucket {bucket_of(prom_p99)}), API p99 "
        f"{api_p99:.4f} s (bucket {bucket_of(api_p99)}), {item['requests']} requests in the "
        f"API's 5m view, {count} in Prometheus"
    )
    print(figures)
    assert item["breaker_open"] == 0, f"refused attempts make the p99s incomparable: {item}"
    assert count == item["requests"] > 100, figures
    assert abs(bucket_of(prom_p99) - bucket_of(api_p99)) <= 1, figures
