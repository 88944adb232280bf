"""The campaign's open-model load generator, run as its own process by the runner.

``python -m pipeline.campaign.load --plan RAW/plan.json --t0 EPOCH --upstream URL
--bootstrap HOST:PORT --topic TOPIC --out RAW`` (``--plan`` also takes the JSON text).

From ``t0`` to ``t0 + plan.load_end_s`` it starts the arrivals of
:mod:`pipeline.campaign._arrivals` at their intended times, whatever the system's speed
(an open model). An arrival that finds ``plan.max_in_flight`` calls in flight is not started:
it is a dropped iteration of its phase (k6's ``dropped_iterations``), counted, with the first
intended times kept. Then no call starts; the calls in flight get a bounded time to end
(their timeouts and retries), the rest are cancelled; the emitters are closed; the files are
written; exit 0.

Per logical request, the caller makes a fresh trace id, sends it in ``traceparent``, counts
the probe's attempts under it (:mod:`pipeline.campaign._groundtruth`) and writes one
:class:`~pipeline.campaign.raw.CallRecord` (latency from the *intended* start: no
coordinated omission). Every second, one :class:`~pipeline.campaign.raw.LoadTick` goes to
``load.jsonl`` and, as one JSON line, to stdout (the runner's live display). At the end,
``load_summary.json`` and ``latency/<name>.hdr``. SIGTERM or SIGINT: no call starts any
more, those in flight are cancelled, everything is still written (``complete=False``), exit
0 within seconds.

Everything runs on one event loop: one task per call, no thread per call (the emitters each
have their background thread).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from pipeline.campaign._arrivals import iter_arrivals
from pipeline.campaign._loadgen import LoadGenerator
from pipeline.campaign.profile import Plan
from pipeline.probe.emitter import KafkaEmitter
from pipeline.probe.sink import EventSink

__all__ = ["LoadGenerator", "main", "plan_from_json"]


def plan_from_json(data: bytes) -> Plan:
    """The :class:`Plan` the runner wrote (``msgspec.json.encode(plan)``, indented or not)."""
    try:
        return msgspec.json.decode(data, type=Plan)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a campaign plan: {exc}") from exc


def _kafka_sinks(bootstrap: str, topic: str) -> Callable[[str], tuple[EventSink, KafkaEmitter]]:
    def sink_for(service: str) -> tuple[EventSink, KafkaEmitter]:
        emitter = KafkaEmitter(bootstrap, service=service, topic=topic).start()
        return emitter, emitter

    return sink_for


def _write_stdout(line: bytes) -> None:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()


async def _amain(args: argparse.Namespace, plan: Plan) -> int:
    out = Path(args.out)
    generator = LoadGenerator(
        plan,
        t0=args.t0,
        upstream=args.upstream,
        out=out,
        sink_for=_kafka_sinks(args.bootstrap, args.topic),
        stdout=_write_stdout,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, generator.stop)
    summary = await generator.run()
    print(
        f"load: done, complete={summary.complete}, calls={generator.calls.written}",
        file=sys.stderr,
    )
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.campaign.load", description=__doc__)
    parser.add_argument("--plan", required=True, help="plan.json path (or its JSON text)")
    parser.add_argument("--t0", required=True, type=float, help="epoch seconds of run time 0")
    parser.add_argument("--upstream", required=True, help="base URL the services call")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap HOST:PORT")
    parser.add_argument("--topic", required=True, help="the probe events topic")
    parser.add_argument("--out", required=True, help="the run's raw/ directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    text: str = args.plan
    try:
        data = text.encode() if text.lstrip().startswith("{") else Path(text).read_bytes()
        plan = plan_from_json(data)
        iter_arrivals(plan)  # bad burst params: an error now, not mid-run
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_amain(args, plan))


if __name__ == "__main__":
    sys.exit(main())
