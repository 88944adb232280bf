"""LiveHub: the registry of live clients and the fan-out of events and alerts to them.

Contract (invariant I3, bounded resources):

- At most ``max_clients`` clients; :meth:`LiveHub.connect` beyond that raises
  :class:`HubFull` (the endpoint closes with 1013, "try again later"), counted in
  ``refused_total``.
- Each client has its own buffer of at most ``buffer_size`` messages. A message that finds
  it full pushes the oldest out (drop-oldest); the client's ``dropped_total`` counts them,
  and the client is told with a ``dropped`` notice placed right before the messages that
  follow the gap (at most one per frame, only in frames that carry data). Messages are
  encoded once and shared, so a full buffer costs ``buffer_size`` references, not copies.
- Flow control: a client that acks (``{"type": "ack", "count": N}``, N = data messages
  received so far) has at most ``window`` data messages in flight; the rest wait in its
  buffer, where drop-oldest applies. This keeps a slow reader's backlog on the server, small
  and fresh, rather than megabytes deep in socket buffers. A client that never acks is
  paced by TCP only.
- Session messages (hello, ping, filter, error) jump the queue, bypass the window and are
  bounded too (``_MAX_CONTROLS``, oldest dropped).

Everything here runs on the event loop's thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

from api.live.protocol import LiveFilter, LiveMessage, control, new_trace_id

__all__ = ["HubFull", "LiveClient", "LiveHub"]

_MAX_CONTROLS: Final = 16


class HubFull(Exception):
    """The hub already serves ``max_clients`` clients."""


class LiveClient:
    """One connected client: its filter, its bounded buffer and its counters."""

    def __init__(
        self, client_id: int, trace_id: str, live_filter: LiveFilter, *, capacity: int, window: int
    ) -> None:
        self.id = client_id
        self.trace_id = trace_id
        """The session's trace id, carried by every session message."""
        self.filter = live_filter
        self.capacity = capacity
        self.window = window
        self.buffer: deque[LiveMessage] = deque(maxlen=capacity)
        self.high_water = 0
        """The deepest the buffer has been (never above ``capacity``)."""
        self.queued_total = 0
        self.dropped_total = 0
        self.sent_total = 0
        """Data messages handed to the socket."""
        self.acked: int | None = None
        """The client's last ack (None: it never acked, no window)."""
        self._unreported = 0
        self._shed = 0
        self._controls: deque[str] = deque(maxlen=_MAX_CONTROLS)
        self._wake = asyncio.Event()
        self.pong = asyncio.Event()
        self.ping_id = 0

    def offer(self, message: LiveMessage) -> bool:
        """Queue ``message`` if the filter wants it; drop the oldest when full."""
        if not self.filter.matches(message):
            return False
        buffer = self.buffer
        if len(buffer) == self.capacity:
            self.dropped_total += 1
            self._unreported += 1
        buffer.append(message)
        self.queued_total += 1
        if len(buffer) > self.high_water:
            self.high_water = len(buffer)
        self._wake.set()
        return True

    def note_shed(self, count: int) -> None:
        """The server skipped ``count`` events for everyone (overload), before filtering."""
        self._shed += count

    def send_control(self, text: str) -> None:
        self._controls.append(text)
        self._wake.set()

    def set_filter(self, live_filter: LiveFilter) -> int:
        """Apply a new filter, also to what is still buffered. Returns how many were removed."""
        self.filter = live_filter
        kept = [message for message in self.buffer if live_filter.matches(message)]
        removed = len(self.buffer) - len(kept)
        if removed:
            self.buffer.clear()
            self.buffer.extend(kept)
        return removed

    def ack(self, count: int) -> None:
        """The client has received ``count`` data messages in all (never more than sent)."""
        count = min(count, self.sent_total)
        if self.acked is None or count > self.acked:
            self.acked = count
            self._wake.set()

    def answer(self, ping_id: int | None) -> None:
        """A pong: answers the last ping (or an older one, when it names one)."""
        if ping_id is None or ping_id >= self.ping_id:
            self.pong.set()

    def ping(self) -> None:
        self.ping_id += 1
        self.pong.clear()
        self.send_control(control("ping", self.trace_id, id=self.ping_id))

    @property
    def in_flight(self) -> int:
        return 0 if self.acked is None else self.sent_total - self.acked

    def take_frame(self, max_messages: int) -> list[str]:
        """The next frame's lines: session messages, a dropped notice, then data."""
        lines = list(self._controls)
        self._controls.clear()
        room = max_messages
        if self.acked is not None:
            room = min(room, self.window - self.in_flight)
        buffer = self.buffer
        n = min(room, len(buffer))
        if n > 0:
            if self._unreported or self._shed:  # the notice goes with the data after the gap
                notice = control(
                    "dropped",
                    self.trace_id,
                    count=self._unreported,
                    total=self.dropped_total,
                    shed=self._shed,
                )
                lines.append(notice)
                self._unreported = self._shed = 0
            lines.extend(buffer.popleft().text for _ in range(n))
            self.sent_total += n
        return lines

    async def next_frame(self, max_messages: int) -> list[str]:
        """Wait until there is something to send (and room in the window), then take it."""
        while True:
            lines = self.take_frame(max_messages)
            if lines:
                return lines
            self._wake.clear()
            await self._wake.wait()

    def stats(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "filter": self.filter.as_dict(),
            "buffered": len(self.buffer),
            "high_water": self.high_water,
            "queued_total": self.queued_total,
            "dropped_total": self.dropped_total,
            "sent_total": self.sent_total,
            "in_flight": self.in_flight,
        }


