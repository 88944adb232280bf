"""/v1/metrics/network/history: one point per bucket, the query layer's views, bounds, 422s."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_api
from api.routes.history import MAX_KEYS, POINT_FIELDS
from pipeline.settings import WorkerSettings
from tests.api.conftest import MakeClient, assert_error
from tests.api.fakes import FakeBackend, filled_view, many_keys_view
from tests.tables.factory import T0, make_event


def _get(client, **params):
    response = client.get("/v1/metrics/network/history", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_points_are_the_views_ending_at_each_bucket(client, backend: FakeBackend) -> None:
    body = _get(client, service="checkout", method="GET", route="/users/{id}", window="10s")
    assert body["window"] == "10s" and body["minutes"] == 10 and body["step_s"] == 10
    assert body["stream_time"] == backend.view.stream_time == T0 + 60
    assert body["total"] == 1
    (series,) = body["series"]
    assert (series["service"], series["method"], series["route"]) == (
        "checkout",
        "GET",
        "/users/{id}",
    )
    # 60 events over T0..T0+60, 10 a bucket: six 10 s views with 10 requests each.
    points = series["points"]
    assert [p["end"] for p in points] == [T0 + 10 * i for i in range(1, 7)]
    for point in points:
        assert list(point) == list(POINT_FIELDS)
        stats = backend.view.stats("checkout|GET|/users/{id}", "10s", end=point["end"])
        assert stats is not None
        assert point["requests"] == stats.requests == 10
        assert point["p99_ms"] == stats.p99_ms and point["errors"] == stats.errors


def test_a_1m_window_slides_over_the_buckets(client) -> None:
    (series,) = _get(client, service="checkout", method="GET", route="/users/{id}")["series"]
    requests = [p["requests"] for p in series["points"]]
    # The 1m view ending at bucket k holds the six buckets up to k; the stream ends at
    # T0 + 60 and the points before T0 have no requests (left out).
    assert requests == [10, 20, 30, 40, 50, 60]
    assert series["points"][-1]["end"] == T0 + 60


def test_minutes_bounds_how_far_back(make_client: MakeClient) -> None:
    events = [make_event(started_at=T0 + i * 10.0, elapsed_ms=5.0) for i in range(90)]
    backend = FakeBackend(view=filled_view(events))
    client = make_client(backend_=backend)
    (series,) = _get(client, window="10s", minutes=3)["series"]
    assert len(series["points"]) == 18
    assert series["points"][-1]["end"] == T0 + 900
    (series,) = _get(client, window="10s", minutes=15)["series"]
    assert len(series["points"]) == 90


def test_keys_are_sorted_and_limited(make_client: MakeClient) -> None:
    client = make_client(backend_=FakeBackend(view=many_keys_view(50)))
    body = _get(client)
    assert body["total"] == 50 and body["limit"] == 5 and len(body["series"]) == 5
    body = _get(client, limit=MAX_KEYS)
    routes = [s["route"] for s in body["series"]]
    assert len(routes) == MAX_KEYS
    keys = [f"{s['service']}|{s['method']}|{s['route']}" for s in body["series"]]
    assert keys == sorted(keys)


def test_an_unknown_key_has_no_series(client) -> None:
    body = _get(client, service="nope")
    assert body["series"] == [] and body["total"] == 0


def test_no_data_yet(make_client: MakeClient) -> None:
    client = make_client(backend_=FakeBackend(view=filled_view([])))
    body = _get(client)
    assert body["stream_time"] is None and body["series"] == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"window": "2m"}, "invalid_window"),
        ({"method": "get"}, "invalid_method"),
        ({"minutes": "0"}, "invalid_minutes"),
        ({"minutes": "16"}, "invalid_minutes"),
        ({"limit": str(MAX_KEYS + 1)}, "invalid_limit"),
        ({"limit": "x"}, "invalid_limit"),
        ({"service": ""}, "invalid_service"),
        ({"offset": "1"}, "unknown_parameter"),
    ],
)
def test_bad_parameters(client, params, code) -> None:
    name = next(iter(params))
    body = assert_error(client.get("/v1/metrics/network/history", params=params), 422, code)
    assert name in body["error"]["message"]


# -- schemathesis: out-of-schema inputs are refused with the documented 422 ----------------

_app = create_api(WorkerSettings(api_rate_per_s=0), backend=FakeBackend())
_negative = schemathesis.openapi.from_asgi("/v1/openapi.json", _app).include(
    operation_id=["metrics_network_history"]
)
_negative.config.generation.update(modes=[schemathesis.GenerationMode.NEGATIVE])


@_negative.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis_invalid_inputs_are_rejected(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()
