"""A real Prometheus scrapes pipeline.scrape's server: PromQL agrees with the tables.

Every event is fed before the first scrape, so each scrape sees the same cumulative buckets
and ``histogram_quantile`` runs on the raw buckets at an explicit ``time=`` (no ``rate``).
``histogram_quantile`` interpolates inside a bucket, so the check is bucket against bucket:
the bucket holding the exact p99 (and the sketch's p99) must be the one holding
Prometheus' answer.
"""

from __future__ import annotations

import math
import time
import urllib.request
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from pipeline.schema import ProbeEvent, derive_severity
from pipeline.scrape import MetricsServer, serve_metrics
from tables.metrics import DURATION_BUCKETS, EgressMetrics
from tables.sketch import LatencySketch
from tests.prom import Prometheus, promtool_check_metrics, run_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

JOB = "egresswatch"
H = "egresswatch_outbound_request_duration_seconds"
KEY = {"service": "checkout", "route": "/payments/{id}", "method": "POST"}
SELECTOR = "{" + ",".join([f'job="{JOB}"', *(f'{k}="{v}"' for k, v in KEY.items())]) + "}"
N = 10_000
SEED = 20_261_129
FedServer = tuple[MetricsServer, np.ndarray, float]  # server, latencies (ms), first started_at


def lognormal_events(start: float) -> tuple[list[ProbeEvent], np.ndarray]:
    """N events of one key, latencies lognormal (median 80 ms, sigma 0.7), fixed seed."""
    latencies_ms = np.random.default_rng(SEED).lognormal(math.log(80.0), 0.7, N)
    events = []
    for i, ms in enumerate(latencies_ms.tolist()):
        events.append(
            ProbeEvent(
                service=KEY["service"],
                route=KEY["route"],
                method="POST",
                started_at=start + i * 0.001,
                elapsed_ms=ms,
                upstream="payments:8443",
                outcome="ok",
                status_code=200,
                severity=derive_severity(outcome="ok", status_code=200, elapsed_ms=ms),
                trace_id=f"{SEED:08x}{i + 1:024x}",
                request_id=f"{i + 1:016x}",
                logical_request_id=f"{i + 1:016x}",
                breaker_state="closed",
                pool_wait_ms=float(i % 7),
            )
        )
    return events, latencies_ms


def bucket_of(seconds: float) -> int:
    """Index of the histogram bucket holding ``seconds`` (le: upper bound inclusive)."""
    return bisect_left(DURATION_BUCKETS, seconds)


def bucket_name(index: int) -> str:
    low = "0" if index == 0 else repr(DURATION_BUCKETS[index - 1])
    high = "+Inf" if index == len(DURATION_BUCKETS) else repr(DURATION_BUCKETS[index])
    return f"({low}, {high}]"


@pytest.fixture
def fed_server() -> Iterator[FedServer]:
    start = time.time() - 120  # exemplar timestamps: recent, as live events would be
    events, latencies_ms = lognormal_events(start)
    metrics = EgressMetrics(CollectorRegistry())
    metrics.observe_many(events)
    with serve_metrics(metrics.registry, port=0) as server:
        yield server, latencies_ms, start


@pytest.fixture
def prometheus(fed_server: FedServer, tmp_path: Path) -> Iterator[Prometheus]:
    server = fed_server[0]
    with run_prometheus([f"127.0.0.1:{server.port}"], job=JOB, workdir=tmp_path / "prom") as prom:
        yield prom


