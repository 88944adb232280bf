"""WebSocket clients of the live feed (``/v1/ws/events``, protocol v1, docs/live.md).

A :class:`WsClient` holds one session open to a worker and records what it receives as
:class:`~pipeline.campaign.raw.WsMessage` rows in ``RAW/ws.jsonl``:

- every message is counted; ``dropped`` notices (with their ``count``), alerts, ``hello``
  and the other session messages are always written; events are written at most
  ``max_events_per_s`` a second per client (the rest only counted), so the file stays
  bounded at any event rate. An event's ``ended_at`` is ``started_at + elapsed_ms / 1000``,
  so ``received_at - ended_at`` is the probe-to-WebSocket delay;
- it answers pings and acks each frame (``ack`` with its running count of data messages),
  as the dashboard does, so the server's window and drop-oldest policy apply to it;
- a **slow** client sleeps ``read_delay_s`` before each read and connects with a small
  kernel receive buffer: its server-side buffer overflows and it receives ``dropped``
  notices;
- a lost connection (worker killed, restarted) is retried with backoff (0.2 s doubling up to
  5 s, reset once a ``hello`` arrives) and counted in ``reconnects``.

:class:`WsClients` runs the normal clients for the whole load phase and the slow ones the
``slow_ws_clients`` incident starts and stops, shares one writer for ``ws.jsonl`` and appends
each client's :class:`~pipeline.campaign.raw.WsClientSummary` to ``RAW/ws_clients.jsonl``
when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from pipeline.campaign._jsonl_out import JsonlOut
from pipeline.campaign.raw import WsClientSummary, WsMessage, append_jsonl

__all__ = ["WsClient", "WsClients", "ws_url"]

_log = logging.getLogger("egresswatch.campaign.ws")
_DATA = frozenset({"event", "alert"})


class _Message(msgspec.Struct):
    """The fields of a live message that the campaign keeps (the rest is ignored)."""

    type: str = ""
    trace_id: str | None = None
    request_id: str | None = None
    started_at: float | None = None
    elapsed_ms: float | None = None
    count: int | None = None
    id: int | None = None


_decoder = msgspec.json.Decoder(_Message)
_encoder = msgspec.json.Encoder()


def ws_url(worker_base_url: str) -> str:
    """``http://127.0.0.1:8080`` -> ``ws://127.0.0.1:8080/v1/ws/events``."""
    parts = urlsplit(worker_base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}/v1/ws/events"


class WsClient:
    def __init__(
        self,
        name: str,
        url: str,
        out: JsonlOut,
        *,
        slow: bool = False,
        read_delay_s: float = 0.0,
        max_events_per_s: int = 200,
        recv_buffer_bytes: int | None = None,
    ) -> None:
        if read_delay_s < 0 or max_events_per_s < 0:
            raise ValueError("read_delay_s and max_events_per_s must be >= 0")
        self.name = name
        self.url = url
        self.out = out
        self.slow = slow
        self.read_delay_s = read_delay_s
        self.max_events_per_s = max_events_per_s
        self.recv_buffer_bytes = (
            recv_buffer_bytes if recv_buffer_bytes else (4096 if slow else None)
        )
        self.received = 0
        self.events = 0
        self.events_unsampled = 0
        self.dropped_notified = 0
        self.reconnects = 0
        self.connected = False
        self._second = 0
        self._written_this_second = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> WsClientSummary:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self.summary()

    def summary(self) -> WsClientSummary:
        return WsClientSummary(
            client=self.name,
            slow=self.slow,
            received=self.received,
            events=self.events,
            dropped_notified=self.dropped_notified,
            reconnects=self.reconnects,
        )

    async def _run(self) -> None:
        backoff = 0.2
        sessions = 0
        while True:
            try:
                async with await self._connect() as ws:
                    if sessions:
                        self.reconnects += 1
                    sessions += 1
                    self.connected = True
                    backoff = 0.2
                    await self._session(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, WebSocketException) as exc:
                _log.debug("ws client %s: %s: %s", self.name, type(exc).__name__, exc)
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _connect(self) -> ClientConnection:
        parts = urlsplit(self.url)
        sock: socket.socket | None = None
        if self.recv_buffer_bytes:
            # Set before connecting, so the TCP window is small from the handshake on.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer_bytes)
            sock.setblocking(False)
            try:
                loop = asyncio.get_running_loop()
                await asyncio.wait_for(
                    loop.sock_connect(sock, (parts.hostname or "127.0.0.1", parts.port or 80)), 5
                )
            except BaseException:
                sock.close()
                raise
        return await connect(
            self.url,
            sock=sock,
            open_timeout=5,
            ping_interval=None,  # the protocol has its own pings; ours would queue behind data
            max_queue=1 if self.slow else 16,
            max_size=2**22,
            compression=None,
        )

    async def _session(self, ws: ClientConnection) -> None:
        data = 0
        while True:
            if self.read_delay_s:
                await asyncio.sleep(self.read_delay_s)
            frame = await ws.recv()
            received_at = time.time()
            text = frame.encode() if isinstance(frame, str) else frame
            pongs: list[int | None] = []
            for line in text.split(b"\n"):
                if not line.strip():
                    continue
                message = self._record(line, received_at)
                if message is None:
                    continue
                if message.type in _DATA:
                    data += 1
                elif message.type == "ping":
                    pongs.append(message.id)
            for ping_id in pongs:
                await ws.send(_encoder.encode({"type": "pong", "id": ping_id}).decode())
            await ws.send(_encoder.encode({"type": "ack", "count": data}).decode())

    def _record(self, line: bytes, received_at: float) -> _Message | None:
        self.received += 1
        try:
            message = _decoder.decode(line)
        except msgspec.DecodeError:
            self.out.write(WsMessage(client=self.name, type="undecodable", received_at=received_at))
            return None
        row = WsMessage(
            client=self.name,
            type=message.type,
            received_at=received_at,
            trace_id=message.trace_id,
            request_id=message.request_id,
        )
        if message.type == "event":
            self.events += 1
            if not self._sample_event(received_at):
                self.events_unsampled += 1
                return message
            if message.started_at is not None and message.elapsed_ms is not None:
                row.ended_at = message.started_at + message.elapsed_ms / 1000
        elif message.type == "dropped":
            row.count = message.count or 0
            self.dropped_notified += row.count
        self.out.write(row)
        return message

    def _sample_event(self, now: float) -> bool:
        second = int(now)
        if second != self._second:
            self._second, self._written_this_second = second, 0
        if self._written_this_second >= self.max_events_per_s:
            return False
        self._written_this_second += 1
        return True


