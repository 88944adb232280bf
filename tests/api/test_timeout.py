"""Server-side timeout: 504 with the uniform body, the handler cancelled; WebSockets exempt;
over a real uvicorn server too (504, and a cut connection once a response has started)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from api.app import create_api
from pipeline.settings import WorkerSettings
from tests.api.conftest import MakeClient, assert_error
from tests.api.fakes import FakeBackend

pytestmark = pytest.mark.timeout(30)

cancelled: list[str] = []


async def _slow(request: Request) -> Response:
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        cancelled.append(request.url.path)
        raise
    return Response("late")


async def _own_timeout(request: Request) -> Response:
    raise TimeoutError("an upstream of the handler timed out")


async def _stream(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"first chunk\n"
        await asyncio.sleep(5)
        yield b"never\n"

    return StreamingResponse(body(), media_type="text/plain")


async def _slow_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await asyncio.sleep(0.3)  # longer than the HTTP timeout
    await websocket.send_text("still here")
    await websocket.close()


ROUTES: list[BaseRoute] = [
    Route("/v1/slow", _slow),
    Route("/v1/own-timeout", _own_timeout),
    Route("/v1/stream", _stream),
    WebSocketRoute("/v1/ws/slow", _slow_ws),
]


def test_slow_handler_gets_504_and_is_cancelled(make_client: MakeClient) -> None:
    cancelled.clear()
    client = make_client(api_timeout_s=0.1, extra_routes=ROUTES)
    started = time.monotonic()
    response = client.get("/v1/slow")
    assert time.monotonic() - started < 2
    body = assert_error(response, 504, "timeout")
    assert "0.1 s" in body["error"]["message"]
    assert cancelled == ["/v1/slow"]


def test_a_handlers_own_timeout_error_is_a_500(make_client: MakeClient) -> None:
    client = make_client(api_timeout_s=1, extra_routes=ROUTES)
    assert_error(client.get("/v1/own-timeout"), 500, "internal_error")


def test_fast_handlers_are_untouched(make_client: MakeClient) -> None:
    client = make_client(api_timeout_s=0.5, extra_routes=ROUTES)
    assert client.get("/v1/metrics/network").status_code == 200


def test_websockets_are_not_timed_out(make_client: MakeClient) -> None:
    client = make_client(api_timeout_s=0.05, extra_routes=ROUTES)
    with client.websocket_connect("/v1/ws/slow") as ws:
        assert ws.receive_text() == "still here"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns the signals
        yield


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """``app`` on a real uvicorn server on a free loopback port; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = _Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_over_a_real_server() -> None:
    app = create_api(WorkerSettings(api_timeout_s=0.2), backend=FakeBackend(), extra_routes=ROUTES)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.get("/v1/slow")
        assert_error(response, 504, "timeout")
        assert response.headers["traceparent"].startswith("00-")
        ok = await http.get("/v1/metrics/network", params={"window": "5m"})
        assert ok.status_code == 200 and ok.json()["total"] == 3
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/v1/stream")  # started, then cut: never a wrong 200
