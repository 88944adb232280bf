"""The REST API of a real worker subprocess on the real Kafka: every endpoint, errors, auth
(``EGRESSWATCH_API_TOKEN``), tracing, 429, 503 while not ready, and schemathesis over HTTP.

(The request log line's content is checked in tests/api/test_tracing.py: in the worker,
Faust's logging setup decides which records reach the output.)

One worker serves the whole module (starting one takes ~10 s): the fixture records what
``/v1/health/ready`` answered from its first second, then waits for it to be ready and
feeds it a known workload.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from pipeline.app import topic_specs
from pipeline.schema import ProbeEvent
from pipeline.settings import WorkerSettings
from pipeline.topics import ensure_topics
from tables.windows import bucket_start
from tests.eventgen import make_event, produce
from tests.workers import Topics, Worker, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "integration-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PARTITIONS = 4
INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Served:
    worker: Worker
    base: str
    early: list[httpx.Response]  # /v1/health/ready answers until the first 200
    events: list[ProbeEvent]


def _workload() -> list[ProbeEvent]:
    """3 routes x 50 events within one 1m view, 10% 503s on /r0."""
    rng = random.Random(3)
    base = float(bucket_start(time.time()) - 300)
    events = []
    for r in range(3):
        for i in range(50):
            status = 503 if r == 0 and i % 10 == 0 else 200
            events.append(
                make_event(
                    route=f"/r{r}",
                    started_at=base + i,
                    elapsed_ms=float(10 * (r + 1) + i % 7),
                    status_code=status,
                    rng=rng,
                )
            )
    return events


def _ready_history(base: str, worker: Worker, timeout: float = 90.0) -> list[httpx.Response]:
    seen: list[httpx.Response] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited: {worker.tail()}")
        try:
            response = httpx.get(f"{base}/v1/health/ready", timeout=2)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        seen.append(response)
        if response.status_code == 200 and response.json()["pipeline"]["owned_partitions"] > 0:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"not ready after {timeout}s: {seen[-1].text if seen else None}")


@pytest.fixture(scope="module")
def served(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    topics = Topics(partitions=PARTITIONS)
    app_id = f"{topics.prefix}-api"
    settings = WorkerSettings(
        kafka_bootstrap=kafka_bootstrap,
        app_id=app_id,  # the changelog topic's name follows it: never a shared name
        probe_topic=topics.probe,
        dead_letter_topic=topics.dead_letters,
        alerts_topic=topics.alerts,
        probe_partitions=PARTITIONS,
    )
    asyncio.run(ensure_topics(kafka_bootstrap, topic_specs(settings)))
    data_dir: Path = tmp_path_factory.mktemp("api-worker")
    worker = start_worker(
        kafka_bootstrap,
        topics,
        app_id=app_id,
        data_dir=data_dir,
        extra_env={"EGRESSWATCH_API_TOKEN": TOKEN},
    )
    try:
        base = f"http://127.0.0.1:{worker.port}"
        early = _ready_history(base, worker)
        events = _workload()
        asyncio.run(produce(kafka_bootstrap, topics.probe, events, partitions=PARTITIONS))
        deadline = time.monotonic() + 60
        total = 0
        while time.monotonic() < deadline:
            page = httpx.get(
                f"{base}/v1/metrics/network", params={"window": "5m"}, headers=AUTH, timeout=5
            ).json()
            total = sum(item["requests"] for item in page["items"])
            if total == len(events):
                break
            time.sleep(0.5)
        assert total == len(events), worker.tail()
        yield Served(worker, base, early, events)
    finally:
        worker.stop()


def _get(served: Served, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{served.base}{path}", timeout=10, **kwargs)


def _assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"code", "message", "trace_id"}
    assert body["error"]["code"] == code
    assert body["error"]["trace_id"] == response.headers["x-trace-id"]
    return dict(body)


def test_503_while_not_ready_then_200(served: Served) -> None:
    first = served.early[0]
    body = _assert_error(first, 503, "not_ready")
    assert body["status"] == "not_ready" and body["reasons"]
    assert any("Kafka" in r or "tables" in r for r in body["reasons"]), body["reasons"]
    assert "owned_partitions" in body["pipeline"]
    assert served.early[-1].status_code == 200
    ready = _get(served, "/health/ready").json()  # the unversioned path, no token needed
    assert ready["status"] == "ready" and ready["reasons"] == []


def test_live_is_public(served: Served) -> None:
    for path in ("/v1/health/live", "/health/live"):
        response = _get(served, path)
        assert response.status_code == 200 and response.json() == {"status": "live"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/metrics/network",
        "/metrics/network",
        "/v1/resilience/state",
        "/resilience/state",
        "/v1/metrics",
        "/metrics",
        "/v1/openapi.json",
    ],
)
def test_token_is_required(served: Served, path: str) -> None:
    response = _get(served, path)
    _assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = _get(served, path, headers={"Authorization": "Bearer nope"})
    _assert_error(wrong, 401, "unauthorized")
    assert _get(served, path, headers=AUTH).status_code == 200


def test_network_values_filters_and_pagination(served: Served) -> None:
    body = _get(served, "/v1/metrics/network", params={"window": "5m"}, headers=AUTH).json()
    assert body["window"] == "5m" and body["total"] == 3
    items = {item["route"]: item for item in body["items"]}
    assert sorted(items) == ["/r0", "/r1", "/r2"]
    r0 = items["/r0"]
    assert r0["requests"] == 50 and r0["errors"] == 5 and r0["error_rate"] == 0.1
    assert r0["status_classes"] == {"2xx": 45, "5xx": 5}
    latencies = sorted(e.elapsed_ms for e in served.events if e.route == "/r0")
    assert r0["p50_ms"] == pytest.approx(latencies[24], rel=0.01)
    assert r0["p99_ms"] == pytest.approx(latencies[48], rel=0.01)
    assert all(len(t) == 32 for t in r0["example_trace_ids"])

    one = _get(
        served,
        "/metrics/network",
        params={"window": "5m", "route": "/r2", "method": "GET", "service": "checkout"},
        headers=AUTH,
    ).json()
    assert [i["route"] for i in one["items"]] == ["/r2"] and one["total"] == 1
    page = _get(
        served,
        "/v1/metrics/network",
        params={"window": "5m", "limit": 2, "offset": 2},
        headers=AUTH,
    ).json()
    assert page["total"] == 3 and [i["route"] for i in page["items"]] == ["/r2"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"window": "1h"}, "invalid_window"),
        ({"limit": "5000"}, "invalid_limit"),
        ({"offset": "x"}, "invalid_offset"),
        ({"method": "FETCH"}, "invalid_method"),
        ({"servce": "checkout"}, "unknown_parameter"),
    ],
)
def test_network_422(served: Served, params: dict[str, str], code: str) -> None:
    _assert_error(_get(served, "/v1/metrics/network", params=params, headers=AUTH), 422, code)


def test_resilience_state_shape(served: Served) -> None:
    body = _get(served, "/v1/resilience/state", headers=AUTH).json()
    assert isinstance(body["upstreams"], list) and isinstance(body["pipeline"], dict)
    for upstream in body["upstreams"]:
        assert upstream["breaker_state"] in ("closed", "open", "half_open", None)
        assert isinstance(upstream["stuck_half_open"], bool)


def test_metrics_scrape(served: Served) -> None:
    response = _get(served, "/metrics", headers=AUTH)
    assert response.headers["content-type"].startswith("text/plain")
    assert "egresswatch_api_requests_total{" in response.text
    assert 'code="401"' in response.text  # the refusals above are counted
    openmetrics = _get(
        served, "/v1/metrics", headers={**AUTH, "Accept": "application/openmetrics-text"}
    )
    assert openmetrics.text.endswith("# EOF\n")


def test_404_405_and_tracing(served: Served) -> None:
    missing = _get(served, "/v1/nothing", headers={**AUTH, "traceparent": INCOMING})
    body = _assert_error(missing, 404, "not_found")
    assert body["error"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert missing.headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    post = httpx.post(f"{served.base}/v1/metrics/network", headers=AUTH, timeout=5)
    _assert_error(post, 405, "method_not_allowed")
    assert "GET" in post.headers["allow"]
    fresh = _get(served, "/v1/health/live")
    assert len(fresh.headers["x-trace-id"]) == 32
    assert fresh.headers["x-trace-id"] != "4bf92f3577b34da6a3ce929d0e0e4736"


def test_schemathesis_over_http(served: Served) -> None:
    """No 5xx, no response outside the document (bodies, statuses, headers, content types),
    for valid and for invalid inputs. (Built in the test, not with ``from_fixture``, which
    does not run under pytest 9.)"""
    schema = schemathesis.openapi.from_url(f"{served.base}/v1/openapi.json", headers=AUTH)
    negative = schema.include(operation_id=["metrics_network", "resilience_state"])
    cases = schema.as_strategy() | negative.as_strategy(schemathesis.GenerationMode.NEGATIVE)
    calls: list[int] = []

    @given(case=cases)
    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate(headers=AUTH, timeout=10)
        calls.append(response.status_code)

    check()
    assert len(calls) >= 60 and max(calls) < 500, sorted(set(calls))
    assert {200, 422} <= set(calls)  # both valid and invalid inputs reached the handlers


async def test_429_when_a_client_exceeds_its_bucket(served: Served) -> None:
    """Last: it empties this client's bucket (default 50/s, burst 100)."""
    await asyncio.sleep(2.5)  # refill after the tests above
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as client:
        responses = await asyncio.gather(*(client.get("/v1/health/live") for _ in range(250)))
    limited = [r for r in responses if r.status_code == 429]
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) >= 100 and len(limited) >= 50, (len(ok), len(limited))
    body = _assert_error(limited[0], 429, "rate_limited")
    assert int(limited[0].headers["retry-after"]) >= 1
    assert "retry" in body["error"]["message"]
