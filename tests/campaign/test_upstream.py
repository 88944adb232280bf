"""The fault upstream for real: an in-process server on 127.0.0.1 and a real httpx client.

Each HTTP fault kind is checked the way a caller meets it (status, httpx exception, time),
plus route targeting, seeded determinism, the control API's errors, the bounds (head size,
connections, hangs, idle) and the module's subprocess entry point with :class:`UpstreamControl`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.campaign._upstream_faults import FaultError, compile_route, parse_fault
from pipeline.campaign._upstream_http import MAX_HEADER_BYTES
from pipeline.campaign.netns import LossyHost
from pipeline.campaign.profile import HTTP_FAULTS, load_plan
from pipeline.campaign.upstream import (
    UpstreamConfig,
    UpstreamControl,
    UpstreamControlError,
    UpstreamServer,
    json_body,
)

REPO = Path(__file__).resolve().parents[2]


async def started(**overrides: Any) -> tuple[UpstreamServer, str]:
    config = UpstreamConfig(**{"median_ms": 1.0, "sigma": 0.0, "seed": 7, **overrides})
    server = UpstreamServer(config)
    host, port = await server.start()
    return server, f"http://{host}:{port}"


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[UpstreamServer, httpx.AsyncClient]]:
    server, url = await started()
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        yield server, client
    await server.close()


async def put(client: httpx.AsyncClient, fault_id: str, kind: str, route: str | None = None,
              **params: Any) -> httpx.Response:  # fmt: skip
    return await client.put(
        f"/_faults/{fault_id}", json={"kind": kind, "route": route, "params": params}
    )


# --------------------------------------------------------------------------- normal answers


async def test_normal_answer_is_a_json_body_of_body_bytes_after_the_lognormal_delay() -> None:
    server, url = await started(median_ms=30.0, sigma=0.0, body_bytes=700)
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            began = time.monotonic()
            response = await client.get("/users/12?x=1")
            elapsed = time.monotonic() - began
        assert response.status_code == 200
        assert len(response.content) == 700
        assert json.loads(response.content)["ok"] is True
        assert 0.03 <= elapsed < 1.0
        assert server.stats.requests == 1 and server.stats.by_status == {"200": 1}
    finally:
        await server.close()


def test_json_body_has_the_exact_size_and_parses() -> None:
    for size in (1, 2, 5, 19, 20, 21, 512):
        body = json_body(size)
        assert len(body) == size
        json.loads(body)
    assert json_body(0) == b""


# --------------------------------------------------------------------------- each fault kind


async def test_http_latency_replaces_the_normal_delay_on_its_route(upstream) -> None:
    server, client = upstream
    assert (
        await put(client, "slow", "http_latency", "/search", median_ms=150, sigma=0)
    ).status_code == 204
    began = time.monotonic()
    assert (await client.get("/search")).status_code == 200
    assert time.monotonic() - began >= 0.15
    began = time.monotonic()
    await client.get("/users/1")
    assert time.monotonic() - began < 0.1
    assert server.stats.fault_hits == {"slow": 1}


async def test_http_5xx_and_429_give_their_statuses(upstream) -> None:
    server, client = upstream
    await put(client, "a", "http_5xx", "/orders/{id}/items", status=502)
    await put(client, "b", "http_429", "/search", retry_after_s=3)
    await put(client, "c", "http_5xx", "/users/{id}")
    bad = await client.get("/orders/9/items")
    assert bad.status_code == 502 and bad.json() == {
        "error": "injected",
        "fault": "a",
        "status": 502,
    }
    limited = await client.get("/search")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert (await client.get("/users/1")).status_code == 503
    assert (await client.get("/health")).status_code == 200  # control paths are never faulted
    stats = server.stats
    assert stats.by_status["502"] == 1 and stats.by_status["429"] == 1
    assert stats.fault_hits == {"a": 1, "b": 1, "c": 1}


async def test_http_reset_is_a_connection_reset_not_a_clean_answer(upstream) -> None:
    server, client = upstream
    await put(client, "r", "http_reset")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await client.get("/users/1")
    # At the socket level it is an RST: the read fails instead of returning b"" (EOF).
    port = client.base_url.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    with pytest.raises(ConnectionResetError):
        data = await reader.read(100)
        raise AssertionError(f"got {data!r} instead of a reset")
    writer.close()
    assert server.stats.resets == 2


async def test_http_truncated_body_promises_more_than_it_sends(upstream) -> None:
    server, client = upstream
    await put(client, "t", "http_truncated_body", fraction=0.25)
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete|complete message"):
        async with client.stream("GET", "/users/1") as response:
            assert response.headers["content-length"] == "512"
            async for piece in response.aiter_raw():
                received += piece
    assert len(received) == 128
    assert server.stats.truncations == 1


async def test_http_hang_outlasts_the_client_timeout_and_its_cap_is_counted() -> None:
    server, url = await started(max_hangs=1)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as control:
            await put(control, "h", "http_hang", "/users/{id}", hang_s=1.0)
            async with httpx.AsyncClient(base_url=url, timeout=0.2) as caller:
                first = asyncio.create_task(caller.get("/users/1"))
                await asyncio.sleep(0.05)
                assert server.stats.hangs_in_progress == 1
                second = await caller.get("/users/2")  # cap reached: refused at once
                assert second.status_code == 503 and "hang" in second.json()["error"]
                with pytest.raises(httpx.ReadTimeout):
                    await first
            stats = (await control.get("/_stats")).json()
        assert stats["hangs_total"] == 1 and stats["hang_overflows"] == 1
    finally:
        await server.close()
    assert server.stats.hangs_in_progress == 0  # close() ends the hang


async def test_http_slow_body_arrives_in_delayed_chunks(upstream) -> None:
    server, client = upstream
    await put(client, "s", "http_slow_body", chunks=4, chunk_delay_s=0.06)
    arrivals: list[float] = []
    body = bytearray()
    began = time.monotonic()
    async with client.stream("GET", "/users/1") as response:
        async for piece in response.aiter_raw():
            arrivals.append(time.monotonic() - began)
            body += piece
    assert len(body) == 512 and json.loads(body)["ok"] is True
    assert arrivals[-1] >= 0.24
    assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] >= 0.1
    assert server.stats.slow_bodies == 1 and server.stats.by_status["200"] == 1


# --------------------------------------------------------------------------- targeting, seeds


async def test_route_template_targets_only_its_own_paths(upstream) -> None:
    _, client = upstream
    await put(client, "u", "http_5xx", "/users/{id}")
    assert (await client.get("/users/123")).status_code == 503
    assert (await client.get("/users/123?full=1")).status_code == 503
    for path in ("/users", "/users/", "/users/1/orders", "/orders/1/items", "/search"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.delete("/_faults/u")).status_code == 204
    assert (await client.get("/users/123")).status_code == 200


async def statuses(seed: int, count: int) -> list[int]:
    server, url = await started(seed=seed)
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            await put(client, "half", "http_5xx", rate=0.5)
            await put(client, "tenth", "http_429", "/users/{id}", rate=0.1)
            return [(await client.get(f"/users/{i}")).status_code for i in range(count)]
    finally:
        await server.close()


async def test_fault_choice_is_deterministic_given_the_seed_and_request_order() -> None:
    first, again, other = await statuses(3, 60), await statuses(3, 60), await statuses(4, 60)
    assert first == again
    assert first != other
    assert {200, 503} <= set(first)


# --------------------------------------------------------------------------- control API


async def test_control_api_lists_replaces_and_deletes_faults(upstream) -> None:
    _, client = upstream
    await put(client, "x", "http_5xx", "/search")
    await put(client, "x", "http_429", None, rate=0.5)  # same id: replaced
    listed = (await client.get("/_faults")).json()["faults"]
    assert listed == [
        {"id": "x", "kind": "http_429", "route": None, "params": {"rate": 0.5, "retry_after_s": 1}}
    ]
    assert (await client.delete("/_faults/x")).status_code == 204
    missing = await client.delete("/_faults/x")
    assert missing.status_code == 404 and "'x'" in missing.json()["error"]
    assert (await client.get("/_faults")).json() == {"faults": []}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "http_teapot"}, "unknown kind 'http_teapot'"),
        ({"kind": "http_5xx", "params": {"status": 404}}, "'status' must be in [500, 599]"),
        ({"kind": "http_5xx", "params": {"rate": "half"}}, "'rate' must be a number"),
        ({"kind": "http_5xx", "params": {"rate": 1.5}}, "'rate' must be in [0, 1]"),
        ({"kind": "http_hang", "params": {"hang": 3}}, "unknown param(s) 'hang'"),
        ({"kind": "http_slow_body", "params": {"chunks": 2.5}}, "'chunks' must be an integer"),
        ({"kind": "http_reset", "route": "users"}, "must start with /"),
        ({"kind": "http_reset", "route": 5}, "route must be a string or null"),
        ({"kind": "http_reset", "params": [1]}, "params must be an object"),
        ({"kind": "http_reset", "when": 1}, "unknown field(s) 'when'"),
        ([1, 2], "must be a JSON object"),
    ],
)
async def test_put_refuses_bad_faults_with_a_400_naming_the_problem(
    upstream, body, message
) -> None:
    server, client = upstream
    response = await client.put("/_faults/f1", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert server.table.faults() == ()


async def test_control_api_other_errors(upstream) -> None:
    _, client = upstream
    not_json = await client.put("/_faults/f", content=b"{nope")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    bad_id = await client.put("/_faults/a%20b", json={"kind": "http_reset"})
    assert bad_id.status_code == 400 and "fault id" in bad_id.json()["error"]
    assert (await client.post("/_faults")).status_code == 405
    assert (await client.post("/_stats")).status_code == 405
    assert (await client.get("/_nothing")).status_code == 404
    for index in range(64):
        assert (await put(client, f"f{index}", "http_reset", "/never")).status_code == 204
    full = await put(client, "one-more", "http_reset")
    assert full.status_code == 400 and "too many active faults" in full.json()["error"]


# --------------------------------------------------------------------------- bounds


async def raw_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_oversized_head_bad_request_and_keep_alive_on_raw_sockets(upstream) -> None:
    server, client = upstream
    port = client.base_url.port
    assert port is not None
    huge = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n"
    assert (await raw_exchange(port, huge)).startswith(b"HTTP/1.1 431 ")
    assert (await raw_exchange(port, b"NOT HTTP\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert (await raw_exchange(port, chunked)).startswith(b"HTTP/1.1 501 ")
    two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n"
    answer = await raw_exchange(port, two)
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and b"Connection: close" in answer
    assert server.stats.header_overflows == 1 and server.stats.bad_requests == 2


async def test_connection_cap_and_idle_timeout_are_counted() -> None:
    server, url = await started(max_connections=1, idle_timeout_s=0.3)
    port = int(url.rsplit(":", 1)[1])
    try:
        _, holder = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        refused = await raw_exchange(port, b"GET / HTTP/1.1\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503 ") and b"too many connections" in refused
        await asyncio.sleep(0.5)  # the idle holder is closed, room for a new one
        assert (await raw_exchange(port, b"GET / HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.1 200")
        holder.close()
        assert server.stats.connection_overflows == 1 and server.stats.idle_timeouts == 1
    finally:
        await server.close()


# --------------------------------------------------------------------------- parsing rules

_SEGMENT = st.text(alphabet="abcxyz019-_.", min_size=1, max_size=8)


@given(
    pieces=st.lists(st.one_of(_SEGMENT, st.just(None)), min_size=1, max_size=5),
    values=st.lists(_SEGMENT, min_size=5, max_size=5),
    other=_SEGMENT,
)
def test_route_template_matches_its_own_paths_and_nothing_else(
    pieces: list[str | None], values: list[str], other: str
) -> None:
    template = "/" + "/".join(p if p is not None else f"{{p{i}}}" for i, p in enumerate(pieces))
    path = "/" + "/".join(p if p is not None else values[i] for i, p in enumerate(pieces))
    pattern = compile_route(template)
    assert pattern.fullmatch(path)
    assert not pattern.fullmatch(path + "/" + other)  # one segment too many
    assert not pattern.fullmatch(path.rsplit("/", 1)[0] or "/")  # one segment too few
    literal = next((i for i, p in enumerate(pieces) if p is not None), None)
    if literal is not None and other != pieces[literal]:
        changed = list(path.split("/")[1:])
        changed[literal] = other
        assert not pattern.fullmatch("/" + "/".join(changed))
    if None in pieces:  # a parameter is one segment: a value with a slash does not fit
        spanning = "/" + "/".join(p if p is not None else "a/b" for p in pieces)
        assert not pattern.fullmatch(spanning)


def test_route_templates_that_are_not_refused_and_regex_characters_are_literal() -> None:
    for bad in ("users/{id}", "/users/{id", "/users/{a/b}", "/x/}"):
        with pytest.raises(FaultError):
            compile_route(bad)
    assert compile_route("/v1.0/{id}").fullmatch("/v1.0/7")
    assert not compile_route("/v1.0/{id}").fullmatch("/v1x0/7")
    assert compile_route("/files/{name}.json").fullmatch("/files/a.json")


def test_every_profile_kind_parses_with_defaults_filled_in() -> None:
    for kind in sorted(HTTP_FAULTS):
        spec = parse_fault("id-1", {"kind": kind})
        assert spec.params["rate"] == 1.0 and spec.route is None
    assert parse_fault("h", {"kind": "http_hang", "params": {"hang_s": 2}}).params == {
        "rate": 1.0,
        "hang_s": 2.0,
    }


@pytest.mark.parametrize(
    "profile", sorted((REPO / "campaigns").glob("*.toml")), ids=lambda p: p.stem
)
def test_every_http_incident_of_the_shipped_profiles_is_accepted(profile: Path) -> None:
    for incident in load_plan(profile).incidents:
        if incident.kind in HTTP_FAULTS:
            body = {"kind": incident.kind, "route": incident.route, "params": incident.params}
            parse_fault(incident.id, body)


# --------------------------------------------------------------------------- subprocess


def test_module_entry_point_serves_the_control_client_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(  # noqa: S603 - our own module
        [
            sys.executable,
            "-m",
            "pipeline.campaign.upstream",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            "5",
            "--median-ms",
            "2",
            "--sigma",
            "0.5",
            "--body-bytes",
            "256",
        ],  # fmt: skip
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        match = re.fullmatch(r"UPSTREAM_READY (127\.0\.0\.1):(\d+)", line)
        assert match, line
        url = f"http://{match[1]}:{match[2]}"
        with UpstreamControl(url) as control:
            control.wait_ready(5)
            control.set_fault("01-http_5xx", "http_5xx", "/users/{id}", {"rate": 1.0})
            with pytest.raises(UpstreamControlError, match="unknown kind") as refused:
                control.set_fault("bad", "http_teapot", None, {})
            assert refused.value.status == 400
            with httpx.Client(base_url=url) as caller:
                assert caller.get("/users/1").status_code == 503
                assert len(caller.get("/search").content) == 256
            assert [f["id"] for f in control.faults()] == ["01-http_5xx"]
            control.clear_fault("01-http_5xx")
            control.clear_fault("01-http_5xx")  # idempotent by default
            with pytest.raises(UpstreamControlError, match="404"):
                control.clear_fault("01-http_5xx", missing_ok=False)
            stats = control.stats()
            assert stats.requests == 2 and stats.fault_hits == {"01-http_5xx": 1}
            assert stats.by_status["503"] == 1 and stats.faults_active == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert process.stderr is not None
        assert b"upstream: stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def test_entry_point_binds_inside_a_network_namespace() -> None:
    """As the runner uses it: in the upstream's own namespace, reached over the veth."""
    with LossyHost(f"ewup{os.getpid() % 10000}") as host:
        process = host.run_in(
            [
                sys.executable,
                "-m",
                "pipeline.campaign.upstream",
                "--host",
                host.address,
                "--port",
                "8000",
                "--seed",
                "1",
            ],  # fmt: skip
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        try:
            assert (
                process.stdout.readline().decode().strip() == f"UPSTREAM_READY {host.address}:8000"
            )
            url = f"http://{host.address}:8000"
            with UpstreamControl(url) as control:
                control.wait_ready(5)
                control.set_fault("r", "http_reset", "/users/{id}", {})
                with httpx.Client(base_url=url, trust_env=False) as caller:
                    assert caller.get("/search").status_code == 200
                    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                        caller.get("/users/1")
                assert control.stats().resets == 1
        finally:
            process.stdout.close()


def test_wait_ready_names_the_address_when_nothing_answers() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with UpstreamControl(f"http://127.0.0.1:{port}") as control:
            with pytest.raises(UpstreamControlError, match=f"127.0.0.1:{port} is not ready"):
                control.wait_ready(0.3)


def test_entry_point_refuses_bad_arguments() -> None:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pipeline.campaign.upstream", "--median-ms", "-1"],
        cwd=REPO,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and b"--median-ms must be >= 0" in done.stderr
