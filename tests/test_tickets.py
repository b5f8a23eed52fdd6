"""Tickets (工单) over the API with a real worker and Temporal, on SQLite and PostgreSQL: made
from a conversation and from a left message, commented, solved and reopened by the customer's
reply; their workflow's SLA reminder, breach and escalation and the pending and solved
auto-closes on time (the time-skipping server: `env.sleep` moves its clock, the activities
then write in real time, so each check polls); and the workflow through a worker's SIGKILL.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from domain.policy import Policy
from domain.types import (
    SA_SLA_BREACH_AT,
    SA_TICKET_ASSIGNEE,
    SA_TICKET_PRIORITY,
    SA_TICKET_STATUS,
    TicketChanged,
    TicketFlow,
    TicketPlan,
    TicketPlanRequest,
    TicketStatus,
    TicketTimer,
    TicketTimerDue,
)
from store.db import Database
from store.tickets import sla_targets
from tests.support.api import ADMIN, APP_KEY, ApiClient, eventually, expect
from tests.support.callers import CALLBACK_GROUPS, CALLBACK_ROUTING
from tests.support.processes import Deployment
from tests.support.system import StartSystem
from workflows.gateway import ticket_workflow_id
from workflows.ticket import TicketWorkflow

# Ticket workflows' histories as recorded (SWITCHBOARD_RECORD_HISTORIES=1 writes them from the
# timer test): each must replay against today's code (keep the old files: tickets run for days).
# v1: search attributes unset even when they never had a value; v2: only once they had one.
TICKET_HISTORIES = Path(__file__).parent / "histories" / "tickets"
RECORD = os.environ.get("SWITCHBOARD_RECORD_HISTORIES") == "1"
RECORDED_NAMES = ("sla_breached_escalated.v2", "pending_auto_closed.v2")

# Minutes-scale targets: the time-skipping server runs them in moments.
TICKET_POLICY = """
[tickets]
pending_close_after = "2h"
solved_close_after = "1h"

[[ticket_sla]]
priority = "high"
first_response = "30m"
resolution = "4h"
remind_before = "10m"
escalate_priority = true
escalate_to = "after_sales"
"""


@pytest.fixture
def dev_env(fresh_dev_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Its ticket workflows on a server of its own (conftest.py's fresh_dev_env says why)."""
    return fresh_dev_env


async def _types(api: ApiClient, ticket_id: int, token: str | None = None) -> list[str]:
    return [event["type"] for event in await api.ticket_events(ticket_id, token)]


async def _ticket(api: ApiClient, ticket_id: int, token: str | None = None) -> dict[str, Any]:
    return expect(await api.ticket(ticket_id, token), 200)


async def _eventually_ticket(
    api: ApiClient, ticket_id: int, what: str, **expected: Any
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        ticket = await _ticket(api, ticket_id)
        return ticket if all(ticket[key] == value for key, value in expected.items()) else None

    return await eventually(check, what=f"ticket {ticket_id} {what}: {expected}")


async def test_the_workflow_waits_for_its_timer_plans_again_on_a_change_and_ends_closed(
    time_env: WorkflowEnvironment,
) -> None:
    """The workflow alone, its activities stubbed: a stored ticket whose breach is due in an
    hour; a change told meanwhile makes it read the ticket again; the timer acts at its time,
    and the ticket closed ends the workflow."""
    started = await time_env.get_current_time()
    breach_at = started + timedelta(hours=1)
    stored = {"status": TicketStatus.OPEN.value, "plans": 0}
    acted: list[TicketTimerDue] = []

    @activity.defn(name="plan_ticket")
    async def plan_ticket(request: TicketPlanRequest) -> TicketPlan:
        stored["plans"] += 1
        due = stored["status"] == TicketStatus.OPEN
        return TicketPlan(
            status=str(stored["status"]),
            priority="high",
            assignee_id=None,
            version=int(stored["plans"]),
            timer=TicketTimer.FIRST_RESPONSE_BREACH if due else None,
            due_at=breach_at if due else None,
            sla_breach_at=breach_at if due else None,
        )

    @activity.defn(name="act_on_ticket_timer")
    async def act_on_ticket_timer(due: TicketTimerDue) -> bool:
        acted.append(due)
        stored["status"] = TicketStatus.CLOSED.value
        return True

    task_queue = f"tq-{uuid.uuid4()}"
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[TicketWorkflow],
        activities=[plan_ticket, act_on_ticket_timer],
    ):
        handle = await time_env.client.start_workflow(
            TicketWorkflow.run,
            TicketFlow(ticket_id=7),
            id=ticket_workflow_id(7),
            task_queue=task_queue,
            start_signal="ticket_changed",
            start_signal_args=[TicketChanged(version=1)],
        )
        await handle.signal(TicketWorkflow.ticket_changed, TicketChanged(version=2))
        assert await handle.result() == "closed"
    [due] = acted
    assert (due.ticket_id, due.timer) == (7, TicketTimer.FIRST_RESPONSE_BREACH)
    assert due.at >= breach_at
    assert stored["plans"] >= 3  # the start, the change, after the timer