def test_histogram_quantile_agrees_with_exact_and_sketch_p99_bucketwise(
    fed_server: FedServer, prometheus: Prometheus
) -> None:
    _, latencies_ms, start = fed_server
    at = prometheus.wait_up(JOB, min_samples=f"{H}_count{SELECTOR}")
    count = prometheus.query(f"{H}_count{SELECTOR}", at)
    assert len(count) == 1 and float(count[0]["value"][1]) == N
    result = prometheus.query(f"histogram_quantile(0.99, {H}_bucket{SELECTOR})", at)
    assert len(result) == 1, result
    prom_p99 = float(result[0]["value"][1])

    # Nearest rank: the value of 0-based rank ceil(0.99 N) - 1, the one Prometheus' rank
    # (0.99 * count) falls on; numpy "lower" and the sketch use floor(0.99 (N - 1)): the same.
    exact_p99 = float(np.sort(latencies_ms)[math.ceil(0.99 * N) - 1]) / 1000
    assert exact_p99 == float(np.quantile(latencies_ms, 0.99, method="lower")) / 1000
    sketch = LatencySketch()
    for ms in latencies_ms.tolist():
        sketch.add(ms)
    sketch_ms = sketch.quantile(0.99)
    assert sketch_ms is not None
    sketch_p99 = sketch_ms / 1000

    figures = (
        f"exact p99 {exact_p99:.4f} s, sketch p99 {sketch_p99:.4f} s, "
        f"prometheus p99 {prom_p99:.4f} s, bucket {bucket_name(bucket_of(exact_p99))}"
    )
    print(figures)
    assert bucket_of(prom_p99) == bucket_of(exact_p99), figures
    assert bucket_of(sketch_p99) == bucket_of(exact_p99), figures
    assert abs(sketch_p99 - exact_p99) <= 0.01 * exact_p99, figures

    # The latest exemplar of each bucket made it into Prometheus with its trace_id.
    found = prometheus.query_exemplars(f"{H}_bucket{SELECTOR}", start - 60, time.time() + 60)
    trace_ids = {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
    assert trace_ids, "no exemplar stored"
    assert all(t.startswith(f"{SEED:08x}") and len(t) == 32 for t in trace_ids)


def test_scraped_exposition_passes_promtool(
    fed_server: FedServer,
) -> None:
    server = fed_server[0]
    with urllib.request.urlopen(server.url, timeout=10) as rsp:
        text = rsp.read()
    check = promtool_check_metrics(text)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f'{H}_count{{method="POST",route="/payments/{{id}}",service="checkout"}} 10000.0' in (
        text.decode()
    )


def test_every_family_with_overflow_passes_promtool() -> None:
    metrics = EgressMetrics(CollectorRegistry(), max_series=100, pipeline_max_series=10)
    events, _ = lognormal_events(1_700_000_000.0)
    metrics.observe_many(events[:100])
    for i in range(300):  # overflow every open-label family
        metrics.observe(
            ProbeEvent(
                service=f"svc{i}",
                started_at=1_700_000_000.0,
                elapsed_ms=float(i),
                method="GET",
                route=f"/r{i}",
                upstream=f"up{i}:80",
                outcome="timeout",
                severity="critical",
                trace_id=f"{i + 1:032x}",
                request_id=f"{i + 1:016x}",
                logical_request_id=f"{i + 1:016x}",
                attempt=2,
                error_class="read_timeout",
                breaker_state="open",
                pool_wait_ms=5.0,
            )
        )
        metrics.inc_dead_letter(f"reason{i}")
        metrics.inc_late(f"svc{i}")
        metrics.inc_dropped("sink", f"reason{i}")
    with serve_metrics(metrics.registry, port=0) as server:
        with urllib.request.urlopen(server.url, timeout=10) as rsp:
            text = rsp.read()
    assert b'service="_overflow"' in text
    check = promtool_check_metrics(text)
    assert check.returncode == 0, check.stdout + check.stderr


def test_scrape_server_negotiates_openmetrics_and_frees_its_port() -> None:
    metrics = EgressMetrics(CollectorRegistry())
    metrics.observe_many(lognormal_events(1_700_000_000.0)[0][:10])
    server = serve_metrics(metrics.registry, port=0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        request = urllib.request.Request(
            server.url, headers={"Accept": "application/openmetrics-text;version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=10) as rsp:
            assert rsp.headers["Content-Type"].startswith("application/openmetrics-text")
            body = rsp.read().decode()
        assert body.endswith("# EOF\n") and '# {trace_id="' in body
    finally:
        server.close()
        server.close()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)
