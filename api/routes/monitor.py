"""Real-time monitoring: per skill group figures as JSON for supervisors (admin), and the same
figures as Prometheus gauges at /metrics, with the API's request latencies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from api.deps import Services, ServicesDep, require
from api.routes import operation
from api.schemas import UNAUTHORIZED, MonitorPublic, SkillGroupMonitor, errors
from domain.types import Role
from store.models import utcnow
from store.monitor import FIGURES, day_start, read_skill_group_figures

router = APIRouter()

GAUGE_PREFIX = "switchboard_"


def read_figures(services: Services) -> MonitorPublic:
    """Every policy group's figures, now. The one source of /v1/monitor and the gauges."""
    now = utcnow()
    groups = [group.name for group in services.policy.current().skill_groups]
    figures = read_skill_group_figures(services.db, skill_groups=groups, now=now)
    return MonitorPublic(
        at=now,
        day_started_at=day_start(now),
        skill_groups=[SkillGroupMonitor(**asdict(group)) for group in figures],
    )


@router.get(
    "/v1/monitor",
    **operation("monitoring", "get_figures"),
    response_model=MonitorPublic,
    summary="Per skill group, now: waiting, agents, load; last 15 minutes: average wait and "
    "handling time; today: overflows, abandons, auto-closes, ratings",
    responses=errors({**UNAUTHORIZED, 403: "Admins only"}),
    dependencies=[require(Role.ADMIN)],
)
async def get_monitor(services: ServicesDep) -> MonitorPublic:
    return await run_in_threadpool(read_figures, services)


@router.get(
    "/metrics",
    **operation("monitoring", "get_metrics"),
    response_class=Response,
    summary="Prometheus metrics: the /v1/monitor figures as gauges by skill group, request "
    "latency histograms by method, route and status, process figures",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def get_metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _gauge(figure: str) -> GaugeMetricFamily:
    description = SkillGroupMonitor.model_fields[figure].description or figure.replace("_", " ")
    return GaugeMetricFamily(GAUGE_PREFIX + figure, description, labels=["skill_group"])


class MonitorGauges(Collector):
    """The /v1/monitor figures, read at scrape time (a figure that is null has no sample)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for figure in FIGURES:
            yield _gauge(figure)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        services: Services | None = getattr(self.app.state, "services", None)
        if services is None:  # before startup
            return
        groups = read_figures(services).skill_groups
        for figure in FIGURES:
            gauge = _gauge(figure)
            for group in groups:
                value = getattr(group, figure)
                if value is not None:
                    gauge.add_metric([group.skill_group], float(value))
            yield gauge
