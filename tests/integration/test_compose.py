"""compose.yml for real: the images built from deploy/docker/, the stack up, checked end to end.

The test runs its own Docker Engine (``scripts/docker-local``: data root, exec root and
socket under ``var/docker``, stopped afterwards; never the system's), on a Debian base image
made there with debootstrap + ``docker import`` (cached, as are the image layers, so only the
first run downloads packages). It builds the images with that base, brings the stack up
without Grafana (its image cannot be pulled here), and checks through the ports published on
127.0.0.1: events reach both workers, both share the consumer group, Prometheus scrapes both,
a critical event lands in RGW and ``egresswatch replay`` on the host reads it back, RGW keeps
its objects across a restart (volume, clean stop), and ``docker-compose down -v`` leaves no
container, volume or network. Grafana's provisioning is checked against its mounts. Host
ports are free ports, so neither the demo's nor another test's collide. Logs of the stack go
to ``test-artifacts/compose/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.leases import leased_service
from tests.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yml"
DOCKER_LOCAL = REPO / "scripts" / "docker-local"
DOCKER_DIR = REPO / "var" / "docker"
ARTIFACTS = REPO / "test-artifacts" / "compose"
# Everything but Grafana, whose official image cannot be had without a registry.
SERVICES = ["kafka", "rgw", "worker-1", "worker-2", "upstream", "sample-service", "prometheus"]
S3_ACCESS_KEY = "COMPOSETEST"
S3_SECRET_KEY = "compose-test-secret"


def _load_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_port_is_published_on_loopback_and_start_order_waits_for_health() -> None:
    services = _load_compose()["services"]
    assert set(SERVICES) | {"grafana"} == set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for dep, how in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert how["condition"] in ("service_healthy", "service_started")
        if name != "sample-service":  # a client only: nothing to probe
            assert "healthcheck" in service, f"{name} has no health check"
    # Data lives in named volumes, never in the containers.
    for name in ("kafka", "rgw", "worker-1", "worker-2", "prometheus", "grafana"):
        named = [v.split(":")[0] for v in services[name]["volumes"] if not v.startswith(".")]
        assert named and all(v in _load_compose()["volumes"] for v in named), name


def test_every_provisioned_path_matches_a_mount() -> None:
    """Grafana's image cannot be pulled here: check that what it would load is where the
    provisioning files say, and that the datasource points at the compose Prometheus."""
    grafana = _load_compose()["services"]["grafana"]
    mounts = dict(reversed(v.rsplit(":", 2)[:2]) for v in grafana["volumes"])
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    for provider_file in (provisioning / "dashboards").glob("*.y*ml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            path = provider["options"]["path"]
            assert path in mounts, f"{provider_file.name}: {path} is not mounted"
            assert list((REPO / mounts[path]).glob("*.json")), f"no dashboard in {mounts[path]}"
    for source_file in (provisioning / "datasources").glob("*.y*ml"):
        for source in yaml.safe_load(source_file.read_text())["datasources"]:
            if source["type"] == "prometheus":
                assert source["url"] == "http://prometheus:9090", source_file.name


# ------------------------------------------------------------------------------ the stack


def _run(
    args: list[str], env: dict[str, str], timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(args[:4])} ... failed ({done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def _docker_local(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EGRESSWATCH_DOCKER_DIR": str(DOCKER_DIR)}
    return _run([str(DOCKER_LOCAL), *args], env, timeout, check=False)


def _result_line(out: str, name: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(f"{name}=")]
    assert len(lines) == 1, out
    return lines[0].removeprefix(f"{name}=")


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    """DOCKER_HOST of the project's own dockerd, shared by sessions that run at once."""
    missing = [b for b in ("dockerd", "docker-compose", "debootstrap") if not shutil.which(b)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup-system as root")
    if os.geteuid() != 0:
        pytest.fail("the compose test runs its own dockerd: it needs root")

    def up() -> str:
        started = _docker_local("up", timeout=120)
        if started.returncode != 0:
            pytest.fail(f"scripts/docker-local up failed:\n{started.stderr}")
        return _result_line(started.stdout, "DOCKER_HOST")

    def down() -> None:
        stopped = _docker_local("down", timeout=120)
        if stopped.returncode != 0:
            raise RuntimeError(f"scripts/docker-local down failed:\n{stopped.stderr}")

    with leased_service(
        DOCKER_DIR,
        running=lambda: _docker_local("status", timeout=30).returncode == 0,
        up=up,
        down=down,
    ) as host:
        yield host


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    project: str
    worker_urls: tuple[str, str]
    prometheus_url: str
    rgw_url: str
    kafka_bootstrap: str
    started: datetime

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        cmd = ["docker-compose", "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        return _run(cmd, self.env, timeout, check).stdout

    def docker(self, *args: str) -> str:
        cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
        return _run([cli, *args], self.env, 60).stdout


@pytest.fixture(scope="module")
def stack(docker_host: str) -> Iterator[Stack]:
    based = _docker_local("base-image", timeout=900)
    if based.returncode != 0:
        pytest.fail(f"scripts/docker-local base-image failed:\n{based.stderr}")
    base = _result_line(based.stdout, "BASE_IMAGE")
    ports = {name: free_port() for name in ("KAFKA", "RGW", "WORKER1", "WORKER2", "PROMETHEUS")}
    env = {
        **os.environ,
        "DOCKER_HOST": docker_host,
        "EGRESSWATCH_BASE_IMAGE": base,
        "EGRESSWATCH_COMPOSE_S3_ACCESS_KEY": S3_ACCESS_KEY,
        "EGRESSWATCH_COMPOSE_S3_SECRET_KEY": S3_SECRET_KEY,
        # Objects of critical events after 5 s under steady traffic (the default is 60 s).
        "EGRESSWATCH_COMPOSE_SINK_MAX_AGE_S": "5",
        **{f"EGRESSWATCH_COMPOSE_{name}_PORT": str(port) for name, port in ports.items()},
    }
    stack = Stack(
        env=env,
        project=f"egresswatch-test-{os.getpid()}",
        worker_urls=(
            f"http://127.0.0.1:{ports['WORKER1']}",
            f"http://127.0.0.1:{ports['WORKER2']}",
        ),
        prometheus_url=f"http://127.0.0.1:{ports['PROMETHEUS']}",
        rgw_url=f"http://127.0.0.1:{ports['RGW']}",
        kafka_bootstrap=f"127.0.0.1:{ports['KAFKA']}",
        started=datetime.now(UTC),
    )
    try:
        # Only the services with a build section; the others share worker-1's image.
        stack.compose("build", "kafka", "rgw", "worker-1", "prometheus", timeout=1800)
        # -d returns once every service runs; depends_on waits for the health checks.
        stack.compose("up", "-d", "--no-build", *SERVICES, timeout=600)
        yield stack
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        logs = stack.compose("logs", "--no-color", "--tail=300", timeout=120, check=False)
        (ARTIFACTS / "compose.log").write_text(logs)
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "60", timeout=300, check=False)


def _poll(what: str, timeout: float, probe: Any) -> Any:
    """``probe()`` until it returns something truthy; fails with its last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if last:
                return last
        time.sleep(1)
    pytest.fail(f"{what}: nothing after {timeout:.0f} s (last: {str(last)[:1500]})")


def test_events_reach_both_workers(stack: Stack) -> None:
    for url in stack.worker_urls:

        def items(url: str = url) -> list[dict[str, Any]]:
            got = httpx.get(f"{url}/v1/metrics/network", params={"window": "1m"}, timeout=5)
            got.raise_for_status()
            return list(got.json()["items"])

        found = _poll(f"{url}/v1/metrics/network items", 120, items)
        assert {item["route"] for item in found} & {"/users/{id}", "/orders/{id}/items"}
        assert all(item["requests"] > 0 for item in found)
        page = httpx.get(f"{url}/", timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()  # the dashboard


def test_both_workers_share_the_consumer_group(stack: Stack) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def members() -> int:
        # Through the port published for host clients (Kafka's EXTERNAL listener).
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            described = await admin.describe_consumer_groups(["egresswatch"])
        finally:
            await admin.close()
        groups = [g for response in described for g in response.groups]
        return sum(len(g[5]) for g in groups if g[1] == "egresswatch" and g[2] == "Stable")

    def two_members() -> bool:
        try:
            return asyncio.run(members()) == 2
        except Exception:  # a group still forming answers with errors: ask again
            return False

    _poll("two members in consumer group egresswatch", 60, two_members)


def test_prometheus_scrapes_both_workers(stack: Stack) -> None:
    def healthy_targets() -> list[dict[str, Any]]:
        got = httpx.get(
            f"{stack.prometheus_url}/api/v1/query",
            params={"query": 'up{job="egresswatch-workers"} == 1', "time": time.time()},
            timeout=5,
        )
        got.raise_for_status()
        result = list(got.json()["data"]["result"])
        return result if len(result) == 2 else []

    found = _poll("up == 1 for both workers", 90, healthy_targets)
    assert {r["metric"]["instance"] for r in found} == {"worker-1:8080", "worker-2:8080"}

    def requests_series() -> list[Any]:
        got = httpx.get(
            f"{stack.prometheus_url}/api/v1/query",
            params={"query": "sum(egresswatch_outbound_requests_total)", "time": time.time()},
            timeout=5,
        )
        return list(got.json()["data"]["result"])

    _poll("egresswatch_outbound_requests_total scraped", 60, requests_series)
    # The mounted deploy/prometheus/rules.yml is loaded (a broken one stops Prometheus).
    rules = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=5).json()
    assert rules["data"]["groups"], rules


def _replay(stack: Stack) -> list[dict[str, Any]]:
    """``egresswatch replay --endpoint`` on the host: the sample service's stored events
    ([] while the sink has written no object for it yet)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESSWATCH_")}
    since = (stack.started - timedelta(minutes=5)).isoformat()
    until = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "replay", "--service", "checkout"]
        + ["--since", since, "--until", until, "--endpoint", stack.rgw_url]
        + ["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY]
        + ["--bucket", "egresswatch"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 3:  # no such service under the prefix: no object yet
        return []
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_critical_event_lands_in_rgw_and_replays_on_the_host(stack: Stack) -> None:
    events = _poll("critical events replayed from RGW", 120, lambda: _replay(stack))
    assert all(e["severity"] == "critical" for e in events)
    assert all(e["service"] == "checkout" and e["trace_id"] for e in events)
    assert {e["route"] for e in events} & {"/flaky", "/slow"}


def test_rgw_keeps_its_objects_across_a_restart(stack: Stack) -> None:
    before = {e["request_id"] for e in _poll("stored events", 120, lambda: _replay(stack))}
    # docker stop (SIGTERM): rgw-local stops the OSD cleanly, which saves memstore's objects
    # to the rgw-data volume; the start reads them back.
    stack.compose("restart", "rgw", timeout=180)
    after = _poll("stored events after restart", 120, lambda: _replay(stack))
    assert before <= {e["request_id"] for e in after}


def test_down_leaves_nothing_running(stack: Stack) -> None:
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "60", timeout=300)
    label = f"label=com.docker.compose.project={stack.project}"
    assert stack.docker("ps", "-aq", "--filter", label).strip() == ""
    assert stack.docker("volume", "ls", "-q", "--filter", label).strip() == ""
    assert stack.docker("network", "ls", "-q", "--filter", label).strip() == ""
