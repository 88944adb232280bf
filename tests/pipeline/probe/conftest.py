"""Real upstreams for the probe's tests: no mocks between the probe and a socket.

- ``upstream`` (session): a uvicorn server on 127.0.0.1 in a thread, with endpoints

  ======================  ==========================================================
  ``/ok``                 200 ``ok``
  ``/status/{code}``      that status, tiny body
  ``/slow?delay=s``       waits, then 200
  ``/stream?chunks=n&size=k&delay=s``  a chunked body, ``n`` chunks of ``k`` bytes
  ``/huge?size=n``        ``n`` bytes in 64 KiB chunks
  ``/echo``               JSON: method, path, query, headers and body length it got
  ``/flaky/{key}?fail=n`` 503 for the first ``n`` calls of ``key``, then 200
  ``/redirect?to=path``   302 to ``path``
  ======================  ==========================================================

- ``raw`` (session): plain TCP servers for what a well-behaved HTTP server cannot do:
  ``silent`` (accepts and reads, never answers: read timeouts), ``close_early`` (promises
  1000 bytes, sends 10 and closes: a broken body), ``garbage`` (answers with non-HTTP:
  protocol errors), ``blackhole`` (a listener whose accept queue is full and never drained,
  so new connections hang in SYN-SENT: real connect timeouts, all on 127.0.0.1) and
  ``refused`` (a port bound then closed: connection refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn

Scope = dict[str, Any]


class _App:
    def __init__(self) -> None:
        self.flaky: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path: str = scope["path"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        if path == "/ok":
            await _respond(send, 200, b"ok")
        elif path.startswith("/status/"):
            await _respond(send, int(path.rsplit("/", 1)[1]), b"status")
        elif path == "/slow":
            await asyncio.sleep(float(query.get("delay", "1")))
            await _respond(send, 200, b"slow")
        elif path == "/stream":
            await self._stream(send, query)
        elif path == "/huge":
            size = int(query.get("size", str(1 << 20)))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            chunk = b"h" * 65536
            while size > 0:
                part = chunk[:size]
                size -= len(part)
                await send({"type": "http.response.body", "body": part, "more_body": size > 0})
        elif path == "/echo":
            payload = {
                "method": scope["method"],
                "path": path,
                "query": scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "body_len": len(body),
            }
            await _respond(send, 200, json.dumps(payload).encode(), b"application/json")
        elif path == "/redirect":
            await send(
                {
                    "type": "http.response.start",
                    "status": 302,
                    "headers": [(b"location", query.get("to", "/ok").encode())],
                }
            )
            await send({"type": "http.response.body", "body": b""})
        elif path.startswith("/flaky/"):
            key = path.rsplit("/", 1)[1]
            seen = self.flaky.get(key, 0)
            self.flaky[key] = seen + 1
            if seen < int(query.get("fail", "1")):
                await _respond(send, 503, b"try again")
            else:
                await _respond(send, 200, b"recovered")
        else:
            await _respond(send, 404, b"not found")

    async def _stream(self, send: Any, query: dict[str, str]) -> None:
        chunks, size = int(query.get("chunks", "10")), int(query.get("size", "1000"))
        delay = float(query.get("delay", "0"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(chunks):
            if delay:
                await asyncio.sleep(delay)
            more = index < chunks - 1
            await send({"type": "http.response.body", "body": b"s" * size, "more_body": more})


async def _respond(send: Any, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Upstream:
    base: str
    port: int
    app: _App

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@contextlib.contextmanager
def _serve(
    scheme: str, keyfile: str | None = None, certfile: str | None = None
) -> Iterator[Upstream]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = _App()
    config = uvicorn.Config(
        app,
        log_level="error",
        lifespan="off",
        access_log=False,
        ssl_keyfile=keyfile,
        ssl_certfile=certfile,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield Upstream(f"{scheme}://127.0.0.1:{port}", port, app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    with _serve("http") as server:
        yield server


@dataclass
class TlsUpstream:
    server: Upstream
    ca_file: str


@pytest.fixture(scope="session")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsUpstream]:
    """The same app over TLS, with a self-signed certificate for 127.0.0.1 (openssl CLI)."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    with _serve("https", keyfile=str(key), certfile=str(cert)) as server:
        yield TlsUpstream(server, str(cert))


class _RawServer:
    """A TCP listener in a thread; ``behaviour`` runs per accepted connection."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                part = conn.recv(65536)
                if not part:
                    break
                data += part
            if self.behaviour == "silent":
                self.held.append(conn)  # never answer; closed at teardown
                return
            if self.behaviour == "close_early":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            elif self.behaviour == "garbage":
                conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        with contextlib.suppress(OSError):
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(timeout=5)


class _Blackhole:
    """A listener with a full accept queue: new connects hang until the client gives up."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port: int = self.sock.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self.fillers.append(filler)
        time.sleep(0.05)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.sock.close()


@dataclass
class Raw:
    silent: _RawServer
    close_early: _RawServer
    garbage: _RawServer
    blackhole: _Blackhole
    refused: str


@pytest.fixture(scope="session")
def raw() -> Iterator[Raw]:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    refused_port = probe.getsockname()[1]
    probe.close()
    servers = Raw(
        silent=_RawServer("silent"),
        close_early=_RawServer("close_early"),
        garbage=_RawServer("garbage"),
        blackhole=_Blackhole(),
        refused=f"http://127.0.0.1:{refused_port}",
    )
    yield servers
    servers.silent.close()
    servers.close_early.close()
    servers.garbage.close()
    servers.blackhole.close()