class LiveHub:
    """Clients by id; :meth:`publish` offers each message to every client."""

    def __init__(self, *, max_clients: int = 500, buffer_size: int = 1_000, window: int = 200):
        if max_clients < 1 or buffer_size < 1 or window < 1:
            raise ValueError("max_clients, buffer_size and window must be >= 1")
        self.max_clients = max_clients
        self.buffer_size = buffer_size
        self.window = window
        self._clients: dict[int, LiveClient] = {}
        self._ids = itertools.count(1)
        self.published_total = 0
        self.refused_total = 0
        self._dropped_gone = 0
        """Drops of clients that have left (kept so the total never goes backwards)."""

    def __len__(self) -> int:
        return len(self._clients)

    @property
    def clients(self) -> list[LiveClient]:
        return list(self._clients.values())

    def connect(self, live_filter: LiveFilter | None = None) -> LiveClient:
        """Register a client. Raises :class:`HubFull` at ``max_clients``."""
        if len(self._clients) >= self.max_clients:
            self.refused_total += 1
            raise HubFull(f"too many live clients (max {self.max_clients})")
        client = LiveClient(
            next(self._ids),
            new_trace_id(),
            live_filter or LiveFilter(),
            capacity=self.buffer_size,
            window=self.window,
        )
        self._clients[client.id] = client
        return client

    def disconnect(self, client: LiveClient) -> None:
        if self._clients.pop(client.id, None) is not None:
            self._dropped_gone += client.dropped_total
            client.buffer.clear()

    def publish(self, messages: Iterable[LiveMessage]) -> None:
        batch = messages if isinstance(messages, list) else list(messages)
        self.published_total += len(batch)
        for client in self._clients.values():
            offer = client.offer
            for message in batch:
                offer(message)

    def shed(self, count: int) -> None:
        """Tell every client that the feed skipped ``count`` events (overload)."""
        for client in self._clients.values():
            client.note_shed(count)

    def stats(self) -> dict[str, Any]:
        clients = self._clients.values()
        return {
            "clients": len(self._clients),
            "max_clients": self.max_clients,
            "buffer_size": self.buffer_size,
            "window": self.window,
            "published_total": self.published_total,
            "refused_total": self.refused_total,
            "dropped_total": self._dropped_gone + sum(c.dropped_total for c in clients),
            "buffered": sum(len(c.buffer) for c in clients),
        }
