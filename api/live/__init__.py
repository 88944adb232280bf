"""Live view: events and alerts of every partition pushed to WebSocket clients, and the
dashboard page that shows them. ``docs/live.md`` holds the protocol."""

from api.live.feed import KafkaLiveFeed
from api.live.hub import HubFull, LiveClient, LiveHub
from api.live.protocol import LiveFilter, LiveMessage
from api.live.routes import live_routes

__all__ = [
    "HubFull",
    "KafkaLiveFeed",
    "LiveClient",
    "LiveFilter",
    "LiveHub",
    "LiveMessage",
    "live_routes",
]
