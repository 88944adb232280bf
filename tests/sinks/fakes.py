"""In-process fakes for the sink's tests: a store that fails or corrupts on demand, a clock."""

from __future__ import annotations

import random
from collections.abc import Iterable

from pipeline.probe.breaker import BreakerConfig, CircuitBreaker
from pipeline.schema import ProbeEvent
from sinks.errors import ChecksumMismatch, NoSuchObject, SinkRejected, SinkUnavailable
from sinks.jsonl import decode_jsonl
from sinks.stores import md5_hex
from tables.alerting import AlertRecord, Observed
from tests.eventgen import make_event

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z, the start of an hour


class FakeClock:
    """Wall and monotonic time in one: tests move it by hand."""

    def __init__(self, start: float = T0 + 60) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class MemoryStore:
    """An ObjectStore in a dict. ``down``: every put fails; ``fail_next``/``corrupt_next``:
    the next n puts fail / store damaged bytes and report a checksum mismatch (as a verifying
    store would); ``reject_next``: refuse for good."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.down = False
        self.fail_next = 0
        self.corrupt_next = 0
        self.reject_next = 0
        self.puts = 0
        self.log: list[tuple[str, str]] = []  # (key, "ok" | reason)

    async def put(self, key: str, data: bytes, md5: bytes | None = None) -> None:
        # A digest from the caller must be the body's, as a real store would check it.
        assert md5 is None or md5.hex() == md5_hex(data), f"{key}: md5 is not the body's"
        self.puts += 1
        if self.down or self.fail_next:
            self.fail_next = max(0, self.fail_next - 1)
            self.log.append((key, "unavailable"))
            raise SinkUnavailable(f"{key}: store down")
        if self.reject_next:
            self.reject_next -= 1
            self.log.append((key, "rejected"))
            raise SinkRejected(f"{key}: refused")
        if self.corrupt_next:
            self.corrupt_next -= 1
            damaged = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
            self.objects[key] = damaged
            self.log.append((key, "corrupt"))
            raise ChecksumMismatch(key, md5_hex(data), md5_hex(damaged))
        self.objects[key] = bytes(data)
        self.log.append((key, "ok"))

    async def get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise NoSuchObject(key) from None

    async def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))

    def lines(self, prefix: str = "") -> list[bytes]:
        return [
            line
            for key in sorted(self.objects)
            if key.startswith(prefix)
            for line in decode_jsonl(self.objects[key])
        ]


def breaker(clock: FakeClock, *, wait_s: float = 5.0, window: int = 4, min_calls: int = 2):
    config = BreakerConfig(
        failure_rate_threshold=0.5,
        sliding_window_size=window,
        minimum_number_of_calls=min_calls,
        wait_duration_in_open_s=wait_s,
        permitted_calls_in_half_open=1,
        max_wait_in_half_open_s=30.0,
    )
    return CircuitBreaker("sink-test", config, clock=clock)


def critical_events(
    n: int, *, start: float = T0, step: float = 1.0, service: str = "checkout", seed: int = 1
) -> list[ProbeEvent]:
    """``n`` critical events (503s), ``step`` seconds apart."""
    rng = random.Random(seed)
    return [
        make_event(
            service=service, started_at=start + i * step, elapsed_ms=12.0, status_code=503, rng=rng
        )
        for i in range(n)
    ]


def ok_events(n: int, *, start: float = T0, seed: int = 2) -> list[ProbeEvent]:
    rng = random.Random(seed)
    return [
        make_event(started_at=start + i, elapsed_ms=5.0, status_code=200, rng=rng) for i in range(n)
    ]


def make_alert(n: int = 0, *, service: str = "checkout", at: float = T0 + 10) -> AlertRecord:
    return AlertRecord(
        alert_id=f"{n + 1:032x}",
        status="firing",
        rule="checkout-errors",
        kind="error_rate",
        severity="page",
        service=service,
        route="/orders/{id}",
        method="GET",
        observed=Observed(value=0.2, by_view={"5m": 0.2}),
        threshold=0.05,
        objective=0.99,
        burn_rate=20.0,
        views=("1h", "5m"),
        started_at=at - 60,
        fired_at=at,
        resolved_at=None,
        evaluated_at=at,
        example_trace_ids=(),
        trace_id=f"{n + 7:032x}",
        request_id=f"{n + 9:016x}",
        message="error rate above budget",
    )


def request_ids(lines: Iterable[bytes]) -> list[str]:
    import msgspec

    return [msgspec.json.decode(line)["request_id"] for line in lines]
