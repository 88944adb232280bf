"""The campaign's upstream: an HTTP/1.1 server that answers slowly on purpose and fails on command.

The simulated services call it; every request that is not for the control API gets, after a
lognormal delay (``median_ms``, ``sigma``, seeded), a ``200`` with a JSON-ish body of
``body_bytes`` bytes, unless a fault acts on it (kinds and params in
:mod:`pipeline.campaign._upstream_faults`). It runs on raw asyncio streams, not a framework, so a
reset is a real TCP RST (``SO_LINGER`` 0), a truncated body a real short read, and a request
costs little CPU.

Control API (reserved paths the load never uses):

- ``PUT /_faults/{id}`` ``{"kind", "route": template|null, "params": {}}`` -> 204, 400 + error
- ``DELETE /_faults/{id}`` -> 204, 404 if unknown; ``GET /_faults`` -> ``{"faults": [...]}``
- ``GET /_stats`` -> :class:`UpstreamStats`; ``GET /health`` -> 200

Bounds, each counted in the stats: open connections (``max_connections``; one more gets 503
and a close, or a bare reset when 256 such refusals are already under way), hangs in progress
(``max_hangs``; one more is answered 503 at once), request head size (431), request body size
(413), idle keep-alive connections (closed after ``idle_timeout_s``). A hang outlives a caller
that gave up (the server does not watch for its close); ``max_hangs`` is what bounds them.

``python -m pipeline.campaign.upstream --host H --port P --seed N --median-ms 5 --sigma 0.5
--body-bytes 512`` prints ``UPSTREAM_READY host:port`` on stdout once listening and serves
until SIGTERM or SIGINT (exit 0). ``--port 0`` picks a free port and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import msgspec

from pipeline.campaign._upstream_control import (
    UpstreamControl,
    UpstreamControlError,
    UpstreamStats,
)
from pipeline.campaign._upstream_server import UpstreamConfig, UpstreamServer, json_body

__all__ = [
    "UpstreamConfig",
    "UpstreamControl",
    "UpstreamControlError",
    "UpstreamServer",
    "UpstreamStats",
    "json_body",
    "main",
    "serve",
]


async def serve(config: UpstreamConfig) -> UpstreamStats:
    """Serve until SIGTERM or SIGINT; print the ready line once listening; the final stats."""
    server = UpstreamServer(config)
    host, port = await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"UPSTREAM_READY {host}:{port}", flush=True)
    await stop.wait()
    await server.close()
    return server.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.campaign.upstream", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the delays and fault draws")
    parser.add_argument("--median-ms", type=float, default=5.0, help="normal delay's median")
    parser.add_argument("--sigma", type=float, default=0.5, help="normal delay's lognormal sigma")
    parser.add_argument("--body-bytes", type=int, default=512, help="size of a normal body")
    parser.add_argument("--max-connections", type=int, default=1024)
    parser.add_argument("--max-hangs", type=int, default=512)
    parser.add_argument("--idle-timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    for name in ("median_ms", "sigma", "body_bytes", "port"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("max_connections", "max_hangs", "idle_timeout_s"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    config = UpstreamConfig(**vars(args))
    try:
        stats = asyncio.run(serve(config))
    except OSError as exc:
        print(f"upstream: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"upstream: stopped; {msgspec.json.encode(stats).decode()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
