"""``egresswatch worker`` start-up errors, for real: one line on stderr naming the cause and
the setting, exit 2, no traceback (``--debug`` keeps it). The broker and RGW are the suite's
real ones; the bad cases are a port nobody listens on, wrong credentials, a port held by a
socket, a bad rules file, a bad flag, a topic with the wrong partition count."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MakeTopic
from tests.ports import free_port
from tests.rgw import S3Endpoint
from tests.workers import REPO, Topics, _spawn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROG = "egresswatch worker: "
KAFKA_HINT = "check --bootstrap / EGRESSWATCH_KAFKA_BOOTSTRAP"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without any EGRESSWATCH_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESSWATCH_")}
    return {**env, **Topics().env(), **(extra or {})}


def _worker(
    tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pipeline.cli", "worker", "--data-dir", str(tmp_path / "w")]
    if "--http-port" not in args:
        argv += ["--http-port", str(free_port())]
    return subprocess.run(
        [*argv, *args],
        cwd=REPO,
        env=_env(extra_env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed start (and nothing else)."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(PROG)
    return lines[0]


def _s3_env(endpoint: S3Endpoint, **overrides: str) -> dict[str, str]:
    return {
        "EGRESSWATCH_S3_ENDPOINT": endpoint.url,
        "EGRESSWATCH_S3_ACCESS_KEY": endpoint.access_key,
        "EGRESSWATCH_S3_SECRET_KEY": endpoint.secret_key,
        "EGRESSWATCH_S3_BUCKET": f"startup-{uuid.uuid4().hex[:8]}",
        **overrides,
    }


def test_kafka_unreachable(tmp_path: Path) -> None:
    port = free_port()
    line = _one_line(_worker(tmp_path, "--bootstrap", f"127.0.0.1:{port}"))
    assert (
        line == f"{PROG}cannot reach Kafka at 127.0.0.1:{port} (connection refused): {KAFKA_HINT}"
    )


def test_debug_keeps_the_traceback(tmp_path: Path) -> None:
    port = free_port()
    done = _worker(tmp_path, "--bootstrap", f"127.0.0.1:{port}", "--debug")
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"{PROG}cannot reach Kafka at 127.0.0.1:{port}")


def test_bad_flag_values(tmp_path: Path) -> None:
    assert _one_line(_worker(tmp_path, "--http-port", "eighty")) == (
        f"{PROG}Invalid value for '--http-port': 'eighty' is not a valid integer: "
        "check --http-port / EGRESSWATCH_HTTP_PORT"
    )
    assert _one_line(_worker(tmp_path, "--http-port", "70000")) == (
        f"{PROG}http_port must be in 1..65535, got 70000: check --http-port / EGRESSWATCH_HTTP_PORT"
    )
    line = _one_line(_worker(tmp_path, "--bootstrap", "127.0.0.1", "--http-port", "8080"))
    assert line.endswith(f"kafka_bootstrap must be host:port, got '127.0.0.1': {KAFKA_HINT}")
    line = _one_line(_worker(tmp_path, extra_env={"EGRESSWATCH_SINK_IDLE_S": "soon"}))
    assert line.startswith(f"{PROG}EGRESSWATCH_SINK_IDLE_S='soon'")
    assert line.endswith(": check EGRESSWATCH_SINK_IDLE_S")


def test_bad_rules_file(tmp_path: Path, kafka_bootstrap: str) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('version = 1\n[[rule]]\nname = "p99"\nservice = "*"\nkind = "latency_p99"\n')
    line = _one_line(_worker(tmp_path, "--bootstrap", kafka_bootstrap, "--rules", str(rules)))
    assert line.startswith(f"{PROG}bad SLO rules: {rules}: rule 'p99': ")
    assert line.endswith(": check --rules / EGRESSWATCH_SLO_RULES_PATH")


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_http_port_in_use(tmp_path: Path, kafka_bootstrap: str, held_port: int) -> None:
    done = _worker(tmp_path, "--bootstrap", kafka_bootstrap, "--http-port", str(held_port))
    assert _one_line(done) == (
        f"{PROG}HTTP port 127.0.0.1:{held_port} is already in use by another process: "
        "check --http-port / EGRESSWATCH_HTTP_PORT (or stop what holds the port)"
    )


async def test_topic_with_another_partition_count(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: MakeTopic
) -> None:
    topic = await kafka_topic(partitions=3)
    done = _worker(
        tmp_path,
        "--bootstrap",
        kafka_bootstrap,
        "--partitions",
        "8",
        extra_env={"EGRESSWATCH_PROBE_TOPIC": topic},
    )
    assert _one_line(done) == (
        f"{PROG}topic {topic} has 3 partitions, the worker declares 8: "
        "check --partitions / EGRESSWATCH_PROBE_PARTITIONS (or delete and recreate the topic)"
    )


def test_rgw_wrong_credentials(
    tmp_path: Path, kafka_bootstrap: str, s3_endpoint: S3Endpoint
) -> None:
    hint = "check EGRESSWATCH_S3_ACCESS_KEY / EGRESSWATCH_S3_SECRET_KEY"
    wrong_secret = _s3_env(s3_endpoint, EGRESSWATCH_S3_SECRET_KEY="not-the-secret")
    assert _one_line(_worker(tmp_path, "--bootstrap", kafka_bootstrap, extra_env=wrong_secret)) == (
        f"{PROG}RGW at {s3_endpoint.url} refuses the credentials (SignatureDoesNotMatch): {hint}"
    )
    wrong_key = _s3_env(s3_endpoint, EGRESSWATCH_S3_ACCESS_KEY="NOSUCHKEY")
    assert _one_line(_worker(tmp_path, "--bootstrap", kafka_bootstrap, extra_env=wrong_key)) == (
        f"{PROG}RGW at {s3_endpoint.url} refuses the credentials (InvalidAccessKeyId): {hint}"
    )


def test_rgw_unreachable(tmp_path: Path, kafka_bootstrap: str, s3_endpoint: S3Endpoint) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = _s3_env(s3_endpoint, EGRESSWATCH_S3_ENDPOINT=url)
    assert _one_line(_worker(tmp_path, "--bootstrap", kafka_bootstrap, extra_env=env)) == (
        f"{PROG}cannot reach RGW at {url} (connection refused): "
        "check EGRESSWATCH_S3_ENDPOINT (or --allow-rgw-down to start and spool)"
    )


def test_good_settings_start_and_allow_rgw_down_warns(tmp_path: Path, kafka_bootstrap: str) -> None:
    """The good path on the real broker: the checks pass and the worker gets ready; an
    unreachable RGW with --allow-rgw-down is one warning line, not an error."""
    url = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    args = [sys.executable, "-m", "pipeline.cli", "worker", "--bootstrap", kafka_bootstrap]
    args += ["--http-port", str(port), "--data-dir", str(tmp_path / "w"), "--allow-rgw-down"]
    args += ["--app-id", f"startup-{uuid.uuid4().hex[:8]}"]
    env = _env({"EGRESSWATCH_S3_ENDPOINT": url, "EGRESSWATCH_S3_ACCESS_KEY": "k"})
    worker = _spawn(args, env, tmp_path / "worker.log", port)
    try:
        worker.wait_ready(90, owned=False)
        first = worker.log.read_text().splitlines()[0]
        assert first == (
            f"{PROG}warning: cannot reach RGW at {url} (connection refused); starting anyway, "
            "critical events spool until it answers"
        )
    finally:
        assert worker.stop() == 0, worker.tail()
