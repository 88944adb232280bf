"""Rate limiting per client: a token bucket each, in a bounded table (invariant I3).

- **Bucket**: ``burst`` tokens, refilled at ``rate_per_s``; a request takes one token, or is
  answered 429 with ``Retry-After`` (whole seconds until the next token, at least 1).
  Every request counts, health and WebSocket handshakes included (a refused handshake is a
  denial response where the server supports it, else a close with code 1013).
- **Client**: the peer address of the connection. ``X-Forwarded-For`` is ignored unless the
  peer is one of ``trusted_proxies``; then the client is the right-most address of the
  header that is not itself a trusted proxy (the left part is written by the caller and
  proves nothing).
- **Bounds**: at most ``max_clients`` buckets, least recently used first out. A new client
  may evict the least recently used bucket only if that bucket is full again (forgetting it
  loses nothing: a new bucket starts full). Otherwise the table is full of clients active
  within the last ``burst / rate_per_s`` seconds, and the new client is charged to one shared
  ``overflow`` bucket (counted) until room frees up: a flood of addresses cannot grow
  memory, nor reset the buckets of clients that are busy.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import reject

__all__ = ["RateLimitMiddleware", "TokenBuckets", "client_of"]

OVERFLOW: Final = "_overflow"


class TokenBuckets:
    """Token buckets per client key, bounded by ``max_clients``; time from ``clock``."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate_per_s > 0 or not math.isfinite(rate_per_s):
            raise ValueError(f"rate_per_s must be > 0 and finite, got {rate_per_s!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        # client -> [tokens, updated_at]; most recently used last.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self._overflow: list[float] | None = None
        self.limited_total = 0
        self.evicted_total = 0
        self.overflow_total = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Take one token: ``0.0`` if granted, else the seconds until one is available."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is not None:
            self._buckets.move_to_end(client)
        elif len(self._buckets) < self.max_clients or self._evict_idle(now):
            bucket = self._buckets[client] = [float(self.burst), now]
        else:
            self.overflow_total += 1
            if self._overflow is None:
                self._overflow = [float(self.burst), now]
            bucket = self._overflow
        tokens = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate_per_s)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        self.limited_total += 1
        return (1.0 - tokens) / self.rate_per_s

    def _evict_idle(self, now: float) -> bool:
        client, (tokens, updated_at) = next(iter(self._buckets.items()))
        if tokens + max(0.0, now - updated_at) * self.rate_per_s < self.burst:
            return False
        del self._buckets[client]
        self.evicted_total += 1
        return True


def client_of(scope: Scope, trusted_proxies: frozenset[str] = frozenset()) -> str:
    """The client address of a request (see the module docstring for proxies)."""
    peer = scope.get("client")
    host = peer[0] if peer else "unknown"
    if host not in trusted_proxies:
        return host
    forwarded = Headers(scope=scope).getlist("x-forwarded-for")
    hops = [hop.strip() for value in forwarded for hop in value.split(",")]
    for hop in reversed(hops):
        if hop and hop not in trusted_proxies:
            return hop[:64]  # an address; anything longer is garbage, bounded anyway
    return host


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        buckets: TokenBuckets,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.buckets = buckets
        self._trusted = frozenset(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(client_of(scope, self._trusted))
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        await reject(
            scope,
            receive,
            send,
            429,
            "rate_limited",
            f"too many requests from this client; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
