"""The FastAPI application: `uvicorn api.main:app` (make run starts it for you)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, ProcessCollector
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.client import Client

from api.deps import Services, refuse_nul_characters
from api.observability import RequestContext, bind_path_ids, request_latency
from api.routes import admin, agents, conversations, health, left_messages, monitor
from api.streams import EventHints, listen_for_events
from api.temporal import TemporalGateway
from domain.policy import PolicySource
from logging_setup import configure_logging
from settings import Settings, get_settings
from store.db import Database

log = logging.getLogger("switchboard.api")

MAX_BODY_BYTES = 64 * 1024


class BodySizeLimit:
    """413 for a request body over the limit, before anything reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                response = JSONResponse(
                    {"detail": f"request body over {self.max_bytes} bytes"},
                    status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, *, temporal: Client | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        db.create_schema()
        hints = EventHints()
        app.state.services = Services(
            settings=settings,
            db=db,
            policy=PolicySource(settings.policy),
            temporal=TemporalGateway(settings, temporal),
            hints=hints,
        )
        # Other processes' events wake our streams: LISTEN/NOTIFY on PostgreSQL; on SQLite
        # streams re-read the log every stream_poll_interval_seconds.
        listener = (
            None
            if db.is_sqlite
            else asyncio.create_task(listen_for_events(settings.database_url, hints))
        )
        yield
        if listener is not None:
            listener.cancel()
        db.dispose()

    app = FastAPI(
        title="Switchboard",
        version="0.1.0",
        summary="Customer-service conversations as durable Temporal workflows",
        lifespan=lifespan,
        dependencies=[Depends(bind_path_ids), Depends(refuse_nul_characters)],
    )
    # Per app, not the process-wide default: each app (tests make many) counts its own.
    metrics = CollectorRegistry()
    metrics.register(monitor.MonitorGauges(app))
    ProcessCollector(registry=metrics)
    app.state.metrics = metrics
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(RequestContext, latency=request_latency(metrics))  # outermost

    @app.exception_handler(sa.exc.OperationalError)
    async def database_unavailable(_request: Request, exc: sa.exc.OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the database is unavailable; retry the same request"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )

    app.include_router(health.router)
    app.include_router(agents.router)
    app.include_router(conversations.router)
    app.include_router(left_messages.router)
    app.include_router(monitor.router)
    app.include_router(admin.router)
    return app


app = create_app()
