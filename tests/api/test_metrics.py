"""/metrics: the backend's registry plus the API's own counters; OpenMetrics on request."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from api.app import create_api
from pipeline.settings import WorkerSettings
from tests.api.conftest import FakeClock, MakeClient
from tests.api.fakes import FakeBackend


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_scrape_at_both_paths(client) -> None:
    for path in ("/metrics", "/v1/metrics"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=")
        assert "egresswatch_fake_total 3.0" in response.text


def test_api_counters(make_client: MakeClient) -> None:
    client = make_client()
    client.get("/v1/health/live")
    client.get("/v1/health/live")
    client.get("/v1/nothing")
    samples = _samples(client.get("/metrics").text)
    assert samples[("egresswatch_fake_total", ())] == 3.0
    assert samples[("egresswatch_api_requests_total", (("code", "200"),))] == 2.0
    assert samples[("egresswatch_api_requests_total", (("code", "404"),))] == 1.0
    assert samples[("egresswatch_api_rate_limit_clients", ())] == 1.0
    assert samples[("egresswatch_api_rate_limit_overflow_total", ())] == 0.0
    assert samples[("egresswatch_api_rate_limit_evictions_total", ())] == 0.0


def test_refusals_are_counted_by_code(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = make_client(api_rate_per_s=1, api_burst=2, api_token="t", clock=clock)
    assert [client.get("/v1/metrics").status_code for _ in range(3)] == [401, 401, 429]
    clock.advance(10)
    text = client.get("/metrics", headers={"Authorization": "Bearer t"}).text
    samples = _samples(text)
    assert samples[("egresswatch_api_requests_total", (("code", "401"),))] == 2.0
    assert samples[("egresswatch_api_requests_total", (("code", "429"),))] == 1.0


def test_openmetrics_when_asked(client) -> None:
    client.get("/v1/health/live")
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert 'egresswatch_api_requests_total{code="200"} 1.0' in response.text


def test_collector_lives_with_the_app() -> None:
    registry = CollectorRegistry()
    backend = FakeBackend(registry=registry)
    for _ in range(2):  # a second app on the same registry after the first stopped
        app = create_api(WorkerSettings(), backend=backend)
        with TestClient(app) as client:
            assert "egresswatch_api_requests_total" in client.get("/metrics").text
        assert registry.get_sample_value("egresswatch_api_rate_limit_clients") is None
