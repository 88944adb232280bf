"""The OpenAPI document: in step with the code, and schemathesis finds no 5xx and no
response that breaks it (status codes, content types, headers, bodies)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_api
from api.openapi import API_VERSION, openapi_document
from pipeline.settings import WorkerSettings
from tables.query import WindowStats
from tests.api.conftest import TOKEN, MakeClient
from tests.api.fakes import FakeBackend

DOC = openapi_document()


def test_served_document_is_the_built_one(client) -> None:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.json() == DOC
    assert DOC["openapi"] == "3.1.0" and DOC["info"]["version"] == API_VERSION


def test_window_stats_schema_matches_the_dataclass() -> None:
    schema = DOC["components"]["schemas"]["WindowStats"]
    names = [f.name for f in dataclasses.fields(WindowStats)]
    assert list(schema["properties"]) == names
    assert schema["required"] == names and schema["additionalProperties"] is False


def test_every_documented_path_answers_with_a_documented_status(client) -> None:
    for path, item in DOC["paths"].items():
        assert path.startswith("/v1/")
        response = client.get(path)
        assert str(response.status_code) in item["get"]["responses"], path
        assert response.status_code == 200


def test_every_operation_documents_its_errors() -> None:
    for path, item in DOC["paths"].items():
        op = item["get"]
        codes = set(op["responses"])
        assert {"200", "429", "500", "504"} <= codes, path
        public = path.startswith("/v1/health/")
        assert ("401" in codes) is not public, path
        assert ("422" in codes) is bool(op.get("parameters")), path
        assert op["security"] == ([] if public else [{"bearerAuth": []}, {}])


def test_unversioned_aliases_answer_like_v1(client) -> None:
    for path in DOC["paths"]:
        if path == "/v1/openapi.json":
            continue
        alias = path.removeprefix("/v1")
        a, b = client.get(path), client.get(alias)
        assert a.status_code == b.status_code == 200
        if a.headers["content-type"] == "application/json":
            assert a.json() == b.json(), alias


# -- schemathesis: every operation, generated inputs, every response checked ----------------

# Rate limiting off here (one client sends hundreds of requests); a tight-limit run below.
_app = create_api(WorkerSettings(api_rate_per_s=0), backend=FakeBackend())
schema = schemathesis.openapi.from_asgi("/v1/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()


# Only operations with parameters have invalid inputs to generate.
negative_schema = schemathesis.openapi.from_asgi("/v1/openapi.json", _app).include(
    operation_id=["metrics_network", "resilience_state"]
)
negative_schema.config.generation.update(modes=[schemathesis.GenerationMode.NEGATIVE])


@negative_schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis_invalid_inputs_are_rejected(case: schemathesis.Case[Any]) -> None:
    """Out-of-schema parameters get a documented 4xx (422), never a 5xx or a 200."""
    case.call_and_validate()


_not_ready = FakeBackend(reasons=["Kafka: partition assignment in progress"])
_limited_app = create_api(
    WorkerSettings(api_rate_per_s=0.001, api_burst=5, api_token=TOKEN), backend=_not_ready
)
limited_schema = schemathesis.openapi.from_dict(DOC)


@limited_schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis_not_ready_unauthorized_and_limited(case: schemathesis.Case[Any]) -> None:
    """503, 401 and 429 answers conform to the document too."""
    case.call_and_validate(app=_limited_app)


@pytest.mark.parametrize("token", [None, "wrong", TOKEN])
def test_auth_answers_conform(make_client: MakeClient, token: str | None) -> None:
    client = make_client(api_token=TOKEN)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get("/v1/resilience/state", headers=headers)
    assert str(response.status_code) in DOC["paths"]["/v1/resilience/state"]["get"]["responses"]
