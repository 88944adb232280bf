"""Fixtures of the sink's unit tests: a fake clock, an in-memory store, a writer on them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sinks.batcher import BatchLimits
from sinks.config import SinkConfig
from sinks.spool import Spool
from sinks.writer import SinkWriter
from tests.sinks.fakes import FakeClock, MemoryStore, breaker

MakeWriter = Callable[..., SinkWriter]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def make_writer(tmp_path: Path, clock: FakeClock, store: MemoryStore) -> MakeWriter:
    """``make_writer(max_records=.., spool_bytes=.., **config)``: a writer on the fakes."""

    async def no_sleep(seconds: float) -> None:
        clock.advance(seconds)

    def make(
        *,
        max_records: int = 100,
        max_bytes: int = 1 << 20,
        max_age_s: float = 60.0,
        idle_s: float = 5.0,
        spool_bytes: int = 1 << 20,
        segment_bytes: int = 1 << 16,
        spool_dir: Path | None = None,
        the_store: object = None,
        **config: object,
    ) -> SinkWriter:
        limits = BatchLimits(
            max_records=max_records, max_bytes=max_bytes, max_age_s=max_age_s, idle_s=idle_s
        )
        spool = Spool(
            spool_dir or tmp_path / "spool", max_bytes=spool_bytes, segment_bytes=segment_bytes
        )
        return SinkWriter(
            the_store or store,  # type: ignore[arg-type]
            spool,
            breaker(clock),
            config=SinkConfig(limits=limits, **config),  # type: ignore[arg-type]
            clock=clock,
            monotonic=clock,
            sleep=no_sleep,
        )

    return make
