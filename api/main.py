"""The FastAPI application: `uvicorn api.main:app` (make run starts it for you)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, ProcessCollector
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client

from api.deps import TOO_DEEP, Services, principal_at_door, refuse_unstorable_input
from api.engine import answer_engine_errors
from api.limits import FrontDoor, Limits, answer_invalid_input
from api.observability import RequestContext, bind_path_ids, request_latency
from api.pages import demo_headers, mount_pages, widget_headers
from api.routes import (
    admin,
    agents,
    assist,
    attachments,
    codec,
    conversations,
    customers,
    demo,
    health,
    left_messages,
    me,
    monitor,
    stream_tickets,
    tickets,
    visitor_tokens,
)
from api.schemas import ENGINE_DOWN, errors, too_many_requests
from api.streams import EventHints, listen_for_events, watch_sqlite_log
from domain.policy import PolicySource
from logging_setup import configure_logging
from media.storage import open_object_store
from settings import Settings, get_settings
from store.db import Database, unavailable
from store.messages import SignalledMarks, mark_signalled
from store.webhooks import route_webhooks
from workflows.gateway import ConversationGateway, TicketGateway

log = logging.getLogger("switchboard.api")

# How often an API process writes which messages it told workflows of (store.SignalledMarks).
SIGNALLED_MARKS_INTERVAL = 0.5


async def write_signalled_marks(db: Database, marks: SignalledMarks) -> None:
    """Write the batch every SIGNALLED_MARKS_INTERVAL, and what is left when the app stops."""
    try:
        while True:
            await asyncio.sleep(SIGNALLED_MARKS_INTERVAL)
            await _write_marks(db, marks)
    finally:
        await _write_marks(db, marks)


async def _write_marks(db: Database, marks: SignalledMarks) -> None:
    taken = marks.take()
    try:
        await asyncio.to_thread(mark_signalled, db, taken)
    except sa.exc.SQLAlchemyError as exc:
        marks.put_back(taken)  # the next batch tries again; the reconciler covers a crash
        log.warning("could not record told messages: %s", type(exc).__name__)


def create_app(settings: Settings | None = None, *, temporal: Client | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        db.create_schema()
        hints = EventHints()
        policy = PolicySource(settings.policy)
        conversations = ConversationGateway(temporal, settings=settings, policy=policy.current)
        route_webhooks(db, policy.current)  # the events it writes go into the outbox too
        app.state.services = Services(
            settings=settings,
            db=db,
            policy=policy,
            temporal=conversations,
            hints=hints,
            limits=Limits.from_settings(
                settings, max_upload_bytes=lambda: policy.current().attachments.largest_bytes
            ),
            signalled=SignalledMarks(),
            objects=open_object_store(settings),
            tickets=TicketGateway(conversations, task_queue=settings.task_queue),
        )
        # Other processes' events wake our streams: LISTEN/NOTIFY on PostgreSQL, a look at
        # the log's newest event id every LOG_WATCH_INTERVAL on SQLite (besides, every stream
        # re-reads the log every stream_poll_interval_seconds).
        listener = asyncio.create_task(
            watch_sqlite_log(db, hints)
            if db.is_sqlite
            else listen_for_events(settings.database_url, hints)
        )
        marks = asyncio.create_task(write_signalled_marks(db, app.state.services.signalled))
        stop_metrics = monitor.serve_metrics(app.state.metrics, settings.metrics_address)
        yield
        await asyncio.to_thread(stop_metrics)
        listener.cancel()
        marks.cancel()
        await asyncio.gather(marks, return_exceptions=True)
        db.dispose()

    # /docs and /redoc load their scripts from the API (the package's copies), never a CDN.
    app = FastAPIOffline(
        title="Switchboard",
        version="0.1.0",
        summary="Customer-service conversations as durable Temporal workflows",
        lifespan=lifespan,
        dependencies=[Depends(bind_path_ids), Depends(refuse_unstorable_input)],
        # What any operation may answer: these come from the middleware and app-wide handlers.
        responses={
            **errors(
                {
                    413: f"Request body over {settings.max_body_bytes} bytes",
                    422: "Invalid input: a body or parameter that does not match this document, "
                    "text with NUL (U+0000) or a lone surrogate, or a body nested too deeply",
                    **ENGINE_DOWN,
                }
            ),
            **too_many_requests("Too many requests a minute from your address or your token"),
        },
    )
    # Per app, not the process-wide default: each app (tests make many) counts its own.
    metrics = CollectorRegistry()
    metrics.register(monitor.MonitorGauges(app))
    ProcessCollector(registry=metrics)
    app.state.metrics = metrics

    def limits() -> Limits | None:
        services: Services | None = getattr(app.state, "services", None)
        return None if services is None else services.limits

    app.add_middleware(
        FrontDoor,
        limits=limits,
        authenticate=principal_at_door,
        open_paths=frozenset({demo.DEMO_CONVERSATIONS}),
    )
    if settings.cors_origins:  # outside the door: a browser may read its 401, 413 and 429 too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,  # bearer tokens, never cookies
            allow_methods=["GET", "POST", "PUT"],
            # X-Namespace: the Temporal UI's, calling the codec endpoint (api/routes/codec.py).
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Last-Event-ID",
                "X-Request-ID",
                "X-Namespace",
            ],
            expose_headers=["Retry-After", "X-Request-ID", "WWW-Authenticate"],
            max_age=600,
        )
    app.add_middleware(RequestContext, latency=request_latency(metrics))  # outermost
    answer_engine_errors(app)
    answer_invalid_input(app)

    # Every way of not reaching the database (a broken connection is an InterfaceError or an
    # invalidated DBAPIError, not only an OperationalError; a drained pool a TimeoutError).
    @app.exception_handler(sa.exc.DBAPIError)
    @app.exception_handler(sa.exc.TimeoutError)
    async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        if not unavailable(exc):
            raise exc  # a statement the database refused: a bug, answered 500
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the database is unavailable; retry the same request"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def unreadable_body_is_invalid(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers 422 for a body that is not JSON but 400 for one it cannot even decode
        # (not UTF-8) or nest (too deep to parse): each is an invalid body, 422 as documented.
        if exc.status_code == status.HTTP_400_BAD_REQUEST and isinstance(exc.__cause__, ValueError):
            return JSONResponse(
                {"detail": "the body is not valid JSON (UTF-8)"},
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            )
        if exc.status_code == status.HTTP_400_BAD_REQUEST and isinstance(
            exc.__cause__, RecursionError
        ):
            return JSONResponse(
                {"detail": TOO_DEEP}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
            )
        return await http_exception_handler(request, exc)

    app.include_router(health.router)
    app.include_router(agents.router)
    app.include_router(conversations.router)
    app.include_router(attachments.router)
    app.include_router(left_messages.router)
    app.include_router(visitor_tokens.router)
    app.include_router(monitor.router)
    app.include_router(admin.router)
    app.include_router(customers.router)
    app.include_router(stream_tickets.router)
    app.include_router(assist.router)
    app.include_router(codec.router)
    app.include_router(me.router)
    app.include_router(tickets.router)
    # The agents' workbench and the supervisors' wallboard (static pages on the public API).
    mount_pages(app, "workbench", "wallboard")
    # The visitor's widget (its iframe may be framed by the app's sites) and the pages' shared
    # modules; outside production, the demo shop that embeds it, and its backend.
    mount_pages(app, "widget", "shared", headers=widget_headers(settings))
    if settings.env != "production":
        app.include_router(demo.router)
        mount_pages(app, "demo", headers=demo_headers())
    return app


app = create_app()
