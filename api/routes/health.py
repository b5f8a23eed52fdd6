"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool

from api.deps import ServicesDep
from api.routes import operation
from api.schemas import Health
from store.db import reachable

router = APIRouter()


@router.get(
    "/healthz",
    **operation("health", "check"),
    response_model=Health,
    summary="Is the API up, and can it reach its database and Temporal?",
    responses={503: {"model": Health, "description": "A dependency is unreachable"}},
)
async def healthz(services: ServicesDep, response: Response) -> Health:
    database = "ok" if await run_in_threadpool(reachable, services.db) else "unreachable"
    try:
        client = await services.temporal.client()
        temporal = "ok" if await client.service_client.check_health() else "unhealthy"
    except Exception:
        temporal = "unreachable"
    healthy = database == "ok" and temporal == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if healthy else "degraded", database=database, temporal=temporal)
