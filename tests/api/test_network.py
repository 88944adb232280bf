"""/metrics/network: values from the query layer, filters, pagination, 422s."""

from __future__ import annotations

import math

import pytest

from tables.query import WindowStats
from tests.api.conftest import MakeClient, assert_error
from tests.api.fakes import FakeBackend, many_keys_view
from tests.tables.factory import T0


def _get(client, **params):
    response = client.get("/v1/metrics/network", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_items_are_the_query_layers_stats(client, backend: FakeBackend) -> None:
    body = _get(client, window="5m")
    expected, total = backend.view.query(view="5m", limit=100)
    assert body["window"] == "5m"
    assert body["total"] == total == 3
    assert body["offset"] == 0 and body["limit"] == 100
    assert body["stream_time"] == backend.view.stream_time == T0 + 60
    assert [item["route"] for item in body["items"]] == ["/users/{id}", "/orders", "/q"]
    for item, stats in zip(body["items"], expected, strict=True):
        assert set(item) == set(WindowStats.__dataclass_fields__)
        for name in ("requests", "errors", "rate_per_s", "status_classes", "error_classes"):
            assert item[name] == getattr(stats, name)
        for name in ("p50_ms", "p95_ms", "p99_ms"):
            assert math.isclose(item[name], getattr(stats, name))
        assert item["example_trace_ids"] == list(stats.example_trace_ids)


def test_p50_p95_p99_and_rates_of_a_known_key(client) -> None:
    (item,) = _get(client, window="5m", service="checkout", method="GET")["items"]
    assert item["route"] == "/users/{id}"
    assert item["requests"] == 60 and item["errors"] == 6
    assert item["error_rate"] == pytest.approx(0.1)
    assert item["rate_per_s"] == pytest.approx(60 / 300)
    # Latencies 1..60 ms; the sketch is accurate to 1%.
    assert item["p50_ms"] == pytest.approx(30, rel=0.02)
    assert item["p95_ms"] == pytest.approx(57, rel=0.02)
    assert item["p99_ms"] == pytest.approx(59, rel=0.02)
    assert item["status_classes"] == {"2xx": 54, "5xx": 6}


def test_default_window_is_1m_and_views_differ(client) -> None:
    assert _get(client)["window"] == "1m"
    ten = {i["route"]: i["requests"] for i in _get(client, window="10s")["items"]}
    five = {i["route"]: i["requests"] for i in _get(client, window="5m")["items"]}
    assert five["/users/{id}"] == 60
    assert ten["/users/{id}"] == 10  # the last 10 s bucket only


@pytest.mark.parametrize(
    ("filters", "routes"),
    [
        ({"service": "search"}, ["/q"]),
        ({"service": "checkout"}, ["/users/{id}", "/orders"]),
        ({"method": "POST"}, ["/orders"]),
        ({"route": "/users/{id}"}, ["/users/{id}"]),
        ({"service": "checkout", "route": "/q"}, []),
        ({"service": "nobody"}, []),
    ],
)
def test_filters(client, filters: dict[str, str], routes: list[str]) -> None:
    body = _get(client, window="5m", **filters)
    assert [i["route"] for i in body["items"]] == routes
    assert body["total"] == len(routes)


def test_pagination_walks_every_key_once(make_client: MakeClient) -> None:
    backend = FakeBackend(view=many_keys_view(2_345))
    client = make_client(backend_=backend)
    seen: list[str] = []
    offset = 0
    while True:
        body = _get(client, window="10s", limit=1000, offset=offset)
        assert body["total"] == 2_345
        seen.extend(f"{i['service']}|{i['method']}|{i['route']}" for i in body["items"])
        offset += 1000
        if offset >= body["total"]:
            break
    assert seen == backend.view.keys() and len(seen) == 2_345
    past = _get(client, offset=5000)
    assert past["items"] == [] and past["total"] == 2_345


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        ({"window": "2m"}, "invalid_window", "10s, 1m, 5m"),
        ({"limit": "0"}, "invalid_limit", "1..1000"),
        ({"limit": "1001"}, "invalid_limit", "1..1000"),
        ({"limit": "ten"}, "invalid_limit", "'ten'"),
        ({"limit": "-1"}, "invalid_limit", "1..1000"),
        ({"offset": "-5"}, "invalid_offset", "0..1000000000"),
        ({"offset": "1.5"}, "invalid_offset", "integer"),
        ({"offset": "9" * 5000}, "invalid_offset", "..."),
        ({"offset": "\u0663"}, "invalid_offset", "integer"),  # an Arabic-Indic digit
        ({"method": "get"}, "invalid_method", "GET"),
        ({"service": ""}, "invalid_service", "1 to 64"),
        ({"service": "s" * 65}, "invalid_service", "got 65"),
        ({"route": "/" + "r" * 256}, "invalid_route", "1 to 256"),
        ({"sevice": "checkout"}, "unknown_parameter", "'sevice'"),
    ],
)
def test_bad_parameters_are_422_with_specific_messages(
    client, params: dict[str, str], code: str, fragment: str
) -> None:
    body = assert_error(client.get("/v1/metrics/network", params=params), 422, code)
    assert fragment in body["error"]["message"]


def test_repeated_parameter_is_422(client) -> None:
    response = client.get("/v1/metrics/network?window=1m&window=5m")
    body = assert_error(response, 422, "repeated_parameter")
    assert "'window'" in body["error"]["message"]


def test_empty_view(make_client: MakeClient) -> None:
    from tables.query import SummaryView

    client = make_client(backend_=FakeBackend(view=SummaryView()))
    body = _get(client)
    assert body == {
        "window": "1m",
        "stream_time": None,
        "total": 0,
        "offset": 0,
        "limit": 100,
        "items": [],
    }


def test_unversioned_alias_answers_the_same(client) -> None:
    params = {"window": "5m", "service": "checkout"}
    a = client.get("/v1/metrics/network", params=params).json()
    b = client.get("/metrics/network", params=params).json()
    assert a == b
