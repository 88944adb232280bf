"""Checks ``egresswatch worker`` runs before it starts Faust, each bounded in time.

Contract: :func:`preflight` returns (with warnings to print, possibly none) when the worker
can start, or raises :class:`~pipeline.startup_errors.StartupError` naming the first problem
found and the setting to change. The checks, in order, cheapest first:

1. the SLO rules file parses (the shipped defaults unless ``--rules``);
2. the data folder can be created and written;
3. the HTTP address can be bound (the port is free, the address is this machine's);
4. Kafka: every bootstrap address is well formed, one accepts a TCP connection, it answers
   a Metadata request, the brokers it advertises are reachable from here, and the topics
   exist (or are created) with the partition count the worker declares;
5. RGW, when an S3 endpoint is configured (``pipeline.preflight_rgw``): it answers a signed
   ListBuckets (so the credentials are right) and the bucket is usable. The worker creates
   a missing bucket itself. With ``allow_rgw_down``, an unreachable RGW is a warning
   instead: the worker starts and spools critical events until RGW answers; wrong
   credentials stay an error.

The checks make a few requests and hold nothing open: the worker itself reconnects anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from pipeline.settings import WorkerSettings
from pipeline.startup_errors import StartupError, settings_hint

__all__ = [
    "check_data_dir",
    "check_http_port",
    "check_kafka",
    "check_rules",
    "preflight",
    "tcp_problem",
]

CONNECT_TIMEOUT_S: Final = 3.0
KAFKA_TIMEOUT_S: Final = 10.0
_KAFKA_HINT: Final = settings_hint("kafka_bootstrap")


def preflight(settings: WorkerSettings, *, allow_rgw_down: bool = False) -> list[str]:
    """Run every check; the warnings to print (a worker that starts anyway)."""
    check_rules(settings.slo_rules_path)
    check_data_dir(settings.data_dir)
    check_http_port(settings.http_host, settings.http_port)
    asyncio.run(check_kafka(settings))
    if not settings.s3_endpoint:
        return []
    from pipeline.preflight_rgw import check_rgw  # botocore loads only with an endpoint

    try:
        check_rgw(settings)
    except StartupError as exc:
        if allow_rgw_down and exc.unreachable:
            return [
                f"warning: {exc.cause}; starting anyway, critical events spool until it answers"
            ]
        raise
    return []


def check_rules(path: Path | None) -> None:
    """The rules file (the shipped defaults when ``path`` is None) parses and validates."""
    from tables.slo_rules import DEFAULT_RULES_FILE, SloConfigError, load_rules

    try:
        load_rules(path if path is not None else DEFAULT_RULES_FILE)
    except SloConfigError as exc:
        raise StartupError(f"bad SLO rules: {exc}", settings_hint("slo_rules_path")) from exc


def check_data_dir(path: Path) -> None:
    """The worker's state folder exists (or can be made) and takes a file."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StartupError(
            f"cannot use data folder {path} ({reason.lower()})", settings_hint("data_dir")
        ) from exc


def check_http_port(host: str, port: int) -> None:
    """Bind ``host:port`` the way uvicorn will (SO_REUSEADDR), and let it go at once."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"HTTP address {host!r} does not resolve ({exc.strerror})", settings_hint("http_host")
        ) from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise _bind_error(host, port, exc) from exc


def _bind_error(host: str, port: int, exc: OSError) -> StartupError:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"HTTP port {where} is already in use by another process",
            f"{settings_hint('http_port')} (or stop what holds the port)",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"HTTP address {host} is not an address of this machine", settings_hint("http_host")
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            f"no permission to listen on {where} (ports below 1024 need root)",
            settings_hint("http_port"),
        )
    return StartupError(f"cannot listen on {where} ({exc.strerror})", settings_hint("http_port"))


def tcp_problem(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why a TCP connection to ``host:port`` fails (None: it connects), in a few words."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.gaierror as exc:
        return f"host name {host!r} does not resolve: {exc.strerror}"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return (exc.strerror or type(exc).__name__).lower()


def _kafka_addresses(bootstrap: str) -> list[tuple[str, int]]:
    addresses = []
    for item in bootstrap.split(","):
        host, _, port_text = item.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise StartupError(
                f"bad Kafka address {item.strip()!r} (expected host:port, port 1..65535)",
                _KAFKA_HINT,
            )
        addresses.append((host, int(port_text)))
    return addresses


async def check_kafka(settings: WorkerSettings) -> None:
    """The broker answers, its advertised brokers are reachable, the topics are right."""
    bootstrap = settings.kafka_bootstrap
    problems = []
    for host, port in _kafka_addresses(bootstrap):
        problem = await asyncio.to_thread(tcp_problem, host, port)
        if problem is None:
            break
        problems.append(problem)
    else:
        why = "; ".join(dict.fromkeys(problems))
        raise StartupError(f"cannot reach Kafka at {bootstrap} ({why})", _KAFKA_HINT)
    with _quiet("aiokafka"):
        brokers = await _kafka_brokers(bootstrap)
        for host, port in brokers:
            problem = await asyncio.to_thread(tcp_problem, host, port)
            if problem is not None:
                raise StartupError(
                    f"Kafka at {bootstrap} advertises its broker as {host}:{port}, which cannot "
                    f"be reached from here ({problem})",
                    f"check the broker's advertised.listeners, or {_KAFKA_HINT}",
                )
        await _check_topics(settings)


async def _kafka_brokers(bootstrap: str) -> list[tuple[str, int]]:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        client_id="egresswatch-preflight",
        request_timeout_ms=int(KAFKA_TIMEOUT_S * 1000),
    )
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT_S):
            await client.bootstrap()
        return sorted((b.host, b.port) for b in client.cluster.brokers())
    except (KafkaError, TimeoutError, OSError) as exc:
        raise StartupError(
            f"{bootstrap} accepts connections but does not answer as a Kafka broker "
            f"({type(exc).__name__})",
            _KAFKA_HINT,
        ) from exc
    finally:
        await client.close()


async def _check_topics(settings: WorkerSettings) -> None:
    from aiokafka.errors import KafkaError

    from pipeline.app import topic_specs
    from pipeline.topics import TopicMismatch, ensure_topics

    try:
        await ensure_topics(
            settings.kafka_bootstrap, topic_specs(settings), timeout_s=KAFKA_TIMEOUT_S
        )
    except TopicMismatch as exc:
        details = ", ".join(
            f"topic {name} has {actual} partitions, the worker declares {expected}"
            for name, (expected, actual) in sorted(exc.mismatches.items())
        )
        raise StartupError(
            details, f"{settings_hint('probe_partitions')} (or delete and recreate the topic)"
        ) from exc
    except (KafkaError, TimeoutError) as exc:
        raise StartupError(
            f"Kafka at {settings.kafka_bootstrap} did not create or describe the topics "
            f"({type(exc).__name__}: {exc})",
            f"{_KAFKA_HINT} (and the broker's log)",
        ) from exc


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """A library's own error logs would add lines (and tracebacks) to the one we print."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)