async def test_a_ticket_from_a_conversation_is_commented_solved_and_reopened(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=CALLBACK_GROUPS, routing=CALLBACK_ROUTING)
    alice = await system.create_agent("alice", skill_groups=["general", "callback"])
    bob = await system.create_agent("bob", skill_groups=["after_sales"])
    cid, visitor = await system.start_conversation(
        "customer-7", order_id="SO-1001", attributes={"membership": "gold"}
    )
    await system.wait_for_state(cid, visitor, "active")

    refused = await system.ticket_from_conversation(cid, visitor, subject="Mine")
    assert refused.status_code == 403, refused.text
    made = expect(
        await system.ticket_from_conversation(
            cid, alice.token, subject="Parcel lost", description="Trace SO-1001", priority="high"
        ),
        201,
    )
    ticket_id = made["id"]
    assert (made["status"], made["priority"], made["customer_id"]) == ("open", "high", "customer-7")
    assert (made["skill_group"], made["assignee_id"]) == ("general", "alice")
    assert (made["attributes"], made["order_id"]) == ({"membership": "gold"}, "SO-1001")
    assert [link["conversation_id"] for link in made["links"]] == [cid]

    # Staff of another group, and the conversation's visitor, may not read it.
    assert (await system.ticket(ticket_id, bob.token)).status_code == 403
    assert (await system.ticket(ticket_id, visitor)).status_code == 403

    expect(await system.comment_ticket(ticket_id, alice.token, "Courier says depot"), 201)
    answered = expect(
        await system.comment_ticket(ticket_id, alice.token, "We are tracing it", public=True), 201
    )
    assert answered["sla"]["first_responded_at"] is not None

    # The app reads the public side: no internal comment, no staff field or event.
    public = await _ticket(system, ticket_id, APP_KEY)
    assert [c["content"] for c in public["comments"]] == ["We are tracing it"]
    assert (public["skill_group"], public["assignee_id"], public["links"]) == (None, None, None)
    app_events = await system.ticket_events(ticket_id, APP_KEY)
    assert "ticket.linked" not in [event["type"] for event in app_events]
    assert all(event["data"].get("public") is not False for event in app_events)
    staff_events = await system.ticket_events(ticket_id, alice.token)
    assert [event["seq"] for event in staff_events] == list(range(1, len(staff_events) + 1))

    solved = expect(await system.update_ticket(ticket_id, alice.token, status="solved"), 200)
    assert solved["status"] == "solved"
    wrong = await system.update_ticket(ticket_id, alice.token, status="pending")
    assert wrong.status_code == 409, wrong.text
    not_yours = await system.update_ticket(ticket_id, bob.token, status="open")
    assert not_yours.status_code == 403, not_yours.text

    # The customer's reply (through the app) reopens it.
    reopened = expect(
        await system.comment_ticket(ticket_id, APP_KEY, "It still has not arrived"), 201
    )
    assert reopened["status"] == "open"
    assert reopened["comments"][-1]["author_role"] == "customer"
    types = await _types(system, ticket_id)
    assert types.count("ticket.reopened") == 1
    assert types.index("ticket.reopened") > types.index("ticket.commented")

    listed = expect(await system.tickets(alice.token, customer_id="customer-7"), 200)
    assert [t["id"] for t in listed["tickets"]] == [ticket_id]
    assert expect(await system.tickets(bob.token), 200)["tickets"] == []

    expect(await system.update_ticket(ticket_id, alice.token, status="solved"), 200)
    expect(await system.update_ticket(ticket_id, alice.token, status="closed"), 200)
    late = await system.comment_ticket(ticket_id, APP_KEY, "Hello?")
    assert late.status_code == 409, late.text

    # Its workflow saw it close and finished.
    handle = time_env.client.get_workflow_handle(ticket_workflow_id(ticket_id))
    assert await handle.result() == "closed"

    # The customer's erase takes their tickets' text too.
    expect(await system.http.post("/v1/customers/customer-7/erase", headers=ADMIN), 200)
    erased = await _ticket(system, ticket_id)
    assert (erased["subject"], erased["description"], erased["order_id"]) == ("[erased]",) * 3
    assert {comment["content"] for comment in erased["comments"]} == {"[erased]"}


