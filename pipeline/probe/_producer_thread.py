"""The emitter's background half: one daemon thread, its own event loop, one Kafka producer.

Nothing here runs on a caller's thread or loop. The thread takes events from an
:class:`EventSource` (the emitter's bounded queue), has them built into batch-envelope
records, one or more per target partition (:mod:`pipeline.probe._batches`; a probe record's
event is built there), sends them, then waits for the acks before it takes more,
so at most one cycle of events (``drain_max_events``) is ever outside the queue.

Life of the thread::

    connect (start producer, read partition count) --fail--> back off (exp., jitter) --+
       |                                                        ^                     |
       v                                                        +---------------------+
    pump: every flush_interval_s, or at once when drain_max_events are queued,
          drain -> encode -> group -> send -> await acks (send_timeout_s)
       |  a failed or timed-out send: its events go back to the queue front, reconnect
       v
    close requested: keep pumping until the queue is empty or the deadline passes

Every wait is bounded, by its own timeout and by the close deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from pipeline.logs import log_fields
from pipeline.probe._batches import Item, RecordBatcher

__all__ = ["EventSource", "ProducerConfig", "ProducerThread"]

log = logging.getLogger("egresswatch.emitter")


class EventSource(Protocol):
    """What the thread needs from the emitter's queue. Every method is thread-safe."""

    def depth(self) -> int: ...
    def drain(self, max_events: int) -> list[Item]: ...
    def requeue(self, events: Sequence[Item]) -> None: ...
    def record_sent(self, events: int) -> None: ...
    def record_send_error(self) -> None: ...
    def record_rejected(self, events: int) -> None: ...
    def record_invalid(self, events: int) -> None: ...
    def record_dropped_on_close(self, events: int) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ProducerConfig:
    """Fixed settings of one producer thread (built by ``KafkaEmitter``)."""

    bootstrap_servers: str
    topic: str
    producer_id: str
    client_id: str
    compression_type: str | None
    linger_ms: int
    batch_max_events: int
    drain_max_events: int
    max_record_bytes: int
    flush_interval_s: float
    send_timeout_s: float
    connect_timeout_s: float
    metadata_refresh_s: float
    backoff_initial_s: float
    backoff_max_s: float

    def producer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``; its buffers are bounded by ours."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": self.compression_type,
            "linger_ms": self.linger_ms,
            # One record is at most max_record_bytes; a batch holds whole records up to this.
            "max_batch_size": self.max_record_bytes * 3 // 2,
            "max_request_size": max(1_048_576, self.max_record_bytes * 2),
            # aiokafka expires undeliverable batches itself within our own send bound.
            "request_timeout_ms": int(self.send_timeout_s * 1000),
            "metadata_max_age_ms": int(self.metadata_refresh_s * 1000),
            "retry_backoff_ms": 100,
        }


ProducerFactory = Callable[..., Any]


_ACK_POLL_S = 0.05  # how soon a close request is noticed while waiting for acks

# The broker refuses the record itself: sending it again cannot succeed.
_REJECTED: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
)


def _failure_of(future: asyncio.Future[Any]) -> BaseException | None:
    """None if the record was acknowledged, else why not."""
    if not future.done():
        return TimeoutError("no acknowledgement before the send deadline")
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()


class _SendFailed(Exception):
    """A cycle's send failed or timed out; its events were re-queued (or counted as dropped)."""


class _Closing(Exception):
    """The close deadline passed while connecting."""


