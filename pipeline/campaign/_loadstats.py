"""What the load generator counts and writes: latency histograms, per-second ticks, calls.

- :class:`LatencyBook`: one HDR histogram (1 us .. 60 s, 3 significant digits) per phase
  name (``warmup``, ``ab-probed``, ``ab-baseline``, ``load``, ``cardinality-burst``),
  written at the end as ``latency/<name>.hdr`` (base64 of ``HdrHistogram.encode()``).
- :class:`Second`: the counts of calls completed (and started, dropped) in one second, with
  its own histogram for the tick's p50/p95/p99. ``errors`` counts every outcome but ``ok``
  (``timeouts`` and ``breaker_open`` are part of it); ``retries`` is attempts - 1 summed;
  ``pool_waits`` counts calls that started while their client had ``max_connections``
  calls in flight already (so httpx's pool made them wait).
- :class:`CallWriter`: ``calls.jsonl``, streamed: encoded records wait in a buffer of at
  most ``max_buffered`` lines, written every second by the caller's ticker, or at once
  when the buffer is full (``early_flushes``): nothing is dropped.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import BinaryIO, Final

import msgspec
from hdrh.histogram import HdrHistogram

from pipeline.campaign.raw import CallRecord

__all__ = [
    "MAX_LATENCY_US",
    "CallWriter",
    "LatencyBook",
    "Second",
    "histogram_name",
    "new_histogram",
]

MIN_LATENCY_US: Final = 1
MAX_LATENCY_US: Final = 60_000_000
SIGNIFICANT_DIGITS: Final = 3
HISTOGRAMS: Final = ("warmup", "ab-probed", "ab-baseline", "load")
"""Always written (empty if the phase had no call); others only when used."""


def new_histogram() -> HdrHistogram:
    return HdrHistogram(MIN_LATENCY_US, MAX_LATENCY_US, SIGNIFICANT_DIGITS)


def _clamp_us(latency_s: float) -> int:
    return min(MAX_LATENCY_US, max(MIN_LATENCY_US, int(latency_s * 1e6)))


def histogram_name(phase: str, probed: bool, attack: bool) -> str:
    """The histogram a call's latency goes to."""
    if attack:
        return "cardinality-burst"
    if phase == "ab":
        return "ab-probed" if probed else "ab-baseline"
    return phase if probed else f"{phase}-control"


class LatencyBook:
    """Histograms by name, made on first use."""

    def __init__(self) -> None:
        self.histograms: dict[str, HdrHistogram] = {name: new_histogram() for name in HISTOGRAMS}

    def record(self, name: str, latency_s: float) -> None:
        histogram = self.histograms.get(name)
        if histogram is None:
            histogram = self.histograms[name] = new_histogram()
        histogram.record_value(_clamp_us(latency_s))

    def write(self, directory: Path) -> dict[str, str]:
        """Write ``<name>.hdr`` files under ``directory``; name -> path relative to its
        parent (``latency/<name>.hdr``)."""
        directory.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for name, histogram in self.histograms.items():
            target = directory / f"{name}.hdr"
            encoded = histogram.encode()
            base64.b64decode(encoded, validate=True)  # hdrh's encode() is base64 already
            partial = target.with_name(f".{target.name}.partial")
            partial.write_bytes(encoded + b"\n")
            partial.replace(target)
            files[name] = f"{directory.name}/{target.name}"
        return files


class Second:
    """Counters of one second of the load."""

    __slots__ = (
        "breaker_open",
        "completed",
        "dropped",
        "errors",
        "histogram",
        "ok",
        "pool_waits",
        "retries",
        "started",
        "timeouts",
    )

    def __init__(self) -> None:
        self.started = 0
        self.completed = 0
        self.dropped = 0
        self.ok = 0
        self.errors = 0
        self.timeouts = 0
        self.retries = 0
        self.breaker_open = 0
        self.pool_waits = 0
        self.histogram: HdrHistogram | None = None  # made on the first completed call

    def completed_call(
        self, outcome: str, attempts: int, latency_s: float, *, pool_wait: bool
    ) -> None:
        self.completed += 1
        if outcome == "ok":
            self.ok += 1
        else:
            self.errors += 1
            if outcome == "timeout":
                self.timeouts += 1
            elif outcome == "breaker_open":
                self.breaker_open += 1
        if attempts > 1:
            self.retries += attempts - 1
        if pool_wait:
            self.pool_waits += 1
        histogram = self.histogram
        if histogram is None:
            histogram = self.histogram = new_histogram()
        histogram.record_value(_clamp_us(latency_s))

    def percentiles_ms(self) -> tuple[float | None, float | None, float | None]:
        histogram = self.histogram
        if histogram is None or histogram.get_total_count() == 0:
            return None, None, None
        p50, p95, p99 = (histogram.get_value_at_percentile(q) / 1000.0 for q in (50, 95, 99))
        return p50, p95, p99


class CallWriter:
    """``calls.jsonl``, appended in batches from a bounded buffer."""

    def __init__(self, path: Path, *, max_buffered: int = 20_000) -> None:
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be >= 1, got {max_buffered}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_buffered = max_buffered
        self._out: BinaryIO = path.open("ab")
        self._buffer: list[bytes] = []
        self._encode = msgspec.json.Encoder().encode
        self.written = 0
        self.early_flushes = 0
        """Flushes forced by a full buffer (between two ticks)."""

    def add(self, record: CallRecord) -> None:
        buffer = self._buffer
        buffer.append(self._encode(record))
        if len(buffer) >= self.max_buffered:
            self.early_flushes += 1
            self.flush()

    def flush(self) -> None:
        buffer = self._buffer
        if not buffer:
            return
        self._out.write(b"\n".join(buffer) + b"\n")
        self._out.flush()
        self.written += len(buffer)
        buffer.clear()

    def close(self) -> None:
        self.flush()
        self._out.close()
