"""The live routes the API factory mounts: the WebSocket, the dashboard page, its assets."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from api.live.hub import LiveHub
from api.live.ws import LiveEndpoint

__all__ = ["STATIC_DIR", "WS_PATH", "live_routes"]

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
WS_PATH: Final = "/v1/ws/events"
_NO_CACHE: Final = {"Cache-Control": "no-cache"}


def live_routes(
    hub: LiveHub,
    *,
    static_dir: Path = STATIC_DIR,
    ping_interval_s: float = 10.0,
    ping_timeout_s: float = 20.0,
    min_frame_interval_s: float = 0.05,
    allowed_origins: Collection[str] = (),
) -> list[BaseRoute]:
    """``/v1/ws/events`` (the live feed), ``/`` (the dashboard) and ``/static/...``."""
    endpoint = LiveEndpoint(
        hub,
        ping_interval_s=ping_interval_s,
        ping_timeout_s=ping_timeout_s,
        min_frame_interval_s=min_frame_interval_s,
        allowed_origins=allowed_origins,
    )
    page = static_dir / "dashboard.html"

    async def dashboard(request: Request) -> Response:
        return FileResponse(page, media_type="text/html; charset=utf-8", headers=_NO_CACHE)

    return [
        WebSocketRoute(WS_PATH, endpoint.handle, name="live_events"),
        Route("/", dashboard, name="dashboard"),
        Mount("/static", app=StaticFiles(directory=static_dir), name="static"),
    ]
