"""The sample probed service alone: an httpx client with the probe, calling a given upstream.

``python -m pipeline.sample_service --kafka HOST:PORT --upstream URL`` calls the upstream's
routes (``pipeline.demo_upstream`` serves them) about ``--rate`` times a second through
:class:`~pipeline.probe.ProbeTransport`, whose events go to Kafka through the
:class:`~pipeline.probe.emitter.KafkaEmitter`. It starts nothing else: compose runs it next to
its own Kafka, upstream and workers. SIGINT/SIGTERM (or ``--duration``) stop it; the emitter's
sent and dropped counts are printed on the way out.

The probe topic must exist (the workers create it at start-up); until it does, the emitter
retries in the background and the caller is never slowed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal

import httpx

from pipeline.probe import EventSink, ProbeConfig, ProbeTransport, RetryConfig, Timeouts
from pipeline.probe.emitter import KafkaEmitter
from pipeline.topics import PROBE_EVENTS_TOPIC

__all__ = ["SampleService", "main", "sample_path"]

ROUTE_TEMPLATES = ("/users/{id}", "/orders/{id}/items")


def sample_path(rng: random.Random) -> str:
    """One request path of the sample mix: ids (templated), a secret query, a flaky and a slow
    route (the upstream makes those fail now and then: the critical events)."""
    return rng.choice(
        [
            f"/users/{rng.randint(1, 500)}",
            f"/orders/{rng.randint(1, 99)}/items",
            "/search?q=secret-token",
            "/flaky",
            "/slow",
        ]
    )


class SampleService:
    """Calls ``upstream`` through the probe until :meth:`stop`; one request at a time.

    ``sink`` receives the probe events (the Kafka emitter in production); ``transport`` is
    the inner httpx transport (a real connection pool by default).
    """

    def __init__(
        self,
        upstream: str,
        sink: EventSink,
        *,
        service: str,
        rate_per_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        self.upstream = upstream
        self.requests = 0
        self._sink = sink
        self._inner = transport
        self._interval_s = 1.0 / rate_per_s
        self._config = ProbeConfig(
            service=service,
            route_templates=ROUTE_TEMPLATES,
            timeouts=Timeouts(connect=1.0, read=0.5, write=1.0, pool=1.0),
            retry=RetryConfig(max_attempts=2, backoff_base_s=0.02),
        )
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, seed: int = 42) -> None:
        rng = random.Random(seed)  # noqa: S311 - sample traffic, not security
        transport = ProbeTransport(self._config, sink=self._sink, transport=self._inner)
        async with httpx.AsyncClient(base_url=self.upstream, transport=transport) as client:
            while not self._stop.is_set():
                # Failures are the point of the sample: the probe records them, we go on.
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(sample_path(rng))
                self.requests += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._interval_s)


async def _serve(args: argparse.Namespace) -> None:
    emitter = KafkaEmitter(args.kafka, service=args.service, topic=args.topic).start()
    service = SampleService(args.upstream, emitter, service=args.service, rate_per_s=args.rate)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, service.stop)
    if args.duration is not None:
        loop.call_later(args.duration, service.stop)
    print(
        f"sample-service: {args.service} calls {args.upstream} ~{args.rate:g}/s, "
        f"probe events to {args.kafka} ({args.topic})",
        flush=True,
    )
    try:
        await service.run()
    finally:
        stats = await emitter.aclose()
        print(
            f"sample-service: {service.requests} requests, emitter sent "
            f"{stats.sent_events} events, dropped {stats.dropped_total}",
            flush=True,
        )


def _positive(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {raw}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample_service", description=__doc__)
    parser.add_argument("--kafka", required=True, help="Kafka bootstrap host:port")
    parser.add_argument("--upstream", required=True, help="base URL of the upstream")
    parser.add_argument("--service", default="checkout", help="service name on the events")
    parser.add_argument("--topic", default=PROBE_EVENTS_TOPIC, help="probe events topic")
    parser.add_argument("--rate", type=_positive, default=20.0, help="requests per second")
    parser.add_argument("--duration", type=_positive, help="stop after this many seconds")
    args = parser.parse_args(argv)
    if ":" not in args.kafka:
        parser.error(f"--kafka must be host:port, got {args.kafka!r}")
    if not args.upstream.startswith(("http://", "https://")):
        parser.error(f"--upstream must be an http(s) URL, got {args.upstream!r}")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
