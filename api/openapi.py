"""The versioned contract: the OpenAPI 3.1 document served at ``GET /v1/openapi.json``.

Built here, in code, from the same constants the handlers use (views, methods, limits), so
the two cannot drift; ``tests/api/test_openapi.py`` checks it against ``WindowStats`` and
schemathesis checks every response against it. docs/api.md is its prose twin.

Versioning: the ``/v1`` paths and these schemas change only by adding optional fields or
endpoints (clients must ignore unknown fields); anything else is ``/v2``. ``info.version``
follows semver for the document itself.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.routes import METHODS
from api.routes.alerts import STATES
from api.routes.history import DEFAULT_KEYS, DEFAULT_MINUTES, MAX_KEYS, MAX_MINUTES
from api.routes.network import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET
from tables.windows import BUCKET_S, VIEWS

__all__ = ["API_VERSION", "openapi_document", "routes"]

API_VERSION: Final = "1.1.0"
_HEX32: Final = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
_COUNT: Final = {"type": "integer", "minimum": 0}
_RATIO: Final = {"type": "number", "minimum": 0, "maximum": 1}
_MS_OR_NULL: Final = {"type": ["number", "null"], "minimum": 0}
_BREAKER_STATES: Final = ["closed", "open", "half_open"]
_EPOCH: Final = {"type": "number", "minimum": 0, "description": "epoch s"}
_NUMBER_OR_NULL: Final = {"type": ["number", "null"]}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _obj(properties: dict[str, Any], *, extra: bool = False, **more: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": extra,
        **more,
    }


def _json(schema: dict[str, Any], description: str, **more: Any) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "x-trace-id": _ref("headers", "TraceId"),
            "traceparent": _ref("headers", "TraceParent"),
        },
        "content": {"application/json": {"schema": schema}},
        **more,
    }


def _schemas() -> dict[str, Any]:
    window_stats = _obj(
        {
            "service": {"type": "string"},
            "route": {"type": "string"},
            "method": {"type": "string"},
            "view": {"type": "string", "enum": list(VIEWS)},
            "start": {"type": "integer", "description": "epoch s, first bucket's start"},
            "end": {"type": "integer", "description": "epoch s, last bucket's end (exclusive)"},
            "requests": _COUNT,
            "rate_per_s": {"type": "number", "minimum": 0, "description": "requests / window"},
            "errors": _COUNT,
            "error_rate": _RATIO,
            "timeouts": _COUNT,
            "timeout_rate": _RATIO,
            "retries": _COUNT,
            "retry_rate": _RATIO,
            "cancelled": _COUNT,
            "breaker_open": _COUNT,
            "late_events": _COUNT,
            "bytes_sent": _COUNT,
            "bytes_received": _COUNT,
            "p50_ms": _MS_OR_NULL,
            "p95_ms": _MS_OR_NULL,
            "p99_ms": _MS_OR_NULL,
            "max_pool_wait_ms": _MS_OR_NULL,
            "status_classes": {"type": "object", "additionalProperties": _COUNT},
            "error_classes": {"type": "object", "additionalProperties": _COUNT},
            "example_trace_ids": {"type": "array", "items": _HEX32},
        },
        description="One key's view (tables.query.WindowStats). Rates are per second over "
        "the window width; quantiles are null without latency data.",
    )
    transition = _obj(
        {
            "from": {"type": "string", "enum": _BREAKER_STATES},
            "to": {"type": "string", "enum": _BREAKER_STATES},
            "at": {"type": "number", "description": "epoch s"},
        }
    )
    upstream = _obj(
        {
            "service": {"type": "string"},
            "upstream": {"type": "string", "description": "host:port"},
            "breaker_state": {
                "type": ["string", "null"],
                "enum": [*_BREAKER_STATES, None],
                "description": "as last reported by the probes; null when none reported one",
            },
            "failure_rate": _RATIO,
            "slow_call_rate": _RATIO,
            "calls": _COUNT,
            "last_transitions": {"type": "array", "items": _ref("schemas", "Transition")},
            "stuck_half_open": {"type": "boolean"},
            "retries": _COUNT,
            "retry_rate": _RATIO,
            "timeouts": _COUNT,
            "timeout_rate": _RATIO,
            "breaker_open_rejections": _COUNT,
        },
        extra=True,
    )
    upstream["properties"].update(  # optional: present when the data source has them
        {
            "window": {"type": "string", "enum": list(VIEWS)},
            "state_seen_at": {"type": ["number", "null"], "description": "epoch s"},
            "half_open_since": {"type": ["number", "null"], "description": "epoch s"},
        }
    )
    error = _obj(
        {
            "error": _obj(
                {
                    "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                    "message": {"type": "string"},
                    "trace_id": _HEX32,
                }
            )
        },
        description="The one error body of every 4xx/5xx answer.",
    )
    pipeline = {
        "type": "object",
        "description": "This worker's pipeline figures (records, dead letters, cells, ...).",
        "additionalProperties": True,
    }
    return {
        "Error": error,
        "Live": _obj({"status": {"const": "live"}}),
        "Pipeline": pipeline,
        "Ready": _obj(
            {
                "status": {"const": "ready"},
                "reasons": {"type": "array", "maxItems": 0},
                "pipeline": _ref("schemas", "Pipeline"),
            }
        ),
        "NotReady": _obj(
            {
                "status": {"const": "not_ready"},
                "reasons": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "pipeline": _ref("schemas", "Pipeline"),
                "error": error["properties"]["error"],
            }
        ),
        "WindowStats": window_stats,
        "NetworkPage": _obj(
            {
                "window": {"type": "string", "enum": list(VIEWS)},
                "stream_time": {
                    "type": ["integer", "null"],
                    "description": "end of the latest bucket seen (epoch s); null before data",
                },
                "total": {**_COUNT, "description": "keys matching the filters, all pages"},
                "offset": _COUNT,
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                "items": {"type": "array", "items": _ref("schemas", "WindowStats")},
            }
        ),
        **_history_schemas(),
        **_alert_schemas(),
        "Transition": transition,
        "UpstreamState": upstream,
        "ResilienceState": _obj(
            {
                "upstreams": {"type": "array", "items": _ref("schemas", "UpstreamState")},
                "pipeline": {
                    "type": "object",
                    "description": "The pipeline's own protections; members appear as "
                    "they are built (sink breaker and spool, emitter buffer).",
                    "properties": {
                        "sink": {"type": ["object", "null"]},
                        "emitter": {},
                    },
                    "additionalProperties": True,
                },
            },
            extra=True,
        ),
    }


def _history_schemas() -> dict[str, Any]:
    point = _obj(
        {
            "end": {"type": "integer", "description": "epoch s, end of the view (exclusive)"},
            "requests": _COUNT,
            "rate_per_s": {"type": "number", "minimum": 0},
            "errors": _COUNT,
            "error_rate": _RATIO,
            "timeouts": _COUNT,
            "p50_ms": _MS_OR_NULL,
            "p95_ms": _MS_OR_NULL,
            "p99_ms": _MS_OR_NULL,
        },
        description="The window view ending at one bucket (the fields of WindowStats a "
        "chart needs).",
    )
    series = _obj(
        {
            "service": {"type": "string"},
            "method": {"type": "string"},
            "route": {"type": "string"},
            "points": {
                "type": "array",
                "items": _ref("schemas", "HistoryPoint"),
                "description": "oldest first; buckets without requests are left out",
            },
        }
    )
    page = _obj(
        {
            "window": {"type": "string", "enum": list(VIEWS)},
            "minutes": {"type": "integer", "minimum": 1, "maximum": MAX_MINUTES},
            "step_s": {"const": BUCKET_S},
            "stream_time": {
                "type": ["integer", "null"],
                "description": "end of the latest bucket seen (epoch s); null before data",
            },
            "total": {**_COUNT, "description": "keys matching the filters"},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_KEYS},
            "series": {
                "type": "array",
                "maxItems": MAX_KEYS,
                "items": _ref("schemas", "HistorySeries"),
            },
        }
    )
    return {"HistoryPoint": point, "HistorySeries": series, "HistoryPage": page}


def _alert_schemas() -> dict[str, Any]:
    """An alert record v1 (tables.alerting.AlertRecord, docs/alerts.md) plus its state."""
    name = {"type": "string", "minLength": 1, "maxLength": 256}
    item = _obj(
        {
            "schema_version": {"const": 1},
            "alert_id": _HEX32,
            "status": {"type": "string", "enum": ["firing", "resolved", "still_firing"]},
            "rule": name,
            "kind": {"type": "string", "enum": ["latency_p99", "error_rate", "timeout_rate"]},
            "severity": {"type": "string", "enum": ["page", "ticket"]},
            "service": name,
            "route": name,
            "method": name,
            "observed": _obj(
                {
                    "value": _NUMBER_OR_NULL,
                    "by_view": {"type": "object", "additionalProperties": {"type": "number"}},
                }
            ),
            "threshold": {"type": "number"},
            "objective": _NUMBER_OR_NULL,
            "burn_rate": _NUMBER_OR_NULL,
            "views": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            "started_at": _EPOCH,
            "fired_at": _EPOCH,
            "resolved_at": {"type": ["number", "null"], "minimum": 0},
            "evaluated_at": _EPOCH,
            "example_trace_ids": {"type": "array", "items": _HEX32},
            "trace_id": _HEX32,
            "request_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "message": {"type": "string"},
            "state": {"type": "string", "enum": list(STATES)},
        },
        description="The latest record of one alert episode, and its state: firing (its "
        "last record was firing or still_firing) or resolved.",
    )
    log = {
        "type": "object",
        "description": "The worker's alert log: held episodes against their bound and the "
        "counters (dropped_total: pushed out when full; expired_total: resolved longer ago "
        "than the retention).",
        "required": ["held", "capacity", "dropped_total"],
        "properties": {"held": _COUNT, "capacity": _COUNT, "dropped_total": _COUNT},
        "additionalProperties": _COUNT,
    }
    page = _obj(
        {
            "total": _COUNT,
            "firing": _COUNT,
            "resolved": _COUNT,
            "items": {"type": "array", "items": _ref("schemas", "AlertItem")},
            "log": log,
        }
    )
    return {"AlertItem": item, "AlertsPage": page}


def _error_response(description: str, **headers: Any) -> dict[str, Any]:
    response = _json(_ref("schemas", "Error"), description)
    response["headers"].update(headers)
    return response


def _responses() -> dict[str, Any]:
    required_int = {"required": True, "schema": {"type": "integer", "minimum": 1}}
    return {
        "Unauthorized": _error_response(
            "No valid bearer token (only when the server has one configured).",
            **{"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
        ),
        "InvalidParameter": _error_response(
            "A query parameter is unknown, repeated or out of its range."
        ),
        "RateLimited": _error_response(
            "This client's token bucket is empty.",
            **{"Retry-After": {**required_int, "description": "seconds"}},
        ),
        "InternalError": _error_response("An unexpected error (logged with the trace id)."),
        "Timeout": _error_response("The request exceeded the server-side timeout."),
    }


def _operation(
    op_id: str,
    summary: str,
    ok: dict[str, Any],
    *,
    tag: str,
    public: bool = False,
    parameters: list[dict[str, Any]] | None = None,
    more: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, **(more or {})}
    if parameters:
        responses["422"] = _ref("responses", "InvalidParameter")
    if not public:
        responses["401"] = _ref("responses", "Unauthorized")
    responses["429"] = _ref("responses", "RateLimited")
    responses["500"] = _ref("responses", "InternalError")
    responses["504"] = _ref("responses", "Timeout")
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "responses": dict(sorted(responses.items())),
    }
    if parameters:
        op["parameters"] = parameters
    op["security"] = [] if public else [{"bearerAuth": []}, {}]
    return op


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def openapi_document() -> dict[str, Any]:
    service = _param(
        "service", {"type": "string", "minLength": 1, "maxLength": 64}, "Exact service name."
    )
    network_params = [
        _param(
            "window",
            {"type": "string", "enum": list(VIEWS), "default": "1m"},
            "Sliding window ending at the latest bucket.",
        ),
        service,
        _param(
            "route",
            {"type": "string", "minLength": 1, "maxLength": 256},
            "Exact route template, e.g. /orders/{id}.",
        ),
        _param("method", {"type": "string", "enum": list(METHODS)}, "HTTP method."),
        _param(
            "offset",
            {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
            "Keys to skip (keys are sorted).",
        ),
        _param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "Page size.",
        ),
    ]
    route = network_params[2]
    method = network_params[3]
    history_params = [
        network_params[0],
        service,
        route,
        method,
        _param(
            "minutes",
            {"type": "integer", "minimum": 1, "maximum": MAX_MINUTES, "default": DEFAULT_MINUTES},
            "How far back, in minutes of stream time.",
        ),
        _param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_KEYS, "default": DEFAULT_KEYS},
            "At most this many keys (sorted).",
        ),
    ]
    instant = {
        "anyOf": [
            {"type": "string", "pattern": "^[0-9]{1,11}(\\.[0-9]{1,6})?$"},
            {"type": "string", "format": "date-time"},
        ]
    }
    alert_params = [
        _param("service", {"type": "string", "minLength": 1, "maxLength": 256}, "Exact service."),
        _param(
            "route",
            {"type": "string", "minLength": 1, "maxLength": 256},
            "Exact route template; * for a service's rollup alerts.",
        ),
        _param("rule", {"type": "string", "minLength": 1, "maxLength": 64}, "Exact rule name."),
        _param("state", {"type": "string", "enum": list(STATES)}, "firing or resolved."),
        _param(
            "since",
            instant,
            "Alerts active at or after this time: epoch seconds or ISO 8601 (UTC without "
            "an offset).",
        ),
        _param("until", instant, "Alerts that fired before this time (same forms)."),
    ]
    text = {"type": "string"}
    metrics_ok = {
        "description": "Prometheus text format, or OpenMetrics if Accept asks for it.",
        "headers": {
            "x-trace-id": _ref("headers", "TraceId"),
            "traceparent": _ref("headers", "TraceParent"),
        },
        "content": {
            "text/plain": {"schema": text},
            "application/openmetrics-text": {"schema": text},
        },
    }
    paths = {
        "/v1/health/live": {
            "get": _operation(
                "health_live",
                "Liveness",
                _json(_ref("schemas", "Live"), "Alive."),
                tag="health",
                public=True,
            )
        },
        "/v1/health/ready": {
            "get": _operation(
                "health_ready",
                "Readiness: Kafka, partition assignment, table recovery, sink",
                _json(_ref("schemas", "Ready"), "Ready to serve."),
                tag="health",
                public=True,
                more={
                    "503": _json(
                        _ref("schemas", "NotReady"),
                        "Not ready; every reason is listed.",
                    ),
                },
            )
        },
        "/v1/metrics/network": {
            "get": _operation(
                "metrics_network",
                "Windowed p50/p95/p99, rates and counts per key (all workers' keys)",
                _json(_ref("schemas", "NetworkPage"), "One page of keys, sorted."),
                tag="metrics",
                parameters=network_params,
            )
        },
        "/v1/metrics/network/history": {
            "get": _operation(
                "metrics_network_history",
                "A key's window views over the last minutes, one point per 10 s bucket",
                _json(_ref("schemas", "HistoryPage"), "One series per key, sorted."),
                tag="metrics",
                parameters=history_params,
            )
        },
        "/v1/alerts": {
            "get": _operation(
                "alerts",
                "Firing and recently resolved SLO alerts (every worker's)",
                _json(_ref("schemas", "AlertsPage"), "Firing first, then most recent first."),
                tag="alerts",
                parameters=alert_params,
            )
        },
        "/v1/resilience/state": {
            "get": _operation(
                "resilience_state",
                "Breakers and retry budgets per (service, upstream); pipeline protections",
                _json(_ref("schemas", "ResilienceState"), "Current state."),
                tag="resilience",
                parameters=[service],
            )
        },
        "/v1/metrics": {
            "get": _operation("metrics_scrape", "Prometheus scrape", metrics_ok, tag="metrics")
        },
        "/v1/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                _json({"type": "object"}, "The OpenAPI document."),
                tag="meta",
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "egresswatch worker API",
            "version": API_VERSION,
            "description": "Windowed network metrics, SLO alerts, health and resilience "
            "state of an egresswatch worker. Every /v1 path also answers without the /v1 prefix "
            "(same body). See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in ("health", "metrics", "alerts", "resilience", "meta")],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "headers": {
                "TraceId": {
                    "description": "The request's trace id (continued from traceparent).",
                    "required": True,
                    "schema": _HEX32,
                },
                "TraceParent": {
                    "description": "W3C traceparent of this server span.",
                    "required": True,
                    "schema": {
                        "type": "string",
                        "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                    },
                },
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on all but /v1/health/* when the worker has "
                    "EGRESSWATCH_API_TOKEN set; WebSocket clients may pass ?token=.",
                }
            },
        },
    }


def routes() -> list[BaseRoute]:
    body = msgspec.json.encode(openapi_document())

    async def openapi(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return [Route("/v1/openapi.json", openapi, methods=["GET"], name="openapi")]
