"""The ``/v1/ws/events`` endpoint: one session per WebSocket, three tasks each.

- **sender**: the only task that writes: frames from the client's buffer (``LiveClient``),
  at most one per ``min_frame_interval_s`` (what arrives meanwhile shares the next frame:
  the cost per client follows the frame rate, not the event rate). A reader that does not
  keep up blocks this task (uvicorn honours the socket's flow control), never the hub: its
  buffer drops the oldest messages meanwhile.
- **receiver**: filter changes, pongs and acks; a bad message gets an ``error`` message
  and the session goes on.
- **heartbeat**: a ``ping`` every ``ping_interval_s``; a peer that has not answered with a
  ``pong`` within ``ping_timeout_s`` is dead: closed with 4408.

Whichever task ends first ends the session; the client leaves the hub at once, and the
closing frame gets ``close_timeout_s`` to go out (a peer that reads nothing cannot hold the
handler: what stays behind is uvicorn's bounded transport buffer until TCP gives up).

Close codes: 1013 hub full (try again later), 4400 invalid filter in the query string,
4403 cross-origin page, 4408 heartbeat timeout. See ``docs/live.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Final
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api.live.hub import HubFull, LiveClient, LiveHub
from api.live.protocol import (
    PROTOCOL_VERSION,
    Ack,
    FilterRequest,
    InvalidMessage,
    LiveFilter,
    control,
    decode_client_message,
)
from pipeline.logs import log_fields

__all__ = [
    "CLOSE_CROSS_ORIGIN",
    "CLOSE_FULL",
    "CLOSE_HEARTBEAT",
    "CLOSE_INVALID_FILTER",
    "LiveEndpoint",
]

CLOSE_FULL: Final = 1013
CLOSE_INVALID_FILTER: Final = 4400
CLOSE_CROSS_ORIGIN: Final = 4403
CLOSE_HEARTBEAT: Final = 4408

_log = logging.getLogger("egresswatch.live")


class LiveEndpoint:
    """Serves live sessions from ``hub``; ``handle`` is the Starlette WebSocket endpoint."""

    def __init__(
        self,
        hub: LiveHub,
        *,
        ping_interval_s: float = 10.0,
        ping_timeout_s: float = 20.0,
        max_frame_messages: int = 100,
        min_frame_interval_s: float = 0.05,
        close_timeout_s: float = 5.0,
        allowed_origins: Collection[str] = (),
    ) -> None:
        if not (ping_interval_s > 0 and ping_timeout_s > 0 and max_frame_messages >= 1):
            raise ValueError("ping_interval_s, ping_timeout_s > 0 and max_frame_messages >= 1")
        self.hub = hub
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.max_frame_messages = max_frame_messages
        self.min_frame_interval_s = min_frame_interval_s
        self.close_timeout_s = close_timeout_s
        self.allowed_origins = frozenset(allowed_origins)
        self.heartbeat_timeouts_total = 0
        self.sessions_total = 0

    async def handle(self, websocket: WebSocket) -> None:
        await websocket.accept()
        if not self._same_origin(websocket):
            await self._close(websocket, CLOSE_CROSS_ORIGIN, "cross-origin page not allowed")
            return
        params = websocket.query_params
        try:
            live_filter = LiveFilter.parse(
                min_severity=params.get("min_severity"),
                route=params.get("route"),
                service=params.get("service"),
            )
        except InvalidMessage as exc:
            await self._close(websocket, CLOSE_INVALID_FILTER, exc.message[:120])
            return
        try:
            client = self.hub.connect(live_filter)
        except HubFull as exc:
            await self._close(websocket, CLOSE_FULL, str(exc))
            return
        self.sessions_total += 1
        try:
            await self._session(websocket, client)
        finally:
            self.hub.disconnect(client)

    async def _session(self, websocket: WebSocket, client: LiveClient) -> None:
        client.send_control(
            control(
                "hello",
                client.trace_id,
                protocol=PROTOCOL_VERSION,
                session=client.id,
                filter=client.filter.as_dict(),
                buffer=client.capacity,
                window=client.window,
                ping_interval_s=self.ping_interval_s,
                ping_timeout_s=self.ping_timeout_s,
            )
        )
        sender = asyncio.ensure_future(self._send(websocket, client))
        receiver = asyncio.ensure_future(self._receive(websocket, client))
        heartbeat = asyncio.ensure_future(self._heartbeat(client))
        tasks = {sender, receiver, heartbeat}
        for task in tasks:
            task.add_done_callback(_retrieve)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            # Not gather(): under cancellation it would raise the children's CancelledError,
            # not the one the caller's cancel scope is waiting for.
            await asyncio.wait(tasks)
        if heartbeat.done() and not heartbeat.cancelled() and heartbeat.exception() is None:
            self.heartbeat_timeouts_total += 1
            _log.info(
                "live client timed out",
                extra=log_fields(event="live_heartbeat_timeout", trace_id=client.trace_id),
            )
            await self._close(websocket, CLOSE_HEARTBEAT, "heartbeat timeout")
        elif not receiver.done():
            await self._close(websocket, 1000, "")

    async def _send(self, websocket: WebSocket, client: LiveClient) -> None:
        limit, interval = self.max_frame_messages, self.min_frame_interval_s
        loop = asyncio.get_running_loop()
        while True:
            lines = await client.next_frame(limit)
            sent_at = loop.time()
            await websocket.send_text("\n".join(lines))
            pause = interval - (loop.time() - sent_at)
            if pause > 0:
                await asyncio.sleep(pause)

    async def _receive(self, websocket: WebSocket, client: LiveClient) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            try:
                request = decode_client_message(data)
            except InvalidMessage as exc:
                client.send_control(
                    control("error", client.trace_id, code=exc.code, message=exc.message[:200])
                )
                continue
            if isinstance(request, Ack):
                client.ack(request.count)
            elif isinstance(request, FilterRequest):
                client.set_filter(LiveFilter.of(request))
                now = client.filter.as_dict()
                client.send_control(control("filter", client.trace_id, filter=now))
            else:
                client.answer(request.id)

    async def _heartbeat(self, client: LiveClient) -> None:
        """Returns when the peer missed a pong deadline (the session then ends)."""
        while True:
            await asyncio.sleep(self.ping_interval_s)
            client.ping()
            try:
                await asyncio.wait_for(client.pong.wait(), self.ping_timeout_s)
            except TimeoutError:
                return

    def _same_origin(self, websocket: WebSocket) -> bool:
        """Pages of another site may not read the feed (CSWSH); non-browsers send no Origin."""
        origin = websocket.headers.get("origin")
        if origin is None or origin in self.allowed_origins:
            return True
        return urlsplit(origin).netloc.lower() == websocket.headers.get("host", "").lower()

    async def _close(self, websocket: WebSocket, code: int, reason: str) -> None:
        if websocket.application_state is WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            await asyncio.wait_for(websocket.close(code, reason), self.close_timeout_s)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a session task's outcome as seen (a peer gone mid-send is not an error)."""
    if not task.cancelled():
        task.exception()