class ProducerThread:
    """Owns the daemon thread and the producer. ``start`` once, ``stop`` once."""

    def __init__(
        self,
        config: ProducerConfig,
        source: EventSource,
        *,
        producer_factory: ProducerFactory = AIOKafkaProducer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._source = source
        self._factory = producer_factory
        self._clock = clock
        self._thread = threading.Thread(target=self._run, name="egresswatch-emitter", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._close_deadline: float | None = None  # time.monotonic() value
        self._send_bound: asyncio.Timeout | None = None  # a cycle's sends, while they run
        self._batcher = RecordBatcher(
            producer_id=config.producer_id,
            batch_max_events=config.batch_max_events,
            max_record_bytes=config.max_record_bytes,
        )
        self._outage_logged = False
        self._rejected_logged_at = -1e9
        self.connected = False
        self.num_partitions = 0

    # -- called from other threads ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Ask the loop to flush now. Cheap, thread-safe; a no-op before the loop runs."""
        loop = self._loop
        if loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._on_wake)

    def _on_wake(self) -> None:
        """On the loop: flush now; a close request also cuts short sends that are blocked."""
        wake, bound, close_at = self._wake, self._send_bound, self._close_deadline
        if wake is not None:
            wake.set()
        if bound is not None and close_at is not None:
            when = asyncio.get_running_loop().time() + close_at - time.monotonic()
            current = bound.when()
            if current is None or when < current:
                with contextlib.suppress(RuntimeError):  # the bound has fired already
                    bound.reschedule(when)

    def stop(self, deadline: float, grace_s: float = 1.0) -> bool:
        """Flush until ``deadline`` (monotonic), then end the thread. True if it ended."""
        self._close_deadline = deadline
        self.wake()
        if self._thread.ident is None:
            return True
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + grace_s)
        return not self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("emitter thread crashed; queued events will be counted at close")
        finally:
            self.connected = False

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        backoff = self._config.backoff_initial_s
        while not self._close_done():
            producer = None
            try:
                producer = self._factory(**self._config.producer_kwargs())
                await self._bounded(producer.start(), self._config.connect_timeout_s)
                self.num_partitions = await self._read_partitions(producer)
                self._set_connected(True, None)
                backoff = self._config.backoff_initial_s
                await self._pump(producer)
                return  # closing, and the queue is empty or the deadline passed
            except _Closing:
                return
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect later
                self._set_connected(False, exc)
            finally:
                if producer is not None:
                    await self._stop_producer(producer)
            await self._sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311 - jitter only
            backoff = min(backoff * 2, self._config.backoff_max_s)

    async def _pump(self, producer: Any) -> None:
        config = self._config
        wake = self._wake
        assert wake is not None
        next_refresh = time.monotonic() + config.metadata_refresh_s
        while True:
            closing = self._close_deadline is not None
            if self._close_done():
                return
            if not closing and self._source.depth() < config.drain_max_events:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), config.flush_interval_s)
            if time.monotonic() >= next_refresh:
                self.num_partitions = await self._read_partitions(producer)
                next_refresh = time.monotonic() + config.metadata_refresh_s
            events = self._source.drain(config.drain_max_events)
            if events:
                await self._send_cycle(producer, events)

    async def _send_cycle(self, producer: Any, events: list[Item]) -> None:
        """Send ``events`` as one record per (partition, chunk); wait for all acks.

        A record the broker rejects as such (too large, corrupt) is dropped and counted: sending
        it again would fail again. Any other failure re-queues the record's events at the
        queue front (or counts them as dropped on close past the close deadline) and raises
        :class:`_SendFailed`, so the producer is rebuilt after a back-off.
        """
        config = self._config
        started = time.monotonic()
        try:
            records, invalid = self._batcher.build(events, self.num_partitions, self._clock())
        except Exception:  # a bug, not a Kafka failure: count what it cost, keep running
            log.exception("could not build probe records; their events are dropped")
            self._source.record_invalid(len(events))
            return
        if invalid:
            self._source.record_invalid(invalid)
        pending: list[tuple[asyncio.Future[Any], list[Item]]] = []
        outcomes: list[tuple[BaseException, list[Item]]] = []
        # One bound for all the sends (not a wait_for task per record): what it cuts short
        # counts as timed out, like a record that got no ack.
        loop = asyncio.get_running_loop()
        handed = 0
        try:
            async with asyncio.timeout_at(
                loop.time() + self._cycle_deadline(started) - time.monotonic()
            ) as self._send_bound:  # a close request moves it earlier (_on_wake)
                for partition, key, value, chunk in records:
                    if self._past_deadline():  # closing, and out of time: hand over no more
                        raise TimeoutError("the close deadline passed")
                    try:
                        future = await producer.send(
                            config.topic, value=value, key=key, partition=partition
                        )
                    except Exception as send_error:  # noqa: BLE001 - classified below
                        outcomes.append((send_error, chunk))
                    else:
                        pending.append((future, chunk))
                    handed += 1
        except TimeoutError as timed_out:
            outcomes.extend((timed_out, chunk) for *_, chunk in records[handed:])
        finally:
            self._send_bound = None
        await self._await_acks([future for future, _ in pending], started)
        for future, chunk in pending:
            failure = _failure_of(future)
            if failure is None:
                self._source.record_sent(len(chunk))
            else:
                outcomes.append((failure, chunk))
        retry: list[Item] = []
        for exc, chunk in outcomes:
            self._source.record_send_error()
            if isinstance(exc, _REJECTED):
                self._source.record_rejected(len(chunk))
                self._log_rejected(exc, len(chunk))
            else:
                retry.extend(chunk)
        if not retry:
            return
        if self._past_deadline():
            self._source.record_dropped_on_close(len(retry))
        else:
            self._source.requeue(retry)
        first = next(exc for exc, _ in outcomes if not isinstance(exc, _REJECTED))
        raise _SendFailed(f"{len(retry)} events not acknowledged") from first

    # -- helpers ------------------------------------------------------------------------

    async def _read_partitions(self, producer: Any) -> int:
        partitions = await self._bounded(
            producer.partitions_for(self._config.topic), self._config.connect_timeout_s
        )
        count = len(partitions or ())
        if count == 0 or set(partitions) != set(range(count)):
            raise RuntimeError(f"topic {self._config.topic!r} has partitions {partitions!r}")
        if self.num_partitions and count != self.num_partitions:
            log.warning(
                "probe topic partition count changed; keys are re-routed",
                extra=log_fields(before=self.num_partitions, after=count),
            )
        return count

    async def _bounded(self, awaitable: Any, timeout_s: float) -> Any:
        """Await with ``timeout_s``, cut short by the close deadline."""
        if self._close_deadline is not None:
            timeout_s = min(timeout_s, self._close_deadline - time.monotonic())
            if timeout_s <= 0:
                if asyncio.iscoroutine(awaitable):
                    awaitable.close()
                raise _Closing()
        return await asyncio.wait_for(awaitable, timeout_s)

    def _cycle_deadline(self, started: float) -> float:
        """A cycle ends ``send_timeout_s`` after it started, or at the close deadline."""
        deadline = started + self._config.send_timeout_s
        if self._close_deadline is not None:
            deadline = min(deadline, self._close_deadline)
        return deadline

    async def _await_acks(self, futures: list[asyncio.Future[Any]], started: float) -> None:
        """Wait for every ack until the cycle deadline; a close request shortens the wait."""
        while True:
            waiting = [future for future in futures if not future.done()]
            remaining = self._cycle_deadline(started) - time.monotonic()
            if not waiting or remaining <= 0:
                return
            await asyncio.wait(waiting, timeout=min(remaining, _ACK_POLL_S))

    async def _stop_producer(self, producer: Any) -> None:
        timeout = self._config.send_timeout_s
        if self._close_deadline is not None:
            timeout = min(timeout, max(0.05, self._close_deadline - time.monotonic()))
        try:
            await asyncio.wait_for(producer.stop(), timeout)
        except Exception:  # noqa: BLE001 - a stuck stop is abandoned with its producer
            log.debug("producer stop failed or timed out", exc_info=True)

    async def _sleep(self, seconds: float) -> None:
        """Back-off sleep; a close request ends it early (the loop then re-checks)."""
        wake = self._wake
        assert wake is not None
        if self._close_deadline is not None:
            seconds = min(seconds, max(0.0, self._close_deadline - time.monotonic()))
            if seconds <= 0:
                return
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    def _close_done(self) -> bool:
        """Closing, and nothing is left to send or no time is left to send it."""
        return self._close_deadline is not None and (
            self._source.depth() == 0 or self._past_deadline()
        )

    def _past_deadline(self) -> bool:
        return self._close_deadline is not None and time.monotonic() >= self._close_deadline

    def _set_connected(self, connected: bool, error: BaseException | None) -> None:
        """Log transitions only: one line when connected, one per outage."""
        if connected and not self.connected:
            log.info(
                "emitter connected to Kafka",
                extra=log_fields(topic=self._config.topic, partitions=self.num_partitions),
            )
            self._outage_logged = False
        elif not connected and not self._outage_logged:
            log.warning(
                "emitter cannot reach Kafka; buffering (bounded, drop-oldest) and retrying",
                extra=log_fields(error_class=type(error).__name__, error=str(error)[:200]),
            )
            self._outage_logged = True
        self.connected = connected

    def _log_rejected(self, exc: BaseException, events: int) -> None:
        now = time.monotonic()
        if now - self._rejected_logged_at >= 60.0:
            self._rejected_logged_at = now
            log.error(
                "Kafka rejected a probe record; its events are dropped (see max_record_bytes)",
                extra=log_fields(error_class=type(exc).__name__, events=events),
            )
