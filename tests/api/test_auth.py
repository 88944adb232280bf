"""Bearer auth: everything but health when a token is set; WebSocket by header or ?token=."""

from __future__ import annotations

import pytest
from starlette.routing import WebSocketRoute
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocket

from tests.api.conftest import TOKEN, MakeClient, assert_error

PROTECTED = [
    "/v1/metrics/network",
    "/metrics/network",
    "/v1/resilience/state",
    "/v1/metrics",
    "/metrics",
    "/v1/openapi.json",
]


@pytest.fixture
def authed(make_client: MakeClient):
    return make_client(api_token=TOKEN, extra_routes=[WebSocketRoute("/v1/ws/events", _ws)])


@pytest.mark.parametrize("path", PROTECTED)
def test_401_without_a_token(authed, path: str) -> None:
    response = authed.get(path)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="egresswatch"'


@pytest.mark.parametrize(
    "header", [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"]
)
def test_401_with_a_wrong_token(authed, header: str) -> None:
    response = authed.get("/v1/metrics/network", headers={"Authorization": header})
    body = assert_error(response, 401, "unauthorized")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert TOKEN not in response.text and "invalid" in body["error"]["message"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
@pytest.mark.parametrize("path", PROTECTED)
def test_200_with_the_token(authed, scheme: str, path: str) -> None:
    response = authed.get(path, headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200, response.text


def test_query_token_is_for_websockets_only(authed) -> None:
    response = authed.get("/v1/metrics/network", params={"token": TOKEN})
    assert_error(response, 401, "unauthorized")


def test_unknown_paths_need_the_token_too(authed) -> None:
    assert_error(authed.get("/v1/nothing"), 401, "unauthorized")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert_error(authed.get("/v1/nothing", headers=headers), 404, "not_found")


def test_no_token_configured_means_open(client) -> None:
    for path in PROTECTED:
        assert client.get(path).status_code == 200


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def test_websocket_with_query_token_or_header(authed) -> None:
    with authed.websocket_connect(f"/v1/ws/events?token={TOKEN}") as ws:
        assert ws.receive_text() == "hello"
    with authed.websocket_connect(
        "/v1/ws/events", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as ws:
        assert ws.receive_text() == "hello"


@pytest.mark.parametrize("query", ["", "?token=wrong", "?token="])
def test_websocket_without_a_valid_token_is_refused_401(authed, query: str) -> None:
    with pytest.raises(WebSocketDenialResponse) as denied:
        with authed.websocket_connect(f"/v1/ws/events{query}"):
            pass
    assert denied.value.status_code == 401
    assert denied.value.json()["error"]["code"] == "unauthorized"
    assert "www-authenticate" in denied.value.headers