class WsClients:
    """The campaign's WebSocket clients, normal and slow, writing ``ws.jsonl``."""

    def __init__(self, raw_dir: Path, worker_urls: Sequence[str], *, max_events_per_s: int = 200):
        if not worker_urls:
            raise ValueError("WsClients needs at least one worker URL")
        self.raw_dir = raw_dir
        self.urls = [ws_url(u) if u.startswith("http") else u for u in worker_urls]
        self.max_events_per_s = max_events_per_s
        self.out = JsonlOut(raw_dir / "ws.jsonl")
        self.normal: list[WsClient] = []
        self.slow: list[WsClient] = []
        self._slow_rounds = 0

    def start_normal(self, per_worker: int = 1) -> None:
        for url in self.urls:
            for _ in range(per_worker):
                client = WsClient(
                    f"ws-{len(self.normal) + 1}",
                    url,
                    self.out,
                    max_events_per_s=self.max_events_per_s,
                )
                client.start()
                self.normal.append(client)

    def start_slow(self, clients: int, read_delay_s: float) -> list[str]:
        """Start ``clients`` slow readers spread over the workers; their names."""
        if clients < 1 or read_delay_s <= 0:
            raise ValueError(
                f"slow clients need clients >= 1 and read_delay_s > 0, got "
                f"{clients}, {read_delay_s}"
            )
        self._slow_rounds += 1
        started = []
        for i in range(clients):
            client = WsClient(
                f"ws-slow-{self._slow_rounds}-{i + 1}",
                self.urls[i % len(self.urls)],
                self.out,
                slow=True,
                read_delay_s=read_delay_s,
                max_events_per_s=self.max_events_per_s,
            )
            client.start()
            self.slow.append(client)
            started.append(client.name)
        return started

    async def stop_slow(self) -> list[WsClientSummary]:
        stopping, self.slow = self.slow, []
        return await self._finish(stopping)

    async def stop(self) -> list[WsClientSummary]:
        """Stop every client, write their summaries and close ``ws.jsonl``."""
        stopping, self.normal, self.slow = [*self.normal, *self.slow], [], []
        summaries = await self._finish(stopping)
        self.out.close()
        return summaries

    async def _finish(self, clients: list[WsClient]) -> list[WsClientSummary]:
        summaries = list(await asyncio.gather(*(c.stop() for c in clients)))
        for summary in summaries:
            append_jsonl(self.raw_dir / "ws_clients.jsonl", summary)
        return summaries

    def queue_figures(self) -> dict[str, dict[str, float]]:
        """What the clients were told they missed (``ws/<client>``), for the collector."""
        return {
            f"ws/{c.name}": {
                "drops": float(c.dropped_notified),
                "received": float(c.received),
                "connected": 1.0 if c.connected else 0.0,
            }
            for c in [*self.normal, *self.slow]
        }
