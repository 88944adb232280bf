"""/v1/alerts: the AlertLog through the real app, filters, time parsing, uniform 422s."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.alert_log import AlertLog
from api.app import create_api
from api.openapi import openapi_document
from api.routes.alerts import MAX_EPOCH, parse_instant
from pipeline.settings import WorkerSettings
from tables.alerting import AlertRecord
from tests.api.alert_records import T0, firing, follow_up
from tests.api.conftest import assert_error
from tests.api.fakes import FakeBackend

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette prefers httpx2 for its TestClient
    from starlette.testclient import TestClient


@pytest.fixture
def log() -> AlertLog:
    log = AlertLog(clock=lambda: T0 + 1000)
    a = firing(1, at=T0)
    log.record(a)
    log.record(follow_up(a, "resolved", T0 + 50))
    log.record(firing(2, service="search", route="/q", rule="latency-p99", at=T0 + 100))
    log.record(firing(3, route="*", method="*", at=T0 + 200))
    return log


@pytest.fixture
def alerts_client(log: AlertLog) -> Iterator[TestClient]:
    app = create_api(WorkerSettings(), backend=FakeBackend(), alerts=log)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def ids(body: dict[str, Any]) -> list[int]:
    return [int(item["alert_id"], 16) for item in body["items"]]


def test_every_alert_firing_first_with_its_record_and_state(alerts_client, log) -> None:
    response = alerts_client.get("/v1/alerts")
    assert response.status_code == 200
    body = response.json()
    assert ids(body) == [3, 2, 1]
    assert (body["total"], body["firing"], body["resolved"]) == (3, 2, 1)
    assert [item["state"] for item in body["items"]] == ["firing", "firing", "resolved"]
    resolved = body["items"][2]
    assert resolved["status"] == "resolved" and resolved["resolved_at"] == T0 + 50
    assert set(resolved) == {*AlertRecord.__struct_fields__, "state"}
    assert body["log"]["held"] == 3 and body["log"]["capacity"] == log.capacity
    assert body["log"]["dropped_total"] == 0
    assert alerts_client.get("/alerts").json() == body  # the seed's unversioned alias


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"service": "checkout"}, [3, 1]),
        ({"route": "*"}, [3]),
        ({"rule": "latency-p99"}, [2]),
        ({"state": "firing"}, [3, 2]),
        ({"state": "resolved"}, [1]),
        ({"since": str(T0 + 60)}, [3, 2]),
        ({"until": str(T0 + 100)}, [1]),
        ({"since": "2025-11-24T16:01:40Z", "until": "2025-11-24T16:02:30"}, [2]),
        ({"since": str(T0 + 10), "until": str(T0 + 10)}, []),
        ({"service": "checkout", "state": "firing"}, [3]),
    ],
)
def test_filters(alerts_client, params, expected) -> None:
    assert datetime.fromtimestamp(T0 + 100, UTC).isoformat() == "2025-11-24T16:01:40+00:00"
    response = alerts_client.get("/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    assert ids(response.json()) == expected


@pytest.mark.parametrize(
    ("params", "code", "named"),
    [
        ({"state": "pending"}, "invalid_state", "state"),
        ({"since": "yesterday"}, "invalid_since", "since"),
        ({"until": "-5"}, "invalid_until", "until"),
        ({"since": "nan"}, "invalid_since", "since"),
        ({"service": ""}, "invalid_service", "service"),
        ({"rule": "r" * 65}, "invalid_rule", "rule"),
        ({"route": "x" * 257}, "invalid_route", "route"),
        ({"severity": "page"}, "unknown_parameter", "severity"),
    ],
)
def test_bad_parameters_get_a_uniform_422_naming_the_parameter(
    alerts_client, params, code, named
) -> None:
    body = assert_error(alerts_client.get("/v1/alerts", params=params), 422, code)
    assert named in body["error"]["message"]


def test_repeated_parameter(alerts_client) -> None:
    response = alerts_client.get("/v1/alerts?state=firing&state=resolved")
    assert_error(response, 422, "repeated_parameter")


def test_an_app_without_a_log_answers_empty(client) -> None:
    body = client.get("/v1/alerts").json()
    assert body["items"] == [] and body["total"] == 0 and body["log"]["held"] == 0


# -- the time parser ------------------------------------------------------------------------


@given(st.floats(min_value=0, max_value=MAX_EPOCH, exclude_max=True))
def test_epoch_seconds_round_trip(seconds: float) -> None:
    assert parse_instant(repr(seconds)) == seconds


@given(st.datetimes(timezones=st.timezones() | st.none()))
def test_iso_times_parse_as_utc_when_naive(moment: datetime) -> None:
    parsed = parse_instant(moment.isoformat())
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    assert math.isclose(parsed, max(0.0, aware.timestamp()), abs_tol=1e-6)


@given(st.text(max_size=40))
def test_any_text_parses_or_says_why(text: str) -> None:
    try:
        value = parse_instant(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert math.isfinite(value) and value >= 0


def test_rfc3339_lower_case_and_z() -> None:
    assert parse_instant("2025-11-24t16:00:00z") == T0
    assert parse_instant("2025-11-24T16:00:00Z") == T0
    assert parse_instant(str(int(T0))) == T0


# -- the contract -----------------------------------------------------------------------------


def test_alert_item_schema_is_the_record_plus_state() -> None:
    schema = openapi_document()["components"]["schemas"]["AlertItem"]
    assert list(schema["properties"]) == [*AlertRecord.__struct_fields__, "state"]
    assert schema["additionalProperties"] is False


def _filled_log() -> AlertLog:
    log = AlertLog(clock=lambda: T0 + 1000)
    a = firing(1, at=T0)
    log.record(a)
    log.record(follow_up(a, "resolved", T0 + 50))
    log.record(firing(2, service="search", route="/q", objective=None, burn_rate=None, at=T0 + 9))
    return log


_app = create_api(WorkerSettings(api_rate_per_s=0), backend=FakeBackend(), alerts=_filled_log())
_schema = schemathesis.openapi.from_asgi("/v1/openapi.json", _app).include(operation_id=["alerts"])


@_schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis_with_alerts_held(case: schemathesis.Case[Any]) -> None:
    """Every schema-valid query is accepted, and answers with items that fit the contract."""
    case.call_and_validate()
