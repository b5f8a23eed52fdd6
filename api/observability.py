"""Per-request context: a request id, log context, one access line and a latency histogram.

The request id comes from the caller's `X-Request-ID` (when it is a sensible one) or is made
here, and goes back in the response's `X-Request-ID`. It, and the ids in the path (conversation,
agent) once the route is known, are bound with structlog's contextvars, so every line the
request logs carries them. A customer's id never is: the access line redacts it from the path.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from fastapi import Request
from prometheus_client import CollectorRegistry, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_ACCEPTED_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Path parameters worth having on every log line of a request (never a customer's id).
PATH_IDS = ("conversation_id", "agent_id", "ticket_id")
# A path segment that is a customer's id (/v1/customers/{customer_id}/…), routed or not.
_CUSTOMER_ID = re.compile(r"(?<=/customers/)[^/]+", re.IGNORECASE)
# A credential in a path (the Temporal UI's codec ticket, api/routes/codec.py) is never logged.
_TICKET_IN_PATH = re.compile(r"(?<=^/v1/codec/tickets/)[^/]+")
UNMATCHED_ROUTE = "unmatched"

log = structlog.stdlib.get_logger("switchboard.api.access")


def request_latency(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "switchboard_http_request_duration_seconds",
        "Time to answer an API request, by method, route template and status",
        ["method", "route", "status"],
        registry=registry,
    )


async def bind_path_ids(request: Request) -> None:
    """An app-wide dependency: routing is done, so the path's ids are known; bind them for the
    rest of the request (RequestContext unbinds them when it ends)."""
    structlog.contextvars.bind_contextvars(
        **{key: str(request.path_params[key]) for key in PATH_IDS if key in request.path_params}
    )


def _route_template(scope: Scope) -> str:
    """What routing matched: the path template, e.g. /v1/conversations/{conversation_id}."""
    route = scope.get("route")
    if route is None and "endpoint" in scope:  # plain Starlette routes (the docs) set no route
        routes = getattr(scope.get("app"), "routes", [])
        route = next((r for r in routes if getattr(r, "endpoint", None) == scope["endpoint"]), None)
    return getattr(route, "path", None) or UNMATCHED_ROUTE


def loggable_path(path: str) -> str:
    """The path as the access line shows it: customer ids (customer data) and codec tickets
    (credentials) replaced. (The query, where stream tickets travel, is never logged: ASGI
    keeps it out of the path.)"""
    return _TICKET_IN_PATH.sub("{ticket}", _CUSTOMER_ID.sub("{customer_id}", path))


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _ACCEPTED_REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContext:
    """Outermost middleware: binds the request's log context, echoes its request id, logs one
    line when it ends and observes its duration in `latency` by route template (not by path,
    whose ids would make a series per conversation)."""

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        status = 500  # unless the app starts a response

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        # Ellipsis is structlog's "unbound": the path ids start unbound and end so.
        tokens = structlog.contextvars.bind_contextvars(
            request_id=request_id, **dict.fromkeys(PATH_IDS, ...)
        )
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            duration = time.perf_counter() - started
            route = _route_template(scope)
            path_params = scope.get("path_params", {})
            ids = {key: str(path_params[key]) for key in PATH_IDS if key in path_params}
            self.latency.labels(method=scope["method"], route=route, status=str(status)).observe(
                duration
            )
            log.info(
                "request",
                method=scope["method"],
                path=loggable_path(scope["path"]),
                route=route,
                status=status,
                duration_ms=round(duration * 1000, 1),
                **ids,
            )
            structlog.contextvars.reset_contextvars(**tokens)
