"""Quantile accuracy of the tables' latency sketch against exact (numpy) quantiles.

Usage: ``python bench/quantile_accuracy.py [--quick] [--seed N]``

For each latency distribution (lognormal, bimodal, heavy-tailed Pareto, tiny values with
zeros), N values for one key (quick: 100k, full: 1M):

- **single**: one sketch of all N values;
- **5m view**: the values spread over the 30 buckets of a 5-minute view, one
  ``WindowAggregate`` per bucket sent through its JSON codec (as through the changelog),
  upserted into a ``SummaryView`` and read back with ``stats(key, "5m")``: the path the
  API takes (cached prefix of 29 buckets + the open bucket).

Exact quantiles use numpy's ``method="lower"``, the rank definition of DDSketch
(``floor(q * (n - 1))``); the relative error is ``|sketch - exact| / exact``.

It also reports the serialized size of one cell (one key, one 10 s bucket) at 5, 50 and
500 requests/s, its resident size, and the cost of ``WindowAggregate.add`` per event.
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.schema import ProbeEvent, derive_severity  # noqa: E402
from tables import (  # noqa: E402
    BUCKET_S,
    LatencySketch,
    SummaryView,
    WindowAggregate,
    aggregate_events,
)

QUANTILES = (0.5, 0.95, 0.99)
T0 = 1_764_000_000
REALISTIC_RATE = 50  # requests/s per key for bytes_per_key_window


def distributions(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    bimodal = np.concatenate(
        [rng.lognormal(np.log(8.0), 0.3, n - n // 10), rng.lognormal(np.log(400.0), 0.2, n // 10)]
    )
    rng.shuffle(bimodal)
    tiny = rng.uniform(0.0, 0.05, n)
    tiny[rng.random(n) < 0.2] = 0.0
    return {
        "lognormal": rng.lognormal(np.log(50.0), 1.0, n),
        "bimodal": bimodal,
        "pareto": (rng.pareto(1.2, n) + 1.0) * 5.0,
        "tiny+zeros": tiny,
    }


def rel_error(estimate: float | None, exact: float) -> float:
    assert estimate is not None
    if exact == 0.0:
        return 0.0 if estimate == 0.0 else float("inf")
    return abs(estimate - exact) / exact


def single(values: list[float]) -> list[float | None]:
    sketch = LatencySketch()
    for v in values:
        sketch.add(v)
    return sketch.quantiles(QUANTILES)


def five_minute_view(values: list[float], rng: np.random.Generator) -> list[float | None]:
    key = "bench|GET|/latency"
    buckets = rng.integers(0, 30, len(values))
    cells = [WindowAggregate(key, T0 + b * BUCKET_S) for b in range(30)]
    for v, b in zip(values, buckets.tolist(), strict=True):
        cells[b].latency.add(v)
    view = SummaryView()
    for cell in cells:
        cell.requests = cell.latency.count
        wire = json.dumps(cell.to_data(), separators=(",", ":"))
        view.upsert(WindowAggregate.from_data(json.loads(wire)))
    stats = view.stats(key, "5m")
    assert stats is not None and stats.requests == len(values)
    return [stats.p50_ms, stats.p95_ms, stats.p99_ms]


def events_for_bucket(rate_per_s: int, rng: np.random.Generator) -> list[ProbeEvent]:
    n = rate_per_s * BUCKET_S
    latencies = rng.lognormal(np.log(40.0), 0.8, n).tolist()
    out = []
    for i, elapsed in enumerate(latencies):
        r = rng.random()
        if r < 0.02:
            parts: dict[str, Any] = {"outcome": "http_error", "status_code": 503}
            parts["error_class"] = "http_5xx"
        elif r < 0.03:
            parts = {"outcome": "timeout", "status_code": None, "error_class": "read_timeout"}
        else:
            parts = {"outcome": "ok", "status_code": 200, "error_class": None}
        attempt = 2 if rng.random() < 0.03 else 1
        out.append(
            ProbeEvent(
                service="checkout",
                started_at=T0 + i * BUCKET_S / n,
                elapsed_ms=elapsed,
                method="GET",
                route="/users/{id}",
                upstream="api.local:8080",
                severity=derive_severity(
                    outcome=parts["outcome"],
                    status_code=parts["status_code"],
                    elapsed_ms=elapsed,
                    attempt=attempt,
                ),
                trace_id=f"{rng.integers(1, 2**63):032x}",
                request_id=f"{rng.integers(1, 2**63):016x}",
                logical_request_id=f"{rng.integers(1, 2**63):016x}",
                attempt=attempt,
                bytes_sent=200,
                bytes_received=int(rng.integers(100, 20_000)),
                pool_wait_ms=float(rng.exponential(0.5)),
                **parts,
            )
        )
    return out


def cell_sizes(rng: np.random.Generator) -> dict[int, tuple[int, int]]:
    """Serialized (compact JSON, as Faust writes it) and resident bytes of one cell."""
    sizes = {}
    for rate in (5, REALISTIC_RATE, 500):
        events = events_for_bucket(rate, rng)
        (cell,) = aggregate_events(events).values()
        wire = json.dumps(cell.__json__(), separators=(",", ":")).encode()
        tracemalloc.start()
        restored = WindowAggregate.from_data(json.loads(wire))
        resident, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del restored
        sizes[rate] = (len(wire), resident)
    return sizes


def add_cost(rng: np.random.Generator) -> tuple[float, float]:
    """CPU microseconds per event: ``WindowAggregate.add``, then ``aggregate_events``."""
    events = events_for_bucket(2_000, rng)  # 20,000 events
    timer = time.process_time

    def run_add() -> None:
        cell = WindowAggregate("checkout|GET|/users/{id}", T0)
        add = cell.add
        for e in events:
            add(e)

    add_us = min(timeit.repeat(run_add, timer=timer, number=1, repeat=5)) / len(events) * 1e6
    batch_us = (
        min(timeit.repeat(lambda: aggregate_events(events), timer=timer, number=1, repeat=5))
        / len(events)
        * 1e6
    )
    return add_us, batch_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k values per key, not 1M")
    parser.add_argument("--seed", type=int, default=20241129)
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    worst = {q: 0.0 for q in QUANTILES}
    print(f"quantile accuracy, {n:,} values per key, relative_accuracy=0.01\n")
    header = f"{'distribution':<12} {'path':<8}"
    for q in QUANTILES:
        label = "p" + format(q * 100, "g")
        header += f" | {label + ' exact':>10} {'sketch':>10} {'rel.err':>7}"
    print(header)
    for name, array in distributions(rng, n).items():
        values = array.tolist()
        exact = [float(np.quantile(array, q, method="lower")) for q in QUANTILES]
        for path, got in (("single", single(values)), ("5m view", five_minute_view(values, rng))):
            line = f"{name:<12} {path:<8}"
            for q, e, g in zip(QUANTILES, exact, got, strict=True):
                err = rel_error(g, e)
                worst[q] = max(worst[q], err)
                line += f" | {e:>10.4g} {g:>10.4g} {err:>7.2%}"
            print(line)

    sizes = cell_sizes(np.random.default_rng(args.seed + 1))  # the same in quick and full
    print("\none cell (one key, one 10 s bucket): serialized JSON / resident bytes")
    for rate, (wire, resident) in sizes.items():
        print(f"  {rate:>4} req/s ({rate * BUCKET_S:>5} events): {wire:>6} B / {resident:>7} B")
    add_us, batch_us = add_cost(np.random.default_rng(args.seed + 2))
    print(f"\nWindowAggregate.add: {add_us:.2f} us/event (CPU, best of 5)")
    print(f"aggregate_events:    {batch_us:.2f} us/event (grouping + add)")
    elapsed = time.perf_counter() - started
    print(f"elapsed: {elapsed:.1f} s")

    result = {
        "bench": "quantile_accuracy",
        "mode": "quick" if args.quick else "full",
        "values_per_key": n,
        "max_rel_error_p50": round(worst[0.5], 6),
        "max_rel_error_p95": round(worst[0.95], 6),
        "max_rel_error_p99": round(worst[0.99], 6),
        "target_rel_error": 0.01,
        "bytes_per_key_window": sizes[REALISTIC_RATE][0],
        "bytes_per_key_window_rate_per_s": REALISTIC_RATE,
        "resident_bytes_per_cell": sizes[REALISTIC_RATE][1],
        "add_us_per_event": round(add_us, 3),
        "aggregate_events_us_per_event": round(batch_us, 3),
        "elapsed_s": round(elapsed, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
