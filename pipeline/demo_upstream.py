"""The demo's upstream: a small HTTP service that is sometimes slow and sometimes fails.

``python -m pipeline.demo_upstream PORT`` serves on 127.0.0.1:PORT.
"""

from __future__ import annotations

import asyncio
import random
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_rng = random.Random(7)  # noqa: S311 - demo faults, not security


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def resource(request: Request) -> Response:
    await asyncio.sleep(_rng.lognormvariate(-4.0, 0.6))  # ~20 ms median
    return JSONResponse({"path": request.url.path, "items": list(range(_rng.randint(1, 20)))})


async def flaky(request: Request) -> Response:
    await asyncio.sleep(0.005)
    if _rng.random() < 0.3:
        return JSONResponse({"error": "unavailable"}, status_code=503)
    return JSONResponse({"ok": True})


async def slow(request: Request) -> Response:
    # Now and then slower than the demo client's 0.5 s read timeout.
    await asyncio.sleep(_rng.choice([0.05, 0.1, 0.2, 0.3, 0.8]))
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/users/{id}", resource),
        Route("/orders/{id}/items", resource),
        Route("/search", resource),
        Route("/flaky", flaky),
        Route("/slow", slow),
    ]
)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8181
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
