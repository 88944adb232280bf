"""Fixtures shared by the whole suite.

Kafka (see docs/kafka-local.md):

- ``kafka_bootstrap`` (session): ``"127.0.0.1:PORT"`` of a real broker.
  ``EGRESSWATCH_KAFKA_BOOTSTRAP`` names one to use as is; otherwise the session runs
  ``scripts/kafka-local up`` with its own state dir ``var/kafka-test`` on port 19192
  (``EGRESSWATCH_TEST_KAFKA_PORT``), apart from the demo broker (``var/kafka``, 19092), so tests
  and a demo never share data or a port. Sessions that run at once (several people in one tree)
  share that broker through lease files; the last session out stops it, and deletes its data,
  only if a test session started it.
- ``kafka_topic`` (function): ``await kafka_topic(partitions=3)`` creates a fresh, uniquely
  named topic through ``pipeline.topics.ensure_topics`` and returns its name; the topics a test
  made are deleted after it (best effort).

Every test that uses ``kafka_bootstrap`` gets the ``integration`` marker, also when it forgets
it, so ``pytest -m "not integration"`` never starts a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.topics import TopicSpec, ensure_topics

pytest_plugins = ["tests.rgw"]  # s3_endpoint, rgw_control, s3_bucket: see tests/rgw.py

REPO = Path(__file__).resolve().parent.parent
KAFKA_LOCAL = REPO / "scripts" / "kafka-local"
TEST_KAFKA_DIR = REPO / "var" / "kafka-test"
TEST_KAFKA_PORT = int(os.environ.get("EGRESSWATCH_TEST_KAFKA_PORT", "19192"))
_STARTED_MARK = "started-by-pytest"


def kafka_local(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/kafka-local ARGS`` (by default on the test broker's dir and port)."""
    full_env = dict(os.environ)
    # The test broker's controller port follows its own port (PORT+1), never the demo's setting.
    full_env.pop("EGRESSWATCH_KAFKA_CONTROLLER_PORT", None)
    full_env["EGRESSWATCH_KAFKA_DIR"] = str(TEST_KAFKA_DIR)
    full_env["EGRESSWATCH_KAFKA_PORT"] = str(TEST_KAFKA_PORT)
    full_env.update(env or {})
    return subprocess.run(
        [str(KAFKA_LOCAL), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def parse_bootstrap(stdout: str) -> str:
    """The address from the single ``KAFKA_BOOTSTRAP=host:port`` line that ``up`` prints."""
    lines = stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("KAFKA_BOOTSTRAP="), stdout
    return lines[0].removeprefix("KAFKA_BOOTSTRAP=")


@contextlib.contextmanager
def _leases_locked() -> Iterator[Path]:
    TEST_KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    leases = TEST_KAFKA_DIR / "pytest-leases"
    leases.mkdir(exist_ok=True)
    with open(TEST_KAFKA_DIR / "pytest-leases.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield leases


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for the whole session."""
    external = os.environ.get("EGRESSWATCH_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return

    lease = None
    with _leases_locked() as leases:
        was_running = kafka_local("status").returncode == 0
        up = kafka_local("up")
        if up.returncode != 0:
            pytest.fail(f"scripts/kafka-local up failed ({up.returncode}):\n{up.stderr}")
        bootstrap = parse_bootstrap(up.stdout)
        if not was_running:
            (TEST_KAFKA_DIR / _STARTED_MARK).touch()
        lease = leases / str(os.getpid())
        lease.touch()
    try:
        yield bootstrap
    finally:
        with _leases_locked() as leases:
            lease.unlink(missing_ok=True)
            for other in leases.iterdir():
                if not (other.name.isdigit() and _alive(int(other.name))):
                    other.unlink(missing_ok=True)
            marker = TEST_KAFKA_DIR / _STARTED_MARK
            if not any(leases.iterdir()) and marker.exists():
                down = kafka_local("down", "--purge")
                marker.unlink(missing_ok=True)
                if down.returncode != 0:
                    raise RuntimeError(f"scripts/kafka-local down failed:\n{down.stderr}")


class MakeTopic(Protocol):
    async def __call__(
        self,
        partitions: int = 1,
        *,
        retention_ms: int = -1,
        config: Mapping[str, str] | None = None,
    ) -> str: ...


def _unique_topic_name(test_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", test_name).strip("-.")[:120] or "topic"
    return f"test.{stem}.{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def kafka_topic(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> AsyncIterator[MakeTopic]:
    """Factory: ``name = await kafka_topic(partitions=3)``, a new topic for this test only.

    Records are kept forever by default (``retention_ms=-1``), so tests may use old timestamps.
    """
    created: list[str] = []

    async def make_topic(
        partitions: int = 1,
        *,
        retention_ms: int = -1,
        config: Mapping[str, str] | None = None,
    ) -> str:
        spec = TopicSpec(
            _unique_topic_name(request.node.name),
            partitions=partitions,
            retention_ms=retention_ms,
            config=dict(config or {}),
        )
        await ensure_topics(kafka_bootstrap, [spec])
        created.append(spec.name)
        return spec.name

    yield make_topic

    if created:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            async with asyncio.timeout(10):
                await admin.start()
                await admin.delete_topics(created)
        except Exception as exc:  # noqa: BLE001 - cleanup must not fail the test
            request.node.warn(pytest.PytestWarning(f"could not delete {created}: {exc!r}"))
        finally:
            await admin.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
