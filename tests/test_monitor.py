"""Real-time monitoring: the per skill group figures (store), /v1/monitor over the real API with
a real worker and the API's /metrics (served on its own address), and the worker's Temporal SDK
metrics."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.routes.monitor import GROUP_FIGURES, serve_metrics
from domain.policy import PolicySource
from domain.types import EventType
from media.storage import LocalStore
from store.db import Database
from store.events import append_event
from store.models import Agent, Assignment, Conversation
from store.monitor import SkillGroupFigures, skill_group_figures
from tests.support.api import ADMIN, APP, bearer, eventually
from tests.support.data import add_agent, enqueue_conversations, new_conversation
from tests.support.processes import free_port
from tests.support.system import System
from worker import build_worker, sdk_runtime

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 3, 10, tzinfo=UTC)


def _ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


# --- builders of a known situation ----------------------------------------------------------


def _agent(db: Database, agent_id: str, groups: list[str], *, status: str, cap: int, held: int):
    add_agent(db, agent_id, max_concurrent=cap, skill_groups=groups, status=status)
    with db.write() as session:
        session.execute(sa.update(Agent).where(col(Agent.id) == agent_id).values(active_count=held))


def _assignment(
    db: Database,
    group: str,
    *,
    enqueued: datetime,
    assigned: datetime,
    released: datetime | None = None,
    from_queue: bool = True,
) -> None:
    with db.write() as session:
        conversation = new_conversation(session)
        conversation.skill_group, conversation.state = group, "active"
        session.add(
            Assignment(
                conversation_id=conversation.id,
                agent_id="ben",
                skill_group=group,
                queue_ticket=1 if from_queue else None,  # None: a direct transfer
                enqueued_at=enqueued,
                assigned_at=assigned,
                released_at=released,
            )
        )


def _closed(db: Database, group: str, reason: str, at: datetime, rating: int | None = None) -> None:
    with db.write() as session:
        conversation = new_conversation(session)
        conversation.skill_group, conversation.state = group, "closed"
        conversation.open_customer_key = None
        conversation.close_reason, conversation.closed_at = reason, at
        conversation.rating_score = rating
        conversation.rating_status = "rated" if rating else "pending"
        if reason == "overflow":  # its hop into a left message, written with the close
            append_event(
                session,
                conversation_id=conversation.id,
                type=EventType.OVERFLOWED,
                data={"from": group, "to": "left_message", "hop": 1},
                at=at,
            )


def _overflowed(db: Database, from_group: str, to_group: str, at: datetime) -> None:
    with db.write() as session:
        conversation = new_conversation(session)
        conversation.skill_group = to_group
        append_event(
            session,
            conversation_id=conversation.id,
            type=EventType.OVERFLOWED,
            data={"from": from_group, "to": to_group, "hop": 1},
            at=at,
        )


def _known_situation(db: Database) -> None:
    # Agents: ben serves both groups; away and offline agents bring no capacity.
    _agent(db, "ann", ["general"], status="online", cap=2, held=2)  # at capacity
    _agent(db, "ben", ["general", "after_sales"], status="online", cap=3, held=1)
    _agent(db, "cat", ["general"], status="away", cap=2, held=1)
    _agent(db, "dan", ["after_sales"], status="offline", cap=2, held=0)
    _agent(db, "eve", ["after_sales"], status="online", cap=1, held=1)  # at capacity
    _agent(db, "lee", ["legacy"], status="online", cap=9, held=0)  # a group not in the policy

    # Waiting now.
    for seconds in (45, 120, 10):
        enqueue_conversations(db, 1, skill_group="general", enqueued_at=_ago(seconds=seconds))
    enqueue_conversations(db, 1, skill_group="after_sales", enqueued_at=_ago(seconds=30))
    enqueue_conversations(db, 1, skill_group="legacy", enqueued_at=_ago(hours=5))

    # general, last 15 minutes: waits 60 and 30; handling 300, 60 (a transfer) and 900.
    _assignment(
        db, "general", enqueued=_ago(minutes=10), assigned=_ago(minutes=9), released=_ago(minutes=4)
    )
    _assignment(db, "general", enqueued=_ago(minutes=6), assigned=_ago(minutes=5, seconds=30))
    _assignment(  # long ago: neither its wait nor its handling counts
        db,
        "general",
        enqueued=_ago(minutes=40),
        assigned=_ago(minutes=30),
        released=_ago(minutes=20),
    )
    _assignment(  # a direct transfer has no queue wait
        db,
        "general",
        enqueued=_ago(minutes=20),
        assigned=_ago(minutes=2),
        released=_ago(minutes=1),
        from_queue=False,
    )
    _assignment(  # assigned before the window (wait not counted), released in it
        db,
        "general",
        enqueued=_ago(minutes=20, seconds=10),
        assigned=_ago(minutes=20),
        released=_ago(minutes=5),
    )
    _assignment(db, "after_sales", enqueued=_ago(minutes=3), assigned=_ago(minutes=1))
    _assignment(db, "legacy", enqueued=_ago(minutes=3), assigned=_ago(minutes=2))

    # Closes today and yesterday.
    _closed(db, "general", "abandoned", MIDNIGHT)
    _closed(db, "general", "abandoned", _ago(minutes=1))
    _closed(db, "general", "idle_timeout", _ago(hours=2), rating=4)
    _closed(db, "general", "agent_closed", _ago(hours=1), rating=5)
    _closed(db, "general", "overflow", _ago(hours=3))
    _closed(db, "general", "agent_closed", MIDNIGHT - timedelta(seconds=1), rating=1)
    _closed(db, "general", "abandoned", MIDNIGHT - timedelta(hours=3))
    _closed(db, "general", "overflow", MIDNIGHT - timedelta(hours=3))
    _closed(db, "after_sales", "idle_timeout", _ago(hours=4), rating=3)
    _closed(db, "after_sales", "visitor_closed", _ago(hours=11), rating=2)
    _closed(db, "after_sales", "idle_timeout", MIDNIGHT - timedelta(minutes=5), rating=5)
    _closed(db, "legacy", "abandoned", _ago(minutes=1), rating=1)

    # Moves to another group.
    _overflowed(db, "general", "after_sales", _ago(hours=1, minutes=30))
    _overflowed(db, "general", "after_sales", _ago(minutes=30))
    _overflowed(db, "after_sales", "general", _ago(hours=3))
    _overflowed(db, "general", "after_sales", MIDNIGHT - timedelta(hours=2))
    _overflowed(db, "legacy", "general", _ago(minutes=5))


def test_figures_per_skill_group(db: Database) -> None:
    _known_situation(db)
    with db.read() as session:
        figures = skill_group_figures(
            session=session, skill_groups=["general", "after_sales", "returns"], now=NOW
        )
    assert figures == [
        SkillGroupFigures(
            skill_group="general",
            waiting=3,
            longest_wait_seconds=120.0,
            agents_online=2,
            agents_away=1,
            agents_at_capacity=1,
            load=3,
            capacity=5,
            average_wait_seconds=45.0,
            average_handling_seconds=420.0,
            overflows_today=3,  # two moves on, one closed with `overflow`
            abandons_today=2,
            auto_closes_today=1,
            ratings_today=2,
            average_rating_today=4.5,
        ),
        SkillGroupFigures(
            skill_group="after_sales",
            waiting=1,
            longest_wait_seconds=30.0,
            agents_online=2,
            agents_away=0,
            agents_at_capacity=1,
            load=2,
            capacity=4,
            average_wait_seconds=120.0,
            average_handling_seconds=None,
            overflows_today=1,
            abandons_today=0,
            auto_closes_today=1,
            ratings_today=2,
            average_rating_today=2.5,
        ),
        SkillGroupFigures(skill_group="returns"),  # in the policy, nothing going on
    ]

    # A day later today's figures start from zero, and the 15 minutes are empty.
    with db.read() as session:
        tomorrow = skill_group_figures(
            session=session, skill_groups=["general"], now=NOW + timedelta(days=1)
        )[0]
    assert (tomorrow.waiting, tomorrow.longest_wait_seconds) == (3, 120.0 + 86400)
    assert (tomorrow.average_wait_seconds, tomorrow.average_handling_seconds) == (None, None)
    assert (
        tomorrow.overflows_today,
        tomorrow.abandons_today,
        tomorrow.auto_closes_today,
        tomorrow.ratings_today,
        tomorrow.average_rating_today,
    ) == (0, 0, 0, 0, None)


# --- over the API ---------------------------------------------------------------------------


def _groups(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {group["skill_group"]: group for group in body["skill_groups"]}


def _gauges(text: str) -> dict[tuple[str, str], float]:
    """(gauge name, skill_group) → value of every gauge labelled by skill group."""
    return {
        (sample.name, sample.labels["skill_group"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "gauge"
        for sample in family.samples
        if "skill_group" in sample.labels
    }


def _request_counts(text: str) -> dict[tuple[str, str, str], float]:
    """(method, route, status) → requests counted by the latency histogram."""
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "switchboard_http_request_duration_seconds"
        for s in family.samples
        if s.name.endswith("_count")
    }


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


async def _in_queue(system: System, cid: str, token: str) -> None:
    async def queued() -> bool:
        return (await system.conversation(cid, token))["queue_position"] is not None

    await eventually(queued, what=f"{cid} to be in its queue")


async def _close(system: System, cid: str, token: str) -> None:
    response = await system.close(cid, token)
    assert response.status_code == 200, response.text
    await system.wait_for_state(cid, token, "closed")


async def test_monitor_and_metrics_over_the_api(system: System, db: Database) -> None:
    _, alice_token = await system.create_agent("alice", max_concurrent=1)
    bob, bob_token = await system.create_agent(
        "bob", skill_groups=["general", "after_sales"], max_concurrent=2
    )
    await system.set_status(bob, bob_token, "away")
    await system.create_agent("carol", skill_groups=["after_sales"], max_concurrent=1)

    first, first_visitor = await system.start_conversation()
    await system.wait_for_state(first, first_visitor, "active")
    second, second_visitor = await system.start_conversation()
    gives_up, gives_up_visitor = await system.start_conversation()
    await _in_queue(system, second, second_visitor)
    await _in_queue(system, gives_up, gives_up_visitor)
    await _close(system, gives_up, gives_up_visitor)  # abandoned while queued
    await _close(system, first, alice_token)  # alice is free: the second one is hers
    await system.wait_for_state(second, second_visitor, "active")
    rated = await system.rate(first, first_visitor, 4)
    assert rated.status_code == 201, rated.text

    async def rating_recorded() -> bool:
        body = await system.conversation(first, first_visitor)
        return body["rating"]["status"] == "rated"

    await eventually(rating_recorded, what="the rating to be recorded")
    waiting, waiting_visitor = await system.start_conversation()
    await _in_queue(system, waiting, waiting_visitor)

    for headers, refused in (({}, 401), (APP, 403)):
        assert (await system.http.get("/v1/monitor", headers=headers)).status_code == refused
    # An agent's workbench shows the figures of the agent's own groups, without the Temporal
    # UI's address (the supervisors' console).
    alices = await system.http.get("/v1/monitor", headers=bearer(alice_token))
    assert alices.status_code == 200, alices.text
    assert [group["skill_group"] for group in alices.json()["skill_groups"]] == ["general"]
    assert alices.json()["temporal_ui"] is None

    before = await system.http.get("/v1/monitor", headers=ADMIN)
    assert before.status_code == 200, before.text
    assert before.json()["temporal_ui"] is not None
    assert {group["skill_group"] for group in before.json()["skill_groups"]} >= {
        "general",
        "after_sales",
    }
    address = f"127.0.0.1:{free_port()}"
    stop_metrics = serve_metrics(system.app.state.metrics, address)
    try:
        async with httpx.AsyncClient() as scraper:
            metrics = await scraper.get(f"http://{address}/metrics")
    finally:
        await asyncio.to_thread(stop_metrics)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    after = (await system.http.get("/v1/monitor", headers=ADMIN)).json()

    with db.read() as session:
        assignments = {row.conversation_id: row for row in session.exec(select(Assignment)).all()}
        enqueued = session.exec(
            select(Conversation.queued_at).where(Conversation.id == waiting)
        ).one()
    first_served, second_served = assignments[first], assignments[second]
    assert first_served.released_at is not None and second_served.released_at is None
    at = datetime.fromisoformat(before.json()["at"])

    groups = _groups(before.json())
    assert list(groups) == ["general", "after_sales"]  # the policy's groups, in its order
    general, after_sales = groups["general"], groups["after_sales"]
    assert general["average_wait_seconds"] == pytest.approx(
        (
            _seconds(first_served.assigned_at, first_served.enqueued_at)
            + _seconds(second_served.assigned_at, second_served.enqueued_at)
        )
        / 2,
        abs=0.01,
    )
    assert general["average_handling_seconds"] == pytest.approx(
        _seconds(first_served.released_at, first_served.assigned_at), abs=0.01
    )
    assert general["longest_wait_seconds"] == pytest.approx(_seconds(at, enqueued), abs=0.01)
    del general["average_wait_seconds"], general["average_handling_seconds"]
    del general["longest_wait_seconds"]
    assert general == {
        "skill_group": "general",
        "waiting": 1,
        "agents_online": 1,  # alice; bob is away
        "agents_away": 1,
        "agents_at_capacity": 1,
        "load": 1,
        "capacity": 1,
        "overflows_today": 0,
        "abandons_today": 1,
        "auto_closes_today": 0,
        "ratings_today": 1,
        "average_rating_today": 4.0,
        "tickets_open": 0,
        "tickets_breached": 0,
    }
    assert after_sales == {
        "skill_group": "after_sales",
        "waiting": 0,
        "longest_wait_seconds": 0.0,
        "agents_online": 1,  # carol
        "agents_away": 1,  # bob counts in both of his groups
        "agents_at_capacity": 0,
        "load": 0,
        "capacity": 1,
        "average_wait_seconds": None,
        "average_handling_seconds": None,
        "overflows_today": 0,
        "abandons_today": 0,
        "auto_closes_today": 0,
        "ratings_today": 0,
        "average_rating_today": None,
        "tickets_open": 0,
        "tickets_breached": 0,
    }

    # /metrics has the same figures as gauges (the longest wait grew in between).
    gauges = _gauges(metrics.text)
    earlier, later = _groups(before.json()), _groups(after)
    expected: dict[tuple[str, str], float] = {}
    for group in ("general", "after_sales"):
        for figure in GROUP_FIGURES:
            name = f"switchboard_{figure}"
            if figure == "longest_wait_seconds":
                value = gauges.pop((name, group))
                assert earlier[group][figure] <= value <= later[group][figure]
            elif earlier[group][figure] is not None:
                assert earlier[group][figure] == later[group][figure]
                expected[(name, group)] = earlier[group][figure]
    assert gauges == expected  # a null figure has no sample

    counts = _request_counts(metrics.text)
    assert counts[("GET", "/v1/monitor", "200")] == 2  # alice's and `before`; `after` came later
    assert counts[("GET", "/v1/monitor", "401")] == 1
    assert counts[("GET", "/v1/monitor", "403")] == 1
    assert counts[("POST", "/v1/conversations", "201")] == 4
    assert counts[("GET", "/v1/conversations/{conversation_id}", "200")] >= 4
    assert not [key for key in counts if first in key[1]], "ids must not become labels"


# --- the worker's Temporal SDK metrics ------------------------------------------------------


async def test_the_worker_serves_temporal_sdk_metrics(
    time_env: WorkflowEnvironment, tmp_path: Path, policy_file
) -> None:
    address = f"127.0.0.1:{free_port()}"
    client = await Client.connect(
        time_env.client.service_client.config.target_host,
        namespace=time_env.client.namespace,
        runtime=sdk_runtime(metrics_address=address),
    )
    db = Database(f"sqlite:///{tmp_path / 'worker.db'}")
    db.create_schema()
    worker = build_worker(
        client=client,
        db=db,
        policy=PolicySource(policy_file()),
        task_queue=f"tq-{uuid.uuid4()}",
        objects=LocalStore(tmp_path / "attachments"),
    )
    try:
        async with worker, httpx.AsyncClient() as http:

            async def temporal_metrics() -> list[str]:
                text = (await http.get(f"http://{address}/metrics")).text
                return [
                    family.name
                    for family in text_string_to_metric_families(text)
                    if family.name.startswith("temporal_")
                ]

            names = await eventually(temporal_metrics, what="temporal_ metrics on the worker")
        assert any(name.startswith("temporal_worker") for name in names), names
    finally:
        db.dispose()
