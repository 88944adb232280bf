"""A real S3 for the suite: Ceph RGW run by ``scripts/rgw-local`` (see docs/rgw-local.md).

Registered from ``tests/conftest.py`` as a pytest plugin (``pytest_plugins``), so these
fixtures are available everywhere:

- ``s3_endpoint`` (session) -> :class:`S3Endpoint` ``(url, access_key, secret_key)``.
  ``EGRESSWATCH_S3_ENDPOINT`` (with ``EGRESSWATCH_S3_ACCESS_KEY`` and
  ``EGRESSWATCH_S3_SECRET_KEY``) names one to use as is; otherwise the session runs
  ``scripts/rgw-local up`` with its own state dir ``var/rgw-test`` on port 17580
  (``EGRESSWATCH_TEST_RGW_PORT``; the mon uses the next port), apart from the demo RGW
  (``var/rgw``, 17480). Sessions that run at once share that cluster through lease files; the
  last session out stops it, and deletes it, only if a test session started it.
- ``rgw_control`` (function) -> :class:`RgwControl`: a radosgw of the test's own, on a free
  port, over the same cluster (the same buckets and objects as ``s3_endpoint``), with
  ``stop()`` / ``start()`` (and ``astop()`` / ``astart()`` for async tests) for outage tests.
  Stopping it disturbs no other test or session; it is stopped after the test. (With
  ``EGRESSWATCH_S3_ENDPOINT`` set but no ``EGRESSWATCH_RGW_DIR``, the test cluster is started
  for it.)
- ``s3_bucket`` (function) -> ``str``: a new, empty bucket on ``s3_endpoint`` for this test,
  deleted with its objects afterwards (best effort).

Clients: ``S3Endpoint.s3fs_kwargs()`` / ``client_kwargs()`` give the settings this RGW needs
(path-style addressing), and :func:`open_s3fs` an async ``s3fs.S3FileSystem`` that is closed
on exit. Every test that uses one of these fixtures is marked ``integration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import s3fs
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from tests.leases import leased_script_service
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent
RGW_LOCAL = REPO / "scripts" / "rgw-local"
TEST_RGW_DIR = REPO / "var" / "rgw-test"
TEST_RGW_PORT = int(os.environ.get("EGRESSWATCH_TEST_RGW_PORT", "17580"))
REGION = "us-east-1"  # RGW accepts any region in a SigV4 scope; botocore needs one
_FIXTURES = frozenset({"s3_endpoint", "rgw_control", "rgw_cluster", "s3_bucket"})


@dataclass(frozen=True)
class S3Endpoint:
    """Where an S3 service answers, and the credentials it accepts."""

    url: str
    access_key: str
    secret_key: str

    def config(self, **overrides: Any) -> dict[str, Any]:
        """botocore ``Config`` arguments: path-style addressing plus ``overrides``.

        For example ``retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1``
        makes a stopped RGW fail a call at once; botocore's default ("legacy", 5 attempts)
        takes 4 to 12 s, and it also resends a PUT that got BadDigest 4 more times.
        """
        return {"s3": {"addressing_style": "path"}, **overrides}

    def s3fs_kwargs(self, **config: Any) -> dict[str, Any]:
        """Arguments for ``s3fs.S3FileSystem(**kwargs)`` (``config`` as in :meth:`config`)."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            # No region_name: s3fs's mkdir would send it as the bucket's LocationConstraint,
            # and RGW refuses "us-east-1" there (InvalidLocationConstraint, its zonegroup is
            # "default"). botocore signs for us-east-1 when no region is set.
            "client_kwargs": {"endpoint_url": self.url},
            "config_kwargs": self.config(**config),
            # fsspec caches instances by arguments: a cached one may be bound to the event loop
            # of an earlier test.
            "skip_instance_cache": True,
        }

    def client_kwargs(self, **config: Any) -> dict[str, Any]:
        """Arguments for aiobotocore's ``session.create_client("s3", **kwargs)``."""
        return {
            "endpoint_url": self.url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": REGION,
            "config": Config(**self.config(**config)),
        }


@contextlib.asynccontextmanager
async def open_s3fs(endpoint: S3Endpoint, **config: Any) -> AsyncIterator[s3fs.S3FileSystem]:
    """An asynchronous ``s3fs.S3FileSystem`` on ``endpoint`` whose session is closed on exit."""
    fs = s3fs.S3FileSystem(asynchronous=True, **endpoint.s3fs_kwargs(**config))
    client = await fs.set_session()
    try:
        yield fs
    finally:
        await client.close()


# ------------------------------------------------------------------------------- the script


