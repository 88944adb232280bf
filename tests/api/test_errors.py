"""One JSON error body for every 4xx/5xx: router errors, handler errors, unhandled ones."""

from __future__ import annotations

import logging

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import ApiError
from tests.api.conftest import MakeClient, assert_error


@pytest.mark.parametrize("path", ["/v1/nothing", "/nothing", "/v2/metrics/network", "/"])
def test_404(client, path: str) -> None:
    body = assert_error(client.get(path), 404, "not_found")
    assert path in body["error"]["message"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize(
    "path", ["/v1/health/live", "/v1/metrics/network", "/v1/resilience/state", "/v1/metrics"]
)
def test_405_with_allow(client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_head_answers_without_a_body(client) -> None:
    response = client.head("/v1/metrics/network")
    assert response.status_code == 200 and response.content == b""


async def _boom(request: Request) -> Response:
    raise RuntimeError("secret detail that must not leak")


async def _teapot(request: Request) -> Response:
    raise ApiError(418, "teapot", "short and stout", headers={"X-Extra": "1"})


def test_unhandled_error_is_500_json_and_logged(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(extra_routes=[Route("/v1/boom", _boom)])
    with caplog.at_level(logging.INFO, logger="egresswatch.api"):
        response = client.get("/v1/boom")
    body = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text
    trace_id = body["error"]["trace_id"]
    errors = [r for r in caplog.records if r.exc_info]
    assert len(errors) == 1 and errors[0].fields["trace_id"] == trace_id  # type: ignore[attr-defined]
    assert "secret detail" in caplog.text
    lines = [r for r in caplog.records if r.getMessage() == "request"]
    assert lines[-1].fields["status"] == 500  # type: ignore[attr-defined]


def test_api_error_keeps_its_status_code_and_headers(make_client: MakeClient) -> None:
    client = make_client(extra_routes=[Route("/v1/teapot", _teapot)])
    response = client.get("/v1/teapot")
    body = assert_error(response, 418, "teapot")
    assert body["error"]["message"] == "short and stout"
    assert response.headers["x-extra"] == "1"