async def test_a_ticket_from_a_left_message_resolves_it(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=CALLBACK_GROUPS, routing=CALLBACK_ROUTING)
    alice = await system.create_agent("alice", skill_groups=["general", "callback"])
    bob = await system.create_agent("bob", skill_groups=["after_sales"])
    cid, visitor = await system.start_conversation("customer-9", entry="callback")
    await system.wait_for(cid, close_reason="overflow")
    left = expect(await system.leave_message(cid, visitor, "Call me back about my refund"), 201)

    refused = await system.ticket_from_left_message(left["id"], bob.token, subject="Refund")
    assert refused.status_code == 403, refused.text
    made = expect(
        await system.ticket_from_left_message(left["id"], alice.token, subject="Refund call back"),
        201,
    )
    assert (made["customer_id"], made["skill_group"]) == ("customer-9", "callback")
    assert {(link["conversation_id"], link["left_message_id"]) for link in made["links"]} == {
        (cid, None),
        (None, left["id"]),
    }
    resolved = await system.left_messages(alice.token, status="resolved")
    assert [message["id"] for message in resolved] == [left["id"]]
    again = await system.ticket_from_left_message(left["id"], alice.token, subject="Twice")
    assert again.status_code == 409, again.text
    assert "ticket.created" in await _types(system, made["id"])

    # Alice's, until she hands it to the group's pool (the workbench's filters).
    async def listed(**filters: Any) -> list[int]:
        page = expect(await system.tickets(alice.token, **filters), 200)
        return [ticket["id"] for ticket in page["tickets"]]

    assert made["assignee_id"] == "alice"
    assert (await listed(unassigned="true"), await listed(unassigned="false")) == ([], [made["id"]])
    expect(await system.update_ticket(made["id"], alice.token, assignee_id=None), 200)
    assert (await listed(unassigned="true"), await listed(unassigned="false")) == ([made["id"]], [])


