"""/health/live and /health/ready: public, 503 with every reason, aliases."""

from __future__ import annotations

import pytest

from tests.api.conftest import TOKEN, MakeClient, assert_error
from tests.api.fakes import FakeBackend


@pytest.mark.parametrize("path", ["/v1/health/live", "/health/live"])
def test_live(client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "live"}


@pytest.mark.parametrize("path", ["/v1/health/ready", "/health/ready"])
def test_ready(client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "reasons": [],
        "pipeline": {"records": 7, "dead_letters": 1},
    }


def test_not_ready_is_503_with_every_reason(client, backend: FakeBackend) -> None:
    backend.reasons = ["Kafka: partition assignment in progress", "sink: RGW unreachable"]
    response = client.get("/v1/health/ready")
    body = assert_error(response, 503, "not_ready")
    assert body["status"] == "not_ready"
    assert body["reasons"] == backend.reasons
    assert body["pipeline"] == {"records": 7, "dead_letters": 1}
    assert "sink: RGW unreachable" in body["error"]["message"]
    assert response.headers["retry-after"] == "1"
    backend.reasons = []
    assert client.get("/health/ready").status_code == 200


def test_health_is_public_with_a_token(make_client: MakeClient) -> None:
    client = make_client(api_token=TOKEN)
    assert client.get("/v1/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert_error(client.get("/v1/metrics/network"), 401, "unauthorized")


def test_health_ignores_stray_query_parameters(client) -> None:
    assert client.get("/v1/health/live", params={"probe": "k8s"}).status_code == 200
