"""The worker's entry point: topics, Faust app, agents and the HTTP app on one event loop.

This is the only module that imports ``api`` (the house rule: data flows probe -> Kafka ->
agents -> tables/sinks -> api, and only the entry point sees all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import faust
import uvicorn
from mode import Service

from pipeline.app import EgressApp, create_app
from pipeline.logs import configure_json_logging
from pipeline.settings import WorkerSettings

__all__ = ["HttpService", "build_worker", "run_worker"]

_log = logging.getLogger("egresswatch.worker")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the Faust worker owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpService(Service):
    """Serves an ASGI app with uvicorn on the worker's own event loop."""

    def __init__(self, asgi_app: Any, *, host: str, port: int, **kwargs: Any) -> None:
        self._config = uvicorn.Config(
            asgi_app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,  # the API's tracing middleware logs each request as JSON
            lifespan="on",
            # Per-frame deflate doubled the live fan-out's CPU; the frames are small JSON.
            ws_per_message_deflate=False,
        )
        self._server = _EmbeddedServer(self._config)
        self._serving: asyncio.Task[None] | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self._serving = asyncio.ensure_future(self._server.serve())
        while not self._server.started:
            if self._serving.done():
                self._serving.result()  # raises the bind error, if any
            await asyncio.sleep(0.05)
        _log.info("http listening on %s:%s", self._config.host, self._config.port)

    async def on_stop(self) -> None:
        self._server.should_exit = True
        if self._serving is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving


class _LiveFeedService(Service):
    """Runs the live feed (``api.live.KafkaLiveFeed``) for as long as the worker."""

    def __init__(self, feed: Any, **kwargs: Any) -> None:
        self._feed = feed
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self._feed.start()

    async def on_stop(self) -> None:
        await self._feed.stop()


class _Worker(faust.Worker):
    """Faust's worker with our logging: JSON lines, no terminal spinner.

    Faust's spinner handler sets the root logger to DEBUG (every aiokafka debug call then
    builds a record: ~5 % of a busy worker's CPU) and replaces our JSON handler.
    """

    before_stop: Callable[[], Awaitable[None]] | None = None

    async def on_stop(self) -> None:
        # Runs before the app (and its consumer) stops: the last chance to commit.
        if self.before_stop is not None:
            try:
                await self.before_stop()
            except Exception:  # noqa: BLE001 - a failed drain must not block the shutdown
                _log.exception("drain before stop failed; uncommitted records will be redelivered")
        await super().on_stop()

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        configure_json_logging(logging.INFO)
        for noisy in ("faust", "mode", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def build_worker(settings: WorkerSettings) -> tuple[EgressApp, faust.Worker]:
    """Topics must exist first (see :func:`run_worker`); returns the app and its worker."""
    from agents.wiring import build_runtime, register
    from api.alert_log import AlertLog
    from api.app import create_api
    from api.live import KafkaLiveFeed, LiveHub, live_routes
    from api.live.collector import LiveCollector

    ctx = create_app(settings)
    runtime = build_runtime(ctx)
    register(runtime)
    hub = LiveHub()
    alert_log = AlertLog()  # every worker's alerts, for GET /v1/alerts (fed by the feed)
    feed = KafkaLiveFeed(
        hub,
        bootstrap=settings.kafka_bootstrap,
        probe_topic=settings.probe_topic,
        alerts_topic=settings.alerts_topic,
        alert_log=alert_log,
    )
    runtime.registry.register(LiveCollector(hub, feed))
    api = create_api(settings, backend=runtime, extra_routes=live_routes(hub), alerts=alert_log)
    http = HttpService(api, host=settings.http_host, port=settings.http_port)
    worker = _Worker(ctx.app, http, _LiveFeedService(feed), loglevel="info", quiet=True)
    worker.before_stop = runtime.drain
    return ctx, worker


def run_worker(settings: WorkerSettings) -> None:
    """Run the worker until SIGINT/SIGTERM. The topics must exist: ``egresswatch worker``'s
    start-up checks (:func:`pipeline.preflight.preflight`) create them, or say why not."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    _, worker = build_worker(settings)
    worker.execute_from_commandline()
