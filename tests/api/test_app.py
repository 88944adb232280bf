"""The factory: settings checks, extra routes behind the same middleware, the worker's use."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agents.wiring import Runtime
from api.app import create_api
from api.backend import Backend
from pipeline.settings import SettingsError, WorkerSettings
from tests.api.conftest import TOKEN, MakeClient, assert_error
from tests.api.fakes import FakeBackend


def _runtime_is_a_backend(runtime: Runtime) -> Backend:
    return runtime  # checked by mypy: the worker's Runtime implements the protocol


def _fake_is_a_backend(fake: FakeBackend) -> Backend:
    return fake


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"api_rate_per_s": -1.0}, "api_rate_per_s"),
        ({"api_rate_per_s": float("nan")}, "api_rate_per_s"),
        ({"api_burst": 0}, "api_burst"),
        ({"api_max_clients": 0}, "api_max_clients"),
        ({"api_timeout_s": 0.0}, "api_timeout_s"),
        ({"api_timeout_s": float("inf")}, "api_timeout_s"),
    ],
)
def test_unusable_settings_are_refused(overrides: dict[str, float], field: str) -> None:
    with pytest.raises(SettingsError, match=field):
        create_api(WorkerSettings(**overrides), backend=FakeBackend())  # type: ignore[arg-type]


def test_settings_from_env() -> None:
    settings = WorkerSettings.from_env(
        {
            "EGRESSWATCH_API_TOKEN": TOKEN,
            "EGRESSWATCH_API_RATE_PER_S": "12.5",
            "EGRESSWATCH_API_BURST": "30",
            "EGRESSWATCH_API_MAX_CLIENTS": "500",
            "EGRESSWATCH_API_TRUSTED_PROXIES": "10.0.0.1,10.0.0.2",
            "EGRESSWATCH_API_TIMEOUT_S": "2",
        }
    )
    assert settings.api_token == TOKEN
    assert settings.api_rate_per_s == 12.5 and settings.api_burst == 30
    assert settings.api_max_clients == 500 and settings.api_timeout_s == 2.0
    assert settings.api_trusted_proxies == "10.0.0.1,10.0.0.2"
    defaults = WorkerSettings()
    assert defaults.http_host == "127.0.0.1"
    assert (defaults.api_rate_per_s, defaults.api_burst, defaults.api_timeout_s) == (50.0, 100, 5.0)
    assert defaults.api_token is None and defaults.api_trusted_proxies is None


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def test_extra_routes_are_served_behind_the_middleware(make_client: MakeClient) -> None:
    client = make_client(api_token=TOKEN, extra_routes=[Route("/", _hello)])
    assert_error(client.get("/"), 401, "unauthorized")
    response = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.text == "hello"
    assert len(response.headers["x-trace-id"]) == 32
