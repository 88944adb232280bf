"""``make demo``: the whole pipeline on one machine, with a sample service making probed calls.

Starts (or reuses) the local Kafka, a worker with its HTTP API, a small local upstream that
sometimes fails, and a sample service whose httpx client carries the probe and the Kafka
emitter. Then it tails the probe topic and prints the events as they arrive, and every few
seconds the windowed p50/p95/p99 the worker computed. Ctrl-C (or ``--duration``) stops it all:
the worker, the upstream, and the Kafka broker (and RGW) if the demo started them; one it found
running is left so, and the last line says what still runs and how to stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from pipeline.demo_services import LocalService, kafka_up, rgw_up, shut_down
from pipeline.envelope import InvalidEnvelope, decode_batch
from pipeline.probe import ProbeConfig, ProbeTransport, RetryConfig, Timeouts
from pipeline.probe.emitter import KafkaEmitter
from pipeline.topics import PROBE_EVENTS_TOPIC

REPO = Path(__file__).resolve().parent.parent
SERVICE = "checkout"


@contextlib.contextmanager
def _process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own programs
            args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_http(
    url: str, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            # The worker's start-up errors are one line: show the last one the process wrote.
            last = (log.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
            sys.exit(f"demo: {what} exited (status {proc.returncode}): {last}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.3)
    sys.exit(f"demo: {what} did not come up at {url} within {timeout:.0f} s")


async def _sample_service(upstream: str, emitter: KafkaEmitter, stop: asyncio.Event) -> None:
    """A service calling its upstream ~20 times a second, through the probe."""
    config = ProbeConfig(
        service=SERVICE,
        route_templates=("/users/{id}", "/orders/{id}/items"),
        timeouts=Timeouts(connect=1.0, read=0.5, write=1.0, pool=1.0),
        retry=RetryConfig(max_attempts=2, backoff_base_s=0.02),
    )
    rng = random.Random(42)  # noqa: S311 - demo traffic, not security
    async with httpx.AsyncClient(
        base_url=upstream, transport=ProbeTransport(config, sink=emitter)
    ) as client:
        while not stop.is_set():
            path = rng.choice(
                [
                    f"/users/{rng.randint(1, 500)}",
                    f"/orders/{rng.randint(1, 99)}/items",
                    "/search?q=secret-token",
                    "/flaky",
                    "/slow",
                ]
            )
            with contextlib.suppress(httpx.HTTPError):
                await client.get(path)
            await asyncio.sleep(0.05)


async def _tail(bootstrap: str, topic: str, stop: asyncio.Event, api: str) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest")
    await consumer.start()
    last_summary = time.monotonic()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        batch = decode_batch(record.value or b"")
                    except InvalidEnvelope:
                        continue
                    for e in batch.valid:
                        status = e.status_code if e.status_code is not None else "---"
                        print(
                            f"  {e.severity:<8} {e.method} {e.upstream}{e.route:<22} {status} "
                            f"{e.elapsed_ms:7.1f} ms  {e.outcome:<13} try {e.attempt} "
                            f"trace {e.trace_id[:12]}..",
                            flush=True,
                        )
            if time.monotonic() - last_summary > 5:
                last_summary = time.monotonic()
                await asyncio.to_thread(_print_summary, api)
    finally:
        await consumer.stop()


def _print_summary(api: str) -> None:
    with contextlib.suppress(httpx.HTTPError, KeyError):
        body = httpx.get(f"{api}/v1/metrics/network", params={"window": "1m"}, timeout=2).json()
        print("  -- worker's 1m windows (p50 / p95 / p99 ms, requests, error rate) --")
        for item in body["items"]:
            p50, p95, p99 = (item[k] or 0.0 for k in ("p50_ms", "p95_ms", "p99_ms"))
            print(
                f"     {item['method']} {item['route']:<22} {p50:7.1f} {p95:7.1f} {p99:7.1f}  "
                f"n={item['requests']:<5} errors={item['error_rate']:.1%}",
                flush=True,
            )


async def _run(bootstrap: str, upstream: str, api: str, topic: str, duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    emitter = KafkaEmitter(bootstrap, service=SERVICE, topic=topic).start()
    tasks = [
        asyncio.ensure_future(_sample_service(upstream, emitter, stop)),
        asyncio.ensure_future(_tail(bootstrap, topic, stop, api)),
    ]
    try:
        if duration is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
        else:
            await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        stats = await emitter.aclose()
        print(f"demo: emitter sent {stats.sent_events} events, dropped {stats.dropped_total}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="egresswatch demo", description=__doc__)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--upstream-port", type=int, default=8181)
    parser.add_argument(
        "--rgw",
        action="store_true",
        help="sink critical events to a local Ceph RGW (else a folder)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the Kafka broker (and RGW) it started running, for a faster next demo",
    )
    args = parser.parse_args(argv)
    # SIGTERM ends the demo like Ctrl-C: through the finally blocks that stop what it started.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    services: list[LocalService] = []
    try:
        _demo(args, services)
    except KeyboardInterrupt:
        pass
    finally:
        print(shut_down(services, keep=args.keep), flush=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _demo(args: argparse.Namespace, services: list[LocalService]) -> None:
    kafka = kafka_up()
    services.append(kafka)
    bootstrap = kafka.address
    state = REPO / "var" / "demo"
    api = f"http://127.0.0.1:{args.http_port}"
    upstream = f"http://127.0.0.1:{args.upstream_port}"
    topic = PROBE_EVENTS_TOPIC
    print(f"demo: Kafka at {bootstrap} ({kafka.origin()})")
    sink_env = {"EGRESSWATCH_SINK_LOCAL_ROOT": str(state / "sink")}
    if args.rgw:
        rgw, sink_env = rgw_up()
        services.append(rgw)
    worker_env = {
        "EGRESSWATCH_APP_ID": "egresswatch-demo",
        "EGRESSWATCH_SINK_IDLE_S": "2",
        **sink_env,
    }
    worker = [sys.executable, "-m", "pipeline.cli", "worker", "--bootstrap", bootstrap]
    worker += ["--http-port", str(args.http_port), "--data-dir", str(state / "worker")]
    upstream_cmd = [sys.executable, "-m", "pipeline.demo_upstream", str(args.upstream_port)]
    with (
        _process(upstream_cmd, state / "upstream.log") as upstream_proc,
        _process(worker, state / "worker.log", worker_env) as worker_proc,
    ):
        _wait_http(
            f"{upstream}/health", 30, "the sample upstream", upstream_proc, state / "upstream.log"
        )
        _wait_http(f"{api}/v1/health/ready", 120, "the worker", worker_proc, state / "worker.log")
        print(f"demo: worker API    {api}/v1/metrics/network?window=1m")
        print(f"demo: Prometheus    {api}/metrics")
        print(f"demo: dashboard     {api}/")
        where = sink_env.get("EGRESSWATCH_S3_ENDPOINT", sink_env.get("EGRESSWATCH_SINK_LOCAL_ROOT"))
        print(f"demo: critical events are written as JSONL to {where}")
        print(f"demo: logs          {state}/worker.log")
        print("demo: a sample service now calls its upstream through the probe; Ctrl-C stops.")
        asyncio.run(_run(bootstrap, upstream, api, topic, args.duration))


if __name__ == "__main__":
    main()
