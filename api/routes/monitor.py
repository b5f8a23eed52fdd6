"""Real-time monitoring: per skill group figures as JSON for staff (each their own groups'), and
the same figures as Prometheus gauges with the API's request latencies, served at /metrics on an
address of their own (SWITCHBOARD_METRICS_ADDRESS, loopback by default), never on the API's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentPrincipal, Services, ServicesDep, groups_of_staff, require
from api.routes import operation
from api.schemas import (
    UNAUTHORIZED,
    BotMonitor,
    MonitorPublic,
    SkillGroupMonitor,
    TemporalUiPublic,
    WebhookMonitor,
    errors,
)
from domain.types import Role
from store.bot import figures as bot_figures
from store.models import utcnow
from store.monitor import FIGURES, day_start, read_skill_group_figures
from store.tickets import ticket_figures
from store.webhooks import delivery_counts

router = APIRouter()
log = logging.getLogger("switchboard.api")

GAUGE_PREFIX = "switchboard_"
# Every figure of a group: its conversations' (store/monitor.py) and its tickets'.
GROUP_FIGURES = (*FIGURES, "tickets_open", "tickets_breached")
# The bot's gauges, as the registry describes them.
_NO_BOT = BotMonitor(
    conversations=0,
    resolved_today=0,
    handoffs_today={},
    answers_today=0,
    misses_today=0,
    entry_hits_today={},
)


def read_figures(services: Services, only: frozenset[str] | None = None) -> MonitorPublic:
    """Every policy group's figures (or those of `only`), now. The one source of /v1/monitor
    and the gauges."""
    now = utcnow()
    groups = [
        group.name
        for group in services.policy.current().skill_groups
        if only is None or group.name in only
    ]
    figures = read_skill_group_figures(services.db, skill_groups=groups, now=now)
    tickets = ticket_figures(services.db, skill_groups=groups)
    return MonitorPublic(
        at=now,
        day_started_at=day_start(now),
        skill_groups=[
            SkillGroupMonitor(
                **asdict(group),
                tickets_open=tickets.get(group.skill_group, (0, 0))[0],
                tickets_breached=tickets.get(group.skill_group, (0, 0))[1],
            )
            for group in figures
        ],
    )


def read_bot_figures(services: Services) -> BotMonitor:
    """The bot's figures: now, and since the start of today (UTC)."""
    found = bot_figures(services.db, since=day_start(utcnow()))
    return BotMonitor(
        conversations=found.with_bot,
        resolved_today=found.resolved,
        handoffs_today=found.handoffs,
        answers_today=found.answers,
        misses_today=found.misses,
        entry_hits_today=found.entry_hits,
    )


@router.get(
    "/v1/monitor",
    **operation("monitoring", "get_figures"),
    response_model=MonitorPublic,
    summary="Per skill group, now: waiting, agents, load; last 15 minutes: average wait and "
    "handling time; today: overflows, abandons, auto-closes, ratings",
    description="An agent sees their own groups (the workbench's queue figures), a supervisor "
    "the groups they oversee, an admin every group. Only supervisors and admins get the "
    "Temporal UI's address.",
    responses=errors({**UNAUTHORIZED, 403: "Staff only"}),
    dependencies=[require(Role.AGENT, Role.SUPERVISOR, Role.ADMIN)],
)
async def get_monitor(services: ServicesDep, principal: CurrentPrincipal) -> MonitorPublic:
    only = await run_in_threadpool(groups_of_staff, services.db, principal)
    figures = await run_in_threadpool(read_figures, services, only)
    settings = services.settings
    if principal.role != Role.AGENT:
        figures.bot = await run_in_threadpool(read_bot_figures, services)
    if principal.role == Role.ADMIN:
        figures.webhooks = WebhookMonitor(**await run_in_threadpool(delivery_counts, services.db))
    if settings.temporal_ui_url and principal.role != Role.AGENT:
        figures.temporal_ui = TemporalUiPublic(
            url=settings.temporal_ui_url.rstrip("/"), namespace=settings.temporal_namespace
        )
    return figures


def serve_metrics(registry: CollectorRegistry, address: str) -> Callable[[], None]:
    """Serve `registry` at http://<address>/metrics in a thread of its own ("" serves nothing);
    answers the function that stops it. An address in use is logged, and the API runs on."""
    if not address:
        return lambda: None
    host, _, port = address.rpartition(":")
    try:
        server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    except OSError as exc:
        log.warning("no API metrics: %s (set SWITCHBOARD_METRICS_ADDRESS)", exc)
        return lambda: None
    log.info("API metrics at http://%s/metrics", address)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


def _gauge(figure: str) -> GaugeMetricFamily:
    description = SkillGroupMonitor.model_fields[figure].description or figure.replace("_", " ")
    return GaugeMetricFamily(GAUGE_PREFIX + figure, description, labels=["skill_group"])


class MonitorGauges(Collector):
    """The /v1/monitor figures, read at scrape time (a figure that is null has no sample)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for figure in GROUP_FIGURES:
            yield _gauge(figure)
        yield from _bot_gauges(_NO_BOT)
        yield _webhook_gauge({})

    def collect(self) -> Iterator[GaugeMetricFamily]:
        services: Services | None = getattr(self.app.state, "services", None)
        if services is None:  # before startup
            return
        groups = read_figures(services).skill_groups
        for figure in GROUP_FIGURES:
            gauge = _gauge(figure)
            for group in groups:
                value = getattr(group, figure)
                if value is not None:
                    gauge.add_metric([group.skill_group], float(value))
            yield gauge
        yield from _bot_gauges(read_bot_figures(services))
        yield _webhook_gauge(delivery_counts(services.db))


def _webhook_gauge(counts: dict[str, int]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(
        f"{GAUGE_PREFIX}webhook_deliveries",
        "Webhook deliveries pending (owed) and failed (given up)",
        labels=["status"],
    )
    for status, count in counts.items():
        gauge.add_metric([status], float(count))
    return gauge


def _bot_gauges(figures: BotMonitor) -> Iterator[GaugeMetricFamily]:
    for name, field in BotMonitor.model_fields.items():
        value = getattr(figures, name)
        label = {"handoffs_today": "reason", "entry_hits_today": "entry"}.get(name)
        gauge = GaugeMetricFamily(
            f"{GAUGE_PREFIX}bot_{name}",
            field.description or name,
            labels=[label] if label else None,
        )
        if label:
            for key, count in value.items():
                gauge.add_metric([key], float(count))
        else:
            gauge.add_metric([], float(value))
        yield gauge
