"""The worker's start-up checks, in process, against local sockets (a real broker and RGW are
in tests/integration/test_worker_startup.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.preflight import (
    _kafka_addresses,
    check_data_dir,
    check_http_port,
    check_kafka,
    check_rules,
    tcp_problem,
)
from pipeline.preflight_rgw import check_rgw
from pipeline.settings import WorkerSettings
from pipeline.startup_errors import StartupError
from tests.ports import free_port


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process would hold: bound and listening."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_a_free_port_passes_and_a_held_one_is_named(held_port: int) -> None:
    check_http_port("127.0.0.1", free_port())
    with pytest.raises(StartupError) as caught:
        check_http_port("127.0.0.1", held_port)
    assert caught.value.line() == (
        f"egresswatch worker: HTTP port 127.0.0.1:{held_port} is already in use by another "
        "process: check --http-port / EGRESSWATCH_HTTP_PORT (or stop what holds the port)"
    )


def test_an_address_not_of_this_machine_is_named() -> None:
    with pytest.raises(StartupError, match="not an address of this machine: check --http-host"):
        check_http_port("192.0.2.1", free_port())  # TEST-NET-1: never local


def test_rules_the_shipped_defaults_pass_and_a_bad_file_is_named(tmp_path: Path) -> None:
    check_rules(None)
    bad = tmp_path / "rules.toml"
    bad.write_text('version = 1\n[[rule]]\nname = "x"\nkind = "latency_p99"\n')
    with pytest.raises(StartupError) as caught:
        check_rules(bad)
    assert caught.value.cause.startswith(f"bad SLO rules: {bad}: rule 'x': ")
    assert caught.value.hint == "check --rules / EGRESSWATCH_SLO_RULES_PATH"


def test_data_dir_is_made_or_named(tmp_path: Path) -> None:
    check_data_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(StartupError, match=r"cannot use data folder .*: check --data-dir"):
        check_data_dir(tmp_path / "file" / "sub")


def test_tcp_problem_says_why(held_port: int) -> None:
    assert tcp_problem("127.0.0.1", held_port) is None
    assert tcp_problem("127.0.0.1", free_port()) == "connection refused"
    assert "does not resolve" in (tcp_problem("no-such-host.invalid", 80) or "")


@given(
    st.lists(
        st.tuples(st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True), st.integers(1, 65535)),
        min_size=1,
        max_size=4,
    )
)
def test_kafka_addresses_round_trip(pairs: list[tuple[str, int]]) -> None:
    text = ",".join(f"{host}:{port}" for host, port in pairs)
    assert _kafka_addresses(text) == pairs


@pytest.mark.parametrize("bad", ["127.0.0.1:x", "127.0.0.1:0", "127.0.0.1:70000", ":9092", "a:1,b"])
def test_bad_kafka_addresses_are_named(bad: str) -> None:
    with pytest.raises(StartupError, match=r"^bad Kafka address .*check --bootstrap"):
        _kafka_addresses(bad)


async def test_kafka_refused_is_one_cause() -> None:
    port = free_port()
    with pytest.raises(StartupError) as caught:
        await check_kafka(WorkerSettings(kafka_bootstrap=f"127.0.0.1:{port}"))
    assert caught.value.line() == (
        f"egresswatch worker: cannot reach Kafka at 127.0.0.1:{port} (connection refused): "
        "check --bootstrap / EGRESSWATCH_KAFKA_BOOTSTRAP"
    )


async def test_a_server_that_is_not_kafka_is_named() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(StartupError, match="but does not answer as a Kafka"):
            await check_kafka(WorkerSettings(kafka_bootstrap=f"127.0.0.1:{port}"))
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("endpoint", ["127.0.0.1:17480", "ftp://x", "http://h:port"])
def test_a_malformed_s3_endpoint_is_named(endpoint: str) -> None:
    with pytest.raises(StartupError, match=r"^bad S3 endpoint .*check EGRESSWATCH_S3_ENDPOINT"):
        check_rgw(WorkerSettings(s3_endpoint=endpoint))


def test_an_unreachable_rgw_is_marked_unreachable() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StartupError) as caught:
        check_rgw(WorkerSettings(s3_endpoint=endpoint))
    assert caught.value.unreachable
    assert caught.value.cause == f"cannot reach RGW at {endpoint} (connection refused)"