async def test_sla_reminder_breach_escalation_and_auto_closes_on_time(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, routing=TICKET_POLICY)
    alice = await system.create_agent("alice", skill_groups=["general"])
    oscar = await system.create_agent(
        "oscar", skill_groups=["after_sales"], role="supervisor", online=False
    )

    def new(priority: str) -> dict[str, Any]:
        return {"subject": "Parcel", "customer_id": "customer-1", "priority": priority}

    late = expect(await system.create_ticket(alice.token, **new("high")), 201)["id"]
    answered = expect(await system.create_ticket(alice.token, **new("high")), 201)["id"]
    waiting = expect(await system.create_ticket(APP_KEY, **new("normal")), 201)["id"]
    solved = expect(await system.create_ticket(alice.token, **new("normal")), 201)["id"]
    expect(await system.comment_ticket(answered, alice.token, "On it", public=True), 201)
    expect(await system.update_ticket(waiting, None, status="pending"), 200)
    expect(await system.update_ticket(solved, alice.token, status="solved"), 200)
    expect(await system.comment_ticket(solved, APP_KEY, "One more thing"), 201)
    expect(await system.update_ticket(solved, alice.token, status="solved"), 200)

    await time_env.sleep(15 * 60)
    assert "ticket.sla_reminder" not in await _types(system, late)

    await time_env.sleep(7 * 60)  # 22 minutes: 10 before the first response is due
    reminded = await eventually(
        lambda: _has(system, late, "ticket.sla_reminder"), what="the reminder"
    )
    due = (await _ticket(system, late))["sla"]["first_response_due_at"]
    assert reminded["data"]["sla"] == "first_response"
    assert datetime.fromisoformat(reminded["data"]["breach_at"]) == datetime.fromisoformat(due)
    assert "ticket.sla_breached" not in await _types(system, late)

    await time_env.sleep(10 * 60)  # 32 minutes: breached, escalated
    breached = await eventually(
        lambda: _has(system, late, "ticket.sla_breached"), what="the breach"
    )
    assert breached["data"]["sla"] == "first_response"
    escalated = await _eventually_ticket(
        system, late, "escalated", priority="urgent", skill_group="after_sales"
    )
    assert (escalated["assignee_id"], escalated["breached"]) == (None, True)
    # Supervisors find it in the Temporal UI by its search attributes.
    handle = time_env.client.get_workflow_handle(ticket_workflow_id(late))
    resolution_due = datetime.fromisoformat(escalated["sla"]["resolution_due_at"])

    async def listed_as_escalated() -> bool:
        listed = (await handle.describe()).typed_search_attributes
        return (
            listed.get(SA_TICKET_STATUS),
            listed.get(SA_TICKET_PRIORITY),
            listed.get(SA_TICKET_ASSIGNEE),
            listed.get(SA_SLA_BREACH_AT),
        ) == ("open", "urgent", None, resolution_due)

    await eventually(listed_as_escalated, what="its search attributes")
    # Its new group's supervisor sees it among the breached; the app sees no staff event.
    page = expect(await system.tickets(oscar.token, breached="true"), 200)
    assert [ticket["id"] for ticket in page["tickets"]] == [late]
    app_types = await _types(system, late, APP_KEY)
    assert not {"ticket.sla_breached", "ticket.escalated", "ticket.sla_reminder"} & set(app_types)
    monitor = {g["skill_group"]: g for g in (await system.monitor())["skill_groups"]}
    assert (monitor["after_sales"]["tickets_open"], monitor["after_sales"]["tickets_breached"]) == (
        1,
        1,
    )
    # The first response came in time: no reminder, no breach (each decision checks the store).
    assert not {"ticket.sla_reminder", "ticket.sla_breached"} & set(await _types(system, answered))

    await time_env.sleep(30 * 60)  # 62 minutes: the solved one closed after its hour
    await _eventually_ticket(system, solved, "auto-closed", status="closed")
    assert (await _ticket(system, waiting))["status"] == "pending"

    await time_env.sleep(60 * 60)  # 122 minutes: the pending one, two hours without an answer
    closed = await _eventually_ticket(system, waiting, "auto-closed", status="closed")
    assert closed["closed_at"] is not None
    status_changes = [
        event["data"]
        for event in await system.ticket_events(waiting)
        if event["type"] == "ticket.status_changed"
    ]
    assert status_changes[-1] == {
        "status": "closed",
        "previous": "pending",
        "by_role": "system",
        "reason": "auto_closed",
    }
    now = await time_env.get_current_time()
    assert now > datetime.now(UTC)  # the server's clock moved, not the wall's

    # Their histories replay against this code (and are what RECORD keeps).
    for ticket_id, name in zip((late, waiting), RECORDED_NAMES, strict=True):
        handle = time_env.client.get_workflow_handle(ticket_workflow_id(ticket_id))
        history = await handle.fetch_history()
        await Replayer(workflows=[TicketWorkflow]).replay_workflow(history)
        # Ids, enums and times only: no subject, no customer (invariant 10).
        recorded = history.to_json()
        assert [text for text in ("Parcel", "customer-1", "One more") if text in recorded] == []
        if RECORD:
            _record(name, history)


