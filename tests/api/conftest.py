"""API tests: the real app from ``create_api`` over a fake backend on a real SummaryView."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from starlette.routing import BaseRoute

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx works and is what we ship.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from api.app import create_api
from pipeline.settings import WorkerSettings
from tests.api.fakes import FakeBackend

TOKEN = "s3cret-token"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeClient = Callable[..., TestClient]


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def make_client(backend: FakeBackend) -> Iterator[MakeClient]:
    """``make_client(**settings_overrides, extra_routes=..., clock=..., backend=...)``: a
    started TestClient (lifespan run), closed after the test."""
    clients: list[TestClient] = []

    def make(
        *,
        extra_routes: Sequence[BaseRoute] = (),
        clock: Callable[[], float] | None = None,
        backend_: FakeBackend | None = None,
        client: tuple[str, int] = ("10.1.2.3", 40000),
        **overrides: Any,
    ) -> TestClient:
        settings = WorkerSettings(**overrides)
        kwargs: dict[str, Any] = {"extra_routes": extra_routes}
        if clock is not None:
            kwargs["clock"] = clock
        app = create_api(settings, backend=backend_ or backend, **kwargs)
        test_client = TestClient(app, client=client, raise_server_exceptions=False)
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in reversed(clients):
        test_client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The uniform error body, with the trace id of the response headers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    error = body["error"]
    assert set(error) == {"code", "message", "trace_id"}
    assert error["code"] == code, error
    assert error["message"]
    assert error["trace_id"] == response.headers["x-trace-id"]
    assert len(error["trace_id"]) == 32
    return dict(body)
