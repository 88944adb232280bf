"""Toxiproxy for real: the built server between httpx and a small asyncio HTTP upstream.

Each TCP incident kind's toxic is checked by its effect on real traffic through the proxy
(time added, connection reset, stall, throttled or sliced body), then removed.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.campaign.profile import TCP_FAULTS
from pipeline.campaign.toxiproxy import (
    BINARY,
    TOXIC_KINDS,
    TcpFaults,
    Toxic,
    Toxiproxy,
    ToxiproxyClient,
    ToxiproxyError,
    toxic_for,
)

REPO = Path(__file__).resolve().parents[2]


class HttpUpstream:
    """``GET /bytes/N`` -> N bytes, keep-alive, on 127.0.0.1 in its own thread and loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        self._server.close()
        self.loop.run_until_complete(self._server.wait_closed())
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                size = int(path.rsplit("/", 1)[1]) if path.startswith("/bytes/") else 2
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                writer.write(b"x" * size)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> HttpUpstream:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def toxiproxy() -> Iterator[Toxiproxy]:
    built = subprocess.run(
        ["bash", str(REPO / "scripts" / "toxiproxy-build")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.stdout.strip() == str(BINARY)
    with Toxiproxy() as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[HttpUpstream]:
    with HttpUpstream() as server:
        yield server


@pytest.fixture
def proxy(toxiproxy: Toxiproxy, upstream: HttpUpstream) -> Iterator[str]:
    created = toxiproxy.client.create_proxy("upstream", 0, f"127.0.0.1:{upstream.port}")
    assert created.listen.startswith("127.0.0.1:") and created.port > 0
    yield f"http://127.0.0.1:{created.port}"
    toxiproxy.client.delete_proxy("upstream")


def timed_get(url: str, *, timeout_s: float = 5.0) -> tuple[float, bytes]:
    with httpx.Client(timeout=timeout_s, trust_env=False) as http:
        began = time.monotonic()
        response = http.get(url)
        return time.monotonic() - began, response.content


def test_proxy_forwards_and_lists(toxiproxy: Toxiproxy, proxy: str) -> None:
    took, body = timed_get(f"{proxy}/bytes/10")
    assert body == b"x" * 10 and took < 0.5
    listed = toxiproxy.client.proxies()
    assert listed["upstream"].enabled and listed["upstream"].toxics == ()
    assert toxiproxy.client.version() == "2.12.0"


def test_latency_adds_time(toxiproxy: Toxiproxy, proxy: str) -> None:
    faults = TcpFaults(toxiproxy.client, "upstream")
    detail = faults.start("i-lat", "tcp_latency", {"latency_ms": 300, "jitter_ms": 20})
    assert detail["toxic"]["attributes"] == {"latency": 300, "jitter": 20}
    assert detail["toxic"]["stream"] == "downstream"
    took, body = timed_get(f"{proxy}/bytes/10")
    assert body == b"x" * 10 and took >= 0.25
    faults.stop("i-lat")
    assert toxiproxy.client.toxics("upstream") == []
    assert timed_get(f"{proxy}/bytes/10")[0] < 0.2


def test_reset_peer_resets(toxiproxy: Toxiproxy, proxy: str) -> None:
    faults = TcpFaults(toxiproxy.client, "upstream")
    faults.start("i-rst", "tcp_reset_peer", {"timeout_ms": 0, "toxicity": 1.0})
    with pytest.raises(httpx.ReadError, match="Connection reset by peer"):
        timed_get(f"{proxy}/bytes/10")
    faults.stop("i-rst")
    assert timed_get(f"{proxy}/bytes/10")[1] == b"x" * 10


def test_timeout_stalls(toxiproxy: Toxiproxy, proxy: str) -> None:
    faults = TcpFaults(toxiproxy.client, "upstream")
    faults.start("i-to", "tcp_timeout", {"timeout_ms": 0})
    began = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        timed_get(f"{proxy}/bytes/10", timeout_s=0.5)
    assert time.monotonic() - began >= 0.45
    faults.stop("i-to")
    assert timed_get(f"{proxy}/bytes/10")[1] == b"x" * 10


def test_bandwidth_slows_a_large_body(toxiproxy: Toxiproxy, proxy: str) -> None:
    size = 200_000
    fast, _ = timed_get(f"{proxy}/bytes/{size}")
    faults = TcpFaults(toxiproxy.client, "upstream")
    faults.start("i-bw", "tcp_bandwidth", {"rate_kbps": 400})  # 200 KB at 400 KB/s: ~0.5 s
    slow, body = timed_get(f"{proxy}/bytes/{size}")
    assert len(body) == size
    assert slow >= 0.35 and slow > 3 * fast
    faults.stop("i-bw")


def test_slicer_still_delivers_every_byte(toxiproxy: Toxiproxy, proxy: str) -> None:
    faults = TcpFaults(toxiproxy.client, "upstream")
    params = {"average_size": 16, "size_variation": 8, "delay_us": 2000}
    faults.start("i-sl", "tcp_slicer", params)
    (toxic,) = toxiproxy.client.toxics("upstream")
    assert toxic.type == "slicer"
    assert toxic.attributes == {"average_size": 16, "size_variation": 8, "delay": 2000}
    took, body = timed_get(f"{proxy}/bytes/4000")  # ~250 slices of 2 ms each
    assert body == b"x" * 4000 and took >= 0.2
    faults.stop("i-sl")


def test_upstream_stream_and_reset(toxiproxy: Toxiproxy, proxy: str) -> None:
    client = toxiproxy.client
    client.add_toxic(
        "upstream", toxic_for("tcp_latency", {"latency_ms": 200, "stream": "upstream"}, name="up")
    )
    (toxic,) = client.toxics("upstream")
    assert toxic.stream == "upstream"
    assert timed_get(f"{proxy}/bytes/1")[0] >= 0.15
    client.reset()
    assert client.toxics("upstream") == []
    TcpFaults(client, "upstream").stop("up")  # already gone after a reset: no error


def test_api_errors_carry_the_message(toxiproxy: Toxiproxy, proxy: str) -> None:
    client = toxiproxy.client
    with pytest.raises(ToxiproxyError, match="409 proxy already exists") as caught:
        client.create_proxy("upstream", 0, "127.0.0.1:1")
    assert caught.value.status == 409
    with pytest.raises(ToxiproxyError, match="404 toxic not found"):
        client.remove_toxic("upstream", "nope")
    with pytest.raises(ToxiproxyError, match="proxy not found"):
        client.proxy("nope")
    with pytest.raises(ToxiproxyError, match="invalid toxic type"):
        client.add_toxic("upstream", Toxic("bad", "no_such_toxic"))
    client.add_toxic("upstream", toxic_for("tcp_timeout", {}, name="twice"))
    with pytest.raises(ToxiproxyError, match="toxic already exists"):
        client.add_toxic("upstream", toxic_for("tcp_timeout", {}, name="twice"))
    client.remove_toxic("upstream", "twice")


def test_process_is_stopped_after_the_block(upstream: HttpUpstream) -> None:
    with Toxiproxy() as server:
        process = server.process
        assert process is not None and process.poll() is None
        url = server.api_url
    assert process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/version", trust_env=False)
    with pytest.raises(ToxiproxyError, match="not running"):
        _ = server.client


def test_process_is_stopped_after_an_exception() -> None:
    with pytest.raises(KeyboardInterrupt), Toxiproxy() as server:
        process = server.process
        raise KeyboardInterrupt
    assert process is not None and process.poll() is not None


def test_missing_binary_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ToxiproxyError, match=r"make setup.*scripts/toxiproxy-build"):
        Toxiproxy(binary=tmp_path / "server").__enter__()


def test_a_taken_port_is_a_clear_error(toxiproxy: Toxiproxy) -> None:
    with (
        pytest.raises(ToxiproxyError, match=f"port {toxiproxy.port}"),
        Toxiproxy(port=toxiproxy.port),
    ):
        pass


def test_unreachable_api_is_a_toxiproxy_error() -> None:
    with ToxiproxyClient("http://127.0.0.1:1", timeout_s=0.5) as client:
        with pytest.raises(ToxiproxyError, match="ConnectError"):
            client.version()


# ------------------------------------------------------------------------ params -> toxics


def test_every_tcp_fault_kind_has_a_toxic() -> None:
    assert set(TOXIC_KINDS) == set(TCP_FAULTS)


def test_nominal_profile_params_map_to_toxics() -> None:
    from pipeline.campaign.profile import load_plan

    plan = load_plan(REPO / "campaigns" / "nominal.toml")
    toxics = {
        i.kind: toxic_for(i.kind, i.params, name=i.id)
        for i in plan.incidents
        if i.kind in TCP_FAULTS
    }
    assert toxics["tcp_latency"].attributes == {"latency": 50, "jitter": 20}
    assert toxics["tcp_bandwidth"].attributes == {"rate": 64}
    assert toxics["tcp_reset_peer"].toxicity == pytest.approx(0.2)
    assert toxics["tcp_timeout"].attributes == {"timeout": 0}
    assert toxics["tcp_slicer"].attributes == {
        "average_size": 64,
        "size_variation": 32,
        "delay": 100,
    }


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("http_5xx", {}, "not a TCP fault"),
        ("tcp_latency", {}, "'latency_ms' is required"),
        ("tcp_latency", {"latency_ms": 1, "jiter_ms": 2}, "unknown params"),
        ("tcp_latency", {"latency_ms": -1}, "latency_ms must be a number >= 0"),
        ("tcp_latency", {"latency_ms": "50"}, "latency_ms must be a number"),
        ("tcp_bandwidth", {"rate_kbps": 0}, "must be > 0"),
        ("tcp_slicer", {"average_size": 0}, "average_size must be > 0"),
        ("tcp_timeout", {"toxicity": 1.5}, r"toxicity must be in \[0, 1\]"),
        ("tcp_timeout", {"stream": "sideways"}, "stream must be"),
    ],
)
def test_bad_params_are_named(kind: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        toxic_for(kind, params, name="x")


_values = st.one_of(
    st.integers(-5, 10**6), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3), st.none()
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(TOXIC_KINDS)),
    params=st.dictionaries(
        st.sampled_from(
            [
                "latency_ms",
                "jitter_ms",
                "rate_kbps",
                "timeout_ms",
                "average_size",
                "size_variation",
                "delay_us",
                "toxicity",
                "other",
            ]
        ),
        _values,
        max_size=4,
    ),
)
def test_toxic_for_accepts_or_names_the_problem(kind: str, params: dict[str, Any]) -> None:
    try:
        toxic = toxic_for(kind, params, name="n")
    except ValueError as exc:
        assert kind in str(exc)
        return
    assert toxic.type == TOXIC_KINDS[kind][0]
    assert 0.0 <= toxic.toxicity <= 1.0
    assert all(isinstance(v, int) and v >= 0 for v in toxic.attributes.values())
