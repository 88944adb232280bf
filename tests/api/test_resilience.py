"""/resilience/state: the backend's shape, sorted, filtered by service."""

from __future__ import annotations

from tests.api.conftest import assert_error
from tests.api.fakes import RESILIENCE, FakeBackend


def test_state_is_the_backends_sorted(client) -> None:
    for path in ("/v1/resilience/state", "/resilience/state"):
        response = client.get(path)
        assert response.status_code == 200
        body = response.json()
        assert [(u["service"], u["upstream"]) for u in body["upstreams"]] == [
            ("checkout", "payments.local:443"),
            ("search", "index.local:9200"),
        ]
        assert body["pipeline"] == {"sink": None, "emitter": None}
        stuck = body["upstreams"][1]
        assert stuck == RESILIENCE["upstreams"][0]
        assert stuck["stuck_half_open"] is True
        assert stuck["last_transitions"][-1] == {
            "from": "open",
            "to": "half_open",
            "at": stuck["last_transitions"][-1]["at"],
        }


def test_filter_by_service(client) -> None:
    body = client.get("/v1/resilience/state", params={"service": "search"}).json()
    assert [u["upstream"] for u in body["upstreams"]] == ["index.local:9200"]
    assert client.get("/v1/resilience/state?service=none").json()["upstreams"] == []


def test_worker_shape_before_any_data(client, backend: FakeBackend) -> None:
    backend.resilience = {"upstreams": [], "pipeline": {}}
    assert client.get("/v1/resilience/state").json() == {"upstreams": [], "pipeline": {}}


def test_pipeline_protections_pass_through(client, backend: FakeBackend) -> None:
    sink = {"breaker_state": "open", "spool_bytes": 1024, "spool_fill": 0.25}
    backend.resilience = {"upstreams": [], "pipeline": {"sink": sink, "emitter": None}}
    assert client.get("/v1/resilience/state").json()["pipeline"]["sink"] == sink


def test_bad_parameters(client) -> None:
    assert_error(client.get("/v1/resilience/state?upstream=x"), 422, "unknown_parameter")
    assert_error(client.get("/v1/resilience/state?service="), 422, "invalid_service")
