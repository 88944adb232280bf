"""Tracing: traceparent continued or started, ids on every response and log line."""

from __future__ import annotations

import logging
import re

import pytest
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests.api.conftest import TOKEN, MakeClient

INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _ids(response) -> tuple[str, str, str]:
    match = TRACEPARENT.fullmatch(response.headers["traceparent"])
    assert match, response.headers["traceparent"]
    assert response.headers["x-trace-id"] == match[1]
    return match[1], match[2], match[3]


def test_incoming_traceparent_is_continued(client) -> None:
    response = client.get("/v1/health/live", headers={"traceparent": INCOMING})
    trace_id, span_id, flags = _ids(response)
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span_id != "00f067aa0ba902b7"  # our own server span
    assert flags == "00"  # the caller's sampling decision is kept


@pytest.mark.parametrize(
    "header",
    [
        None,
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ],
)
def test_missing_or_invalid_traceparent_starts_a_trace(client, header: str | None) -> None:
    headers = {"traceparent": header} if header else {}
    first = _ids(client.get("/v1/health/live", headers=headers))
    second = _ids(client.get("/v1/health/live", headers=headers))
    assert first[0] != second[0]
    assert first[0] != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first[2] == "01"


def test_errors_carry_the_continued_trace(make_client: MakeClient) -> None:
    client = make_client(api_token=TOKEN)
    for path in ("/v1/nothing", "/v1/metrics/network"):
        response = client.get(path, headers={"traceparent": INCOMING})
        assert response.status_code in (401, 404)
        assert response.json()["error"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert _ids(response)[0] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_one_log_line_per_request(client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="egresswatch.api"):
        response = client.get(
            "/v1/metrics/network?window=5m&limit=3", headers={"traceparent": INCOMING}
        )
        client.get("/v1/nothing")
    lines = [r for r in caplog.records if r.getMessage() == "request"]
    assert len(lines) == 2
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert fields["span_id"] == _ids(response)[1]
    assert fields["method"] == "GET"
    assert fields["path"] == "/v1/metrics/network"  # never the query string
    assert fields["status"] == 200
    assert fields["duration_ms"] >= 0
    assert fields["client"] == "10.1.2.3"
    assert lines[1].fields["status"] == 404  # type: ignore[attr-defined]


def test_log_line_is_json_with_the_trace(client, capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import json

    from pipeline.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("egresswatch.api")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        response = client.get("/v1/health/ready")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines() if '"request"' in x]
    assert line["trace_id"] == response.headers["x-trace-id"]
    assert line["status"] == 200 and line["path"] == "/v1/health/ready"


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"trace_id": websocket.scope["state"]["trace_id"]})
    await websocket.close()


def test_websocket_accept_carries_the_trace(make_client: MakeClient) -> None:
    client = make_client(extra_routes=[WebSocketRoute("/v1/ws/echo", _echo)])
    with client.websocket_connect("/v1/ws/echo", headers={"traceparent": INCOMING}) as ws:
        assert ws.receive_json() == {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
        headers: dict[bytes, bytes] = dict(ws.extra_headers or [])
    assert headers[b"x-trace-id"] == b"4bf92f3577b34da6a3ce929d0e0e4736"
