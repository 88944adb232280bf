"""Just enough HTTP/1.1 for the fault upstream: read one request, build a response head.

:func:`read_request` reads the request line, the headers (the stream's ``limit`` bounds them:
more raises :class:`HttpError` 431) and a ``Content-Length`` body (at most
:data:`MAX_BODY_BYTES`, else 413). Chunked request bodies are refused (501): neither the load
nor the control client sends them. It returns None on a clean end of stream between requests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

__all__ = ["MAX_BODY_BYTES", "MAX_HEADER_BYTES", "HttpError", "Request", "head", "read_request"]

MAX_HEADER_BYTES: Final = 16 * 1024
MAX_BODY_BYTES: Final = 1024 * 1024
_MAX_HEADERS: Final = 100


class HttpError(Exception):
    """A request we refuse: answer ``status`` with ``message``, then close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    path: str
    """The target without its query string."""
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes
    keep_alive: bool


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError(400, "connection closed inside the request head") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError(431, f"request head larger than {MAX_HEADER_BYTES} bytes") from exc
    lines = raw.decode("latin-1").split("\r\n")
    while lines and not lines[0]:
        lines.pop(0)  # tolerated: empty lines before a request line (RFC 9112 2.2)
    if not lines:
        raise HttpError(400, "empty request head")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, f"bad request line {lines[0][:100]!r}")
    method, target, version = parts
    if not target.startswith("/"):
        raise HttpError(400, f"request target must be an absolute path, got {target[:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"bad header line {line[:100]!r}")
        headers[name.lower()] = value.strip()
    if len(headers) > _MAX_HEADERS:
        raise HttpError(431, f"more than {_MAX_HEADERS} headers")
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked request bodies are not supported; send Content-Length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise HttpError(400, f"bad Content-Length {length_text[:40]!r}")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise HttpError(400, "connection closed inside the request body") from exc
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        keep_alive = "keep-alive" in connection
    else:
        keep_alive = "close" not in connection
    path = target.partition("?")[0]
    return Request(method.upper(), target, path, headers, body, keep_alive)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def head(
    status: int,
    length: int,
    *,
    keep_alive: bool = True,
    content_type: str = "application/json",
    extra: dict[str, str] | None = None,
) -> bytes:
    """The status line and headers of a response whose body has ``length`` bytes."""
    lines = [f"HTTP/1.1 {status} {_reason(status)}", "Server: egresswatch-upstream"]
    if length or status not in (204, 304):
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {length}")
    if not keep_alive:
        lines.append("Connection: close")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
