"""egresswatch HTTP API: REST, Prometheus scrape, WebSocket and dashboard."""