def rgw_local(
    *args: str,
    state_dir: Path = TEST_RGW_DIR,
    port: int | None = TEST_RGW_PORT,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/rgw-local ARGS`` on ``state_dir`` (by default the test cluster)."""
    full_env = dict(os.environ)
    # The test cluster's mon port follows its own S3 port, never the demo's setting.
    full_env.pop("EGRESSWATCH_RGW_MON_PORT", None)
    full_env["EGRESSWATCH_RGW_DIR"] = str(state_dir)
    if port is not None:
        full_env["EGRESSWATCH_RGW_PORT"] = str(port)
    full_env.update(env or {})
    return subprocess.run(
        [str(RGW_LOCAL), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def parse_s3_env(stdout: str) -> S3Endpoint:
    """The endpoint from the three ``S3_ENDPOINT=`` / ``S3_ACCESS_KEY=`` / ``S3_SECRET_KEY=``
    lines that ``up`` and ``env`` print (nothing else may be on stdout)."""
    lines = stdout.splitlines()
    names = [line.partition("=")[0] for line in lines]
    assert names == ["S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY"], stdout
    values = [line.partition("=")[2] for line in lines]
    assert all(values), stdout
    return S3Endpoint(url=values[0], access_key=values[1], secret_key=values[2])


# ---------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class RgwCluster:
    """A cluster that ``scripts/rgw-local`` manages: its state dir and main endpoint."""

    state_dir: Path
    endpoint: S3Endpoint


def _external_endpoint() -> S3Endpoint | None:
    url = os.environ.get("EGRESSWATCH_S3_ENDPOINT")
    if not url:
        return None
    key = os.environ.get("EGRESSWATCH_S3_ACCESS_KEY")
    secret = os.environ.get("EGRESSWATCH_S3_SECRET_KEY")
    if not (key and secret):
        pytest.fail(
            "EGRESSWATCH_S3_ENDPOINT is set: set EGRESSWATCH_S3_ACCESS_KEY and "
            "EGRESSWATCH_S3_SECRET_KEY too (scripts/rgw-local env prints them)"
        )
    return S3Endpoint(url, key, secret)


@pytest.fixture(scope="session")
def rgw_cluster() -> Iterator[RgwCluster]:
    """The cluster behind ``s3_endpoint`` and ``rgw_control``.

    With ``EGRESSWATCH_S3_ENDPOINT`` and ``EGRESSWATCH_RGW_DIR`` both set, the cluster in that
    dir (started by hand with ``scripts/rgw-local up``) is used as is. Otherwise this is the
    test cluster in ``var/rgw-test``, started if need be and shared through leases.
    """
    external = _external_endpoint()
    named_dir = os.environ.get("EGRESSWATCH_RGW_DIR")
    if external is not None and named_dir:
        yield RgwCluster(Path(named_dir).resolve(), external)
        return

    def running() -> bool:
        return rgw_local("status").returncode != 1  # 1: nothing of it runs

    with leased_script_service(
        TEST_RGW_DIR, rgw_local, "rgw-local", running=running, parse=parse_s3_env
    ) as endpoint:
        yield RgwCluster(TEST_RGW_DIR, endpoint)


@pytest.fixture(scope="session")
def s3_endpoint(request: pytest.FixtureRequest) -> S3Endpoint:
    """A real S3 endpoint for the whole session (see the module docstring)."""
    external = _external_endpoint()
    if external is not None:
        return external  # no cluster is started for it
    cluster: RgwCluster = request.getfixturevalue("rgw_cluster")
    return cluster.endpoint


# ---------------------------------------------------------------------------- outage tests

_instances = itertools.count(1)


class RgwControl:
    """A radosgw of one test's own, over the session's cluster: stop and start it at will."""

    def __init__(self, cluster: RgwCluster, name: str, port: int) -> None:
        self.cluster = cluster
        self.name = name
        self.port = port
        base = cluster.endpoint
        self.endpoint = S3Endpoint(f"http://127.0.0.1:{port}", base.access_key, base.secret_key)

    def _run(self, *args: str) -> None:
        done = rgw_local(
            *args, "--instance", self.name, state_dir=self.cluster.state_dir, port=None
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/rgw-local {args[0]} failed:\n{done.stderr}")

    def start(self) -> None:
        """Start this radosgw; returns once it answers a signed ListBuckets."""
        self._run("rgw-start", "--port", str(self.port))

    def stop(self) -> None:
        """Stop this radosgw (SIGTERM); returns once its port refuses connections and the
        process has exited. Its objects stay in the cluster."""
        self._run("rgw-stop")

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


@pytest.fixture
def rgw_control(rgw_cluster: RgwCluster) -> Iterator[RgwControl]:
    """A running radosgw of this test's own (``.endpoint``), with ``stop()`` / ``start()``."""
    control = RgwControl(rgw_cluster, f"t{os.getpid()}-{next(_instances)}", free_port())
    control.start()
    try:
        yield control
    finally:
        control.stop()


# ------------------------------------------------------------------------------- buckets


def unique_bucket_name(test_name: str) -> str:
    """A valid, unique bucket name (3-63 characters of a-z, 0-9 and -) for a test."""
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40] or "bucket"
    return f"test-{stem}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def s3_bucket(s3_endpoint: S3Endpoint, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A new, empty bucket for this test; deleted with its objects afterwards (best effort)."""
    name = unique_bucket_name(request.node.name)
    async with get_session().create_client("s3", **s3_endpoint.client_kwargs()) as client:
        await client.create_bucket(Bucket=name)
        try:
            yield name
        finally:
            try:
                async with asyncio.timeout(30):
                    paginator = client.get_paginator("list_objects_v2")
                    async for page in paginator.paginate(Bucket=name):
                        for item in page.get("Contents", []):
                            await client.delete_object(Bucket=name, Key=item["Key"])
                    await client.delete_bucket(Bucket=name)
            except Exception as exc:  # noqa: BLE001 - cleanup must not fail the test
                request.node.warn(pytest.PytestWarning(f"could not delete bucket {name}: {exc!r}"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
