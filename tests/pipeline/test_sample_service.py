"""The sample service calls its upstream through the probe: one event per call, routes templated."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from pipeline.probe import MemorySink
from pipeline.sample_service import SampleService, main, sample_path

pytestmark = pytest.mark.timeout(30)


def test_sample_paths_cover_the_upstream_routes() -> None:
    rng = random.Random(1)
    seen = {sample_path(rng).split("/")[1].split("?")[0] for _ in range(200)}
    assert seen == {"users", "orders", "search", "flaky", "slow"}


async def test_each_call_yields_an_event_with_a_template_route() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        status = 503 if request.url.path == "/flaky" else 200
        return httpx.Response(status, json={"path": request.url.path})

    sink = MemorySink()
    service = SampleService(
        "http://upstream.test",
        sink,
        service="checkout",
        rate_per_s=1000,
        transport=httpx.MockTransport(answer),
    )
    task = asyncio.ensure_future(service.run(seed=3))
    while service.requests < 40:
        await asyncio.sleep(0.01)
    service.stop()
    await task
    events = sink.events
    # /flaky answers 503 and is retried once (max_attempts=2): one event per attempt.
    assert len(events) >= service.requests
    routes = {e.route for e in events}
    assert "/users/{id}" in routes
    assert not any(any(ch.isdigit() for ch in r) for r in routes)
    assert {e.service for e in events} == {"checkout"}
    assert any(e.severity == "critical" for e in events)


def test_bad_flags_are_refused_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--kafka", "nocolon", "--upstream", "http://x"])
    assert exc.value.code == 2
    assert "--kafka must be host:port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--kafka", "k:9092", "--upstream", "ftp://x"])
    assert "--upstream must be an http(s) URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--kafka", "k:9092", "--upstream", "http://x", "--rate", "0"])
    assert "must be > 0" in capsys.readouterr().err
