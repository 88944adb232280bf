"""The fault upstream's server: connections, the control API, normal answers and faults.

:class:`UpstreamServer` is what ``python -m pipeline.campaign.upstream`` runs (the contract,
control API and bounds are in that module's docstring); tests start it in-process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from pipeline.campaign._upstream_control import (
    CONTROL_PREFIX,
    HEALTH_PATH,
    STATS_PATH,
    UpstreamStats,
)
from pipeline.campaign._upstream_faults import FaultError, FaultSpec, FaultTable, parse_fault
from pipeline.campaign._upstream_http import MAX_HEADER_BYTES, HttpError, Request, head
from pipeline.campaign._upstream_http import read_request as _read_request

__all__ = ["UpstreamConfig", "UpstreamServer", "json_body"]

_MAX_HIT_IDS: Final = 1024
"""Fault ids remembered in ``fault_hits``; later ones are summed under ``_other``."""
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
_LINGER_S: Final = 1.0
_LINGER_BYTES: Final = 256 * 1024
_MAX_REFUSING: Final = 256
"""Over-the-cap connections being answered 503 at once; more are reset without an answer."""


@dataclass(frozen=True)
class UpstreamConfig:
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    median_ms: float = 5.0
    sigma: float = 0.5
    body_bytes: int = 512
    max_connections: int = 1024
    max_hangs: int = 512
    idle_timeout_s: float = 60.0


def json_body(size: int) -> bytes:
    """Exactly ``size`` bytes of valid JSON (for ``size`` >= 1)."""
    if size < 2:
        return b"0"[:size]
    if size < 20:
        return b"{}" + b" " * (size - 2)
    return b'{"ok":true,"pad":"' + b"x" * (size - 20) + b'"}'


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class UpstreamServer:
    """``host, port = await server.start()`` ... ``await server.close()``."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.stats = UpstreamStats()
        self.table = FaultTable(config.seed, config.median_ms, config.sigma)
        self._body = json_body(config.body_bytes)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refusing = 0

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(
            self._on_connect,
            self.config.host,
            self.config.port,
            limit=MAX_HEADER_BYTES,
            backlog=1024,
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return self.config.host, port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # ---------------------------------------------------------------- connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        s = self.stats
        s.connections_total += 1
        self._tasks.add(task)
        if s.connections_open >= self.config.max_connections:
            s.connection_overflows += 1
            if self._refusing >= _MAX_REFUSING:
                writer.transport.abort()  # a flood: no polite answer, just the reset
            else:
                self._refusing += 1
                try:
                    await self._refuse(reader, writer, 503, "too many connections")
                except asyncio.CancelledError:
                    pass  # close() while refusing; see below why not re-raised
                finally:
                    self._refusing -= 1
            self._tasks.discard(task)
            return
        s.connections_open += 1
        try:
            while True:
                try:
                    async with asyncio.timeout(self.config.idle_timeout_s):  # no extra task
                        request = await _read_request(reader)
                except TimeoutError:
                    s.idle_timeouts += 1
                    break
                except HttpError as exc:
                    if exc.status == 431:
                        s.header_overflows += 1
                    else:
                        s.bad_requests += 1
                    await self._refuse(reader, writer, exc.status, str(exc))
                    break
                if request is None or not await self._respond(request, writer):
                    break
        except (ConnectionError, OSError):
            pass  # the client went away: nothing to answer
        except asyncio.CancelledError:
            # close() cancels us. Swallowed because asyncio's stream callback (3.11) calls
            # task.exception() on this task, which would raise and log for a cancelled one.
            pass
        finally:
            s.connections_open -= 1
            self._tasks.discard(task)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes, status: int) -> None:
        writer.write(data)
        await writer.drain()
        key = str(status)
        self.stats.by_status[key] = self.stats.by_status.get(key, 0) + 1

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, message: str
    ) -> None:
        """Answer an error and close; the unread rest of the request is read and dropped first
        (at most :data:`_LINGER_BYTES`, :data:`_LINGER_S`), or closing with unread data would
        reset the connection and the client would never see the answer."""
        body = _json({"error": message})
        try:
            await self._send(writer, head(status, len(body), keep_alive=False) + body, status)
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(_LINGER_S):
                dropped = 0
                while dropped < _LINGER_BYTES:
                    piece = await reader.read(16 * 1024)
                    if not piece:
                        break
                    dropped += len(piece)
        except (ConnectionError, OSError, TimeoutError):
            pass
        writer.close()

    async def _json_reply(
        self, writer: asyncio.StreamWriter, request: Request, status: int, value: Any = None
    ) -> bool:
        body = b"" if value is None else _json(value)
        await self._send(
            writer, head(status, len(body), keep_alive=request.keep_alive) + body, status
        )
        return request.keep_alive

    async def _respond(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must close."""
        path = request.path
        if path.startswith("/_") or path == HEALTH_PATH:
            self.stats.control_requests += 1
            status, value = self._control(request)
            return await self._json_reply(writer, request, status, value)
        return await self._load(request, writer)

    # ---------------------------------------------------------------- control API

    def _control(self, request: Request) -> tuple[int, Any]:
        method, path = request.method, request.path
        if path == HEALTH_PATH:
            return (200, {"status": "ok"}) if method == "GET" else _not_allowed(method, path)
        if path == STATS_PATH:
            if method != "GET":
                return _not_allowed(method, path)
            self.stats.faults_active = len(self.table.faults())
            return 200, msgspec.to_builtins(self.stats)
        if path == CONTROL_PREFIX:
            if method != "GET":
                return _not_allowed(method, path)
            return 200, {"faults": [f.to_json() for f in self.table.faults()]}
        if not path.startswith(CONTROL_PREFIX + "/"):
            return 404, {"error": f"no control resource {path!r}"}
        fault_id = path[len(CONTROL_PREFIX) + 1 :]
        if method == "DELETE":
            if self.table.delete(fault_id):
                return 204, None
            return 404, {"error": f"no fault {fault_id!r}"}
        if method != "PUT":
            return _not_allowed(method, path)
        try:
            doc = json.loads(request.body)
        except ValueError as exc:
            return 400, {"error": f"the body is not JSON: {exc}"}
        try:
            self.table.put(parse_fault(fault_id, doc))
        except FaultError as exc:
            return 400, {"error": str(exc)}
        return 204, None

    # ---------------------------------------------------------------- load

    async def _load(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        s = self.stats
        s.requests += 1
        decision = self.table.decide(request.path)
        for fault_id in decision.hits:
            key = (
                fault_id
                if fault_id in s.fault_hits or len(s.fault_hits) < _MAX_HIT_IDS
                else "_other"
            )
            s.fault_hits[key] = s.fault_hits.get(key, 0) + 1
        if decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)
        fault = decision.action
        kind = fault.kind if fault is not None else None
        keep = request.keep_alive
        body = b"" if request.method == "HEAD" else self._body
        if fault is None or kind == "http_latency":
            pass
        elif kind == "http_hang":
            if s.hangs_in_progress >= self.config.max_hangs:
                s.hang_overflows += 1
                return await self._json_reply(
                    writer, request, 503, {"error": "hang capacity reached"}
                )
            s.hangs_total += 1
            s.hangs_in_progress += 1
            try:
                await asyncio.sleep(fault.params["hang_s"])
            finally:
                s.hangs_in_progress -= 1
        elif kind in ("http_5xx", "http_429"):
            return await self._error_reply(request, writer, fault)
        elif kind == "http_reset":
            s.resets += 1
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            writer.transport.abort()
            return False
        elif kind == "http_truncated_body":
            full = body if len(body) >= 2 else json_body(64)
            cut = min(max(int(len(full) * fault.params["fraction"]), 1), len(full) - 1)
            writer.write(head(200, len(full), keep_alive=False) + full[:cut])
            await writer.drain()
            s.truncations += 1
            return False
        elif kind == "http_slow_body":
            return await self._slow_reply(request, writer, fault, body)
        await self._send(writer, head(200, len(body), keep_alive=keep) + body, 200)
        return keep

    async def _error_reply(
        self, request: Request, writer: asyncio.StreamWriter, fault: FaultSpec
    ) -> bool:
        if fault.kind == "http_429":
            status = 429
            extra = {"Retry-After": str(int(fault.params["retry_after_s"]))}
        else:
            status, extra = int(fault.params["status"]), {}
        body = _json({"error": "injected", "fault": fault.id, "status": status})
        keep = request.keep_alive
        await self._send(
            writer, head(status, len(body), keep_alive=keep, extra=extra) + body, status
        )
        return keep

    async def _slow_reply(
        self, request: Request, writer: asyncio.StreamWriter, fault: FaultSpec, body: bytes
    ) -> bool:
        chunks = int(fault.params["chunks"])
        if request.method != "HEAD" and len(body) < chunks:
            body = json_body(chunks)
        writer.write(head(200, len(body), keep_alive=request.keep_alive))
        await writer.drain()
        size = -(-len(body) // chunks)
        for start in range(0, max(len(body), 1), max(size, 1)):
            await asyncio.sleep(fault.params["chunk_delay_s"])
            writer.write(body[start : start + size])
            await writer.drain()
        self.stats.slow_bodies += 1
        key = "200"
        self.stats.by_status[key] = self.stats.by_status.get(key, 0) + 1
        return request.keep_alive


def _not_allowed(method: str, path: str) -> tuple[int, Any]:
    return 405, {"error": f"{method} is not allowed on {path}"}