async def _has(api: ApiClient, ticket_id: int, event_type: str) -> dict[str, Any] | None:
    found = [e for e in await api.ticket_events(ticket_id) if e["type"] == event_type]
    return found[-1] if found else None


async def test_the_ticket_workflow_survives_a_worker_sigkill(
    postgres_db: Database, dev_env: WorkflowEnvironment, deploy: Callable[..., Deployment]
) -> None:
    deployment = deploy(
        postgres_db.url,
        routing='[[ticket_sla]]\npriority = "urgent"\nfirst_response = "8s"\n',
    )
    async with deployment.client() as api:
        ticket_id = expect(
            await api.create_ticket(subject="Call back", customer_id="c-1", priority="urgent"),
            201,
        )["id"]
        handle = dev_env.client.get_workflow_handle(ticket_workflow_id(ticket_id))

        async def timer_set() -> bool:
            plan = await handle.query(TicketWorkflow.current_plan)
            return plan is not None and plan.timer == "first_response_breach"

        await eventually(timer_set, what="the workflow waiting for the breach")
        deployment.kill("worker-0")  # SIGKILL: the breach falls due while no worker runs

        async def due_passed() -> bool:
            ticket = await _ticket(api, ticket_id)
            due = datetime.fromisoformat(ticket["sla"]["first_response_due_at"])
            return datetime.now(UTC) > due

        await eventually(due_passed, timeout=20, what="the first response's due time")
        assert "ticket.sla_breached" not in await _types(api, ticket_id)
        deployment.restart_worker()
        breached = await eventually(
            lambda: _has(api, ticket_id, "ticket.sla_breached"), timeout=30, what="the breach"
        )
        assert breached["data"]["sla"] == "first_response"
        assert (await _types(api, ticket_id)).count("ticket.sla_breached") == 1


def _record(name: str, history: WorkflowHistory) -> None:
    TICKET_HISTORIES.mkdir(parents=True, exist_ok=True)
    recorded = re.sub(r"ticket-[0-9]+", "ticket-recorded", history.to_json())
    (TICKET_HISTORIES / f"{name}.json").write_text(recorded)


RECORDED = {path.stem: path.read_text() for path in sorted(TICKET_HISTORIES.glob("*.json"))}


def test_ticket_histories_are_recorded() -> None:
    assert set(RECORDED) >= set(RECORDED_NAMES)


@pytest.mark.parametrize("name", RECORDED)
async def test_recorded_ticket_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json("ticket-recorded", RECORDED[name])
    await Replayer(workflows=[TicketWorkflow]).replay_workflow(history)


def test_sla_targets_count_the_groups_business_hours() -> None:
    policy = Policy.model_validate(
        {
            "skill_groups": [
                {"name": "general"},
                {
                    "name": "after_sales",
                    "hours": {"timezone": "UTC", "weekly": {"mon": ["09:00-17:00"]}},
                },
            ],
            "ticket_sla": [{"priority": "high", "first_response": "2h", "resolution": "10h"}],
        }
    )
    monday_16 = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    # One hour left on Monday, the rest the next Monday (8 open hours a week).
    assert sla_targets(policy, priority="high", skill_group="after_sales", since=monday_16) == (
        datetime(2026, 11, 30, 10, 0, tzinfo=UTC),
        datetime(2026, 12, 7, 10, 0, tzinfo=UTC),
    )
    assert sla_targets(policy, priority="high", skill_group="general", since=monday_16) == (
        monday_16 + timedelta(hours=2),
        monday_16 + timedelta(hours=10),
    )
    assert sla_targets(policy, priority="low", skill_group="general", since=monday_16) == (
        None,
        None,
    )
