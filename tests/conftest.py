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
from tests.leases import leased_script_service

pytest_plugins = ["tests.rgw"]  # s3_endpoint, rgw_control, s3_bucket: see tests/rgw.py

REPO = Path(__file__).resolve().parent.parent
KAFKA_LOCAL = REPO / "scripts" / "kafka-local"
TEST_KAFKA_DIR = REPO / "var" / "kafka-test"
TEST_KAFKA_PORT = int(os.environ.get("EGRESSWATCH_TEST_KAFKA_PORT", "19192"))


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


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for the whole session."""
    external = os.environ.get("EGRESSWATCH_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return

    with leased_script_service(
        TEST_KAFKA_DIR,
        kafka_local,
        "kafka-local",
        running=lambda: kafka_local("status").returncode == 0,
        parse=parse_bootstrap,
    ) as bootstrap:
        yield bootstrap


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
