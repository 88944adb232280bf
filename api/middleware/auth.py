"""Optional bearer-token auth: on everything but health, when a token is configured.

- HTTP: ``Authorization: Bearer <token>`` (scheme case-insensitive), else 401 with the
  uniform error body and ``WWW-Authenticate: Bearer realm="egresswatch"`` (plus
  ``error="invalid_token"`` when a wrong token was sent).
- WebSocket (browsers cannot set headers on a WebSocket): the header, or a ``token`` query
  parameter. A refused handshake gets the 401 as a denial response where the server
  supports it, else a close with code 1008.
- Public: paths under ``/health/`` and ``/v1/health/`` (probes of an orchestrator carry no
  token).
- The comparison is constant-time (``hmac.compare_digest`` on the UTF-8 bytes).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import reject

__all__ = ["PUBLIC_PREFIXES", "BearerAuthMiddleware"]

PUBLIC_PREFIXES: Final = ("/health/", "/v1/health/")
_REALM: Final = 'Bearer realm="egresswatch"'


class BearerAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        public_prefixes: Sequence[str] = PUBLIC_PREFIXES,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self.app = app
        self._token = token.encode()
        self._public = tuple(public_prefixes)
        self.failures_total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(self._public):
            await self.app(scope, receive, send)
            return
        offered = self._offered(scope)
        if offered is not None and hmac.compare_digest(offered.encode(), self._token):
            await self.app(scope, receive, send)
            return
        self.failures_total += 1
        if offered is None:
            challenge, message = _REALM, "a bearer token is required"
        else:
            challenge, message = f'{_REALM}, error="invalid_token"', "invalid bearer token"
        await reject(
            scope,
            receive,
            send,
            401,
            "unauthorized",
            message,
            headers={"WWW-Authenticate": challenge},
        )

    @staticmethod
    def _offered(scope: Scope) -> str | None:
        header = Headers(scope=scope).get("authorization")
        if header is not None:
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            if scope["type"] == "http":
                return ""  # present but not a bearer token: an invalid one
        if scope["type"] == "websocket":
            query: bytes = scope.get("query_string", b"")
            for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if name == "token":
                    return str(value)
        return None
