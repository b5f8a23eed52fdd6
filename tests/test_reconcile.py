"""The reconciliation pass repairs what a crash, a failed signal or a client that gave up left
untold: assignment triggers and signals, messages, workflows that never started, and tickets'
changes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import sqlalchemy as sa
from sqlmodel import col, select
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from dispatcher import Reconciler, Repairs
from domain.policy import PolicySource
from domain.types import MessagePosted, Role
from store.assignment import dispatch
from store.conversations import open_conversation
from store.models import Agent, Conversation, QueueEntry, Ticket
from store.tickets import Author, NewTicket, create_ticket
from tests.support.api import eventually
from tests.support.data import store_unsignalled
from tests.support.processes import free_port
from tests.support.system import StartSystem, System, assigned_while_no_worker_runs
from workflows.gateway import ticket_workflow_id, workflow_id
from workflows.ticket import TicketWorkflow


def _reconciler(
    system: System, settle: timedelta = timedelta(seconds=5), meter: MetricMeter | None = None
) -> Reconciler:
    return Reconciler(
        db=system.db,
        client=system.env.client,
        policy=PolicySource(system.policy_path),
        task_queue=system.task_queue,
        settle=settle,
        meter=meter,
    )


async def _queued(system: System) -> tuple[str, str, str]:
    agent_id, _token = await system.create_agent(online=False)
    conversation_id, visitor = await system.start_conversation()
    await system.wait_for_event(conversation_id, visitor, "queue.position_changed")

    async def in_queue() -> bool:
        with system.db.read() as session:
            return session.exec(select(QueueEntry.id)).first() is not None

    await eventually(in_queue, what="the queue entry")

    async def placed() -> bool:
        # The workflow has its placement: the enqueue activity is over, and with it the one
        # assignment attempt it makes (which would otherwise race the agent coming online).
        return (await system.snapshot(conversation_id))["workflow"]["queued_at"] is not None

    await eventually(placed, what="the enqueue activity to finish")
    return agent_id, conversation_id, visitor


def _online_without_trigger(system: System, agent_id: str) -> None:
    """As if the API process died between writing the status and dispatching."""
    with system.db.write() as session:
        session.execute(sa.update(Agent).where(col(Agent.id) == agent_id).values(status="online"))


async def _unassigned(system: System, conversation_id: str) -> None:
    """The workflow has no agent (and the conversation still queues)."""
    workflow = (await system.snapshot(conversation_id))["workflow"]
    assert (workflow["state"], workflow["agent_id"]) == ("queued", None)


async def test_a_lost_trigger_is_repaired(system: System) -> None:
    agent_id, conversation_id, _visitor = await _queued(system)
    _online_without_trigger(system, agent_id)
    await _unassigned(system, conversation_id)

    repaired = await _reconciler(system).reconcile()

    assert repaired == Repairs(assignments=1)
    body = await system.wait_for_state(conversation_id, None, "active")
    assert body["agent_id"] == agent_id


async def test_a_lost_assignment_signal_is_sent_again(system: System) -> None:
    agent_id, conversation_id, _visitor = await _queued(system)
    _online_without_trigger(system, agent_id)
    # Assigned in the database, but the process died before signalling the workflow.
    made = dispatch(system.db, ["general"])
    assert [m.conversation_id for m in made] == [conversation_id]
    await _unassigned(system, conversation_id)

    reconciler = _reconciler(system, settle=timedelta(0))
    repaired = await reconciler.reconcile()

    assert repaired == Repairs(assignment_signals=1)
    body = await system.wait_for_state(conversation_id, None, "active")
    assert body["agent_id"] == agent_id
    # Nothing is assigned twice by the repair.
    assert (await system.agent(agent_id))["load"] == 1
    assert (await reconciler.reconcile()).total() == 0


async def test_an_agent_and_a_close_that_reach_the_workflow_together_close_as_asked(
    dev_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    """The assignment's signal and the visitor's close come to the workflow in one task (here
    no worker runs while both are sent; in production a task lost with a dead server does it):
    the visitor closed a served conversation, not an abandoned wait."""
    system = await make_system(dev_env)
    (cid, visitor), (agent_id, _token) = await assigned_while_no_worker_runs(system)
    closing = asyncio.ensure_future(system.close(cid, visitor))
    await asyncio.sleep(1)  # the close waits for a worker
    await system.start_worker()
    closed = await closing
    assert closed.status_code == 200, closed.text
    # The visitor reads their agent's name, never the id.
    assert (closed.json()["close_reason"], closed.json()["agent_name"]) == (
        "visitor_closed",
        agent_id.title(),
    )
    assert closed.json()["rating"]["status"] == "pending"


async def test_an_agent_message_that_comes_with_the_assignment_starts_the_countdown(
    dev_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    """The assignment's signal and the agent's first message reach the workflow in one task
    (here no worker runs while both are sent; in production a task lost with a dead server,
    retried, does it): the agent wrote last, so the idle countdown runs and the chat closes."""
    system = await make_system(dev_env, idle_warning_after="1s", idle_close_after="1s")
    (cid, visitor), _agent = await assigned_while_no_worker_runs(system)
    # Their message as the API signals it (its store is not what this test is about).
    await system.env.client.get_workflow_handle(workflow_id(cid)).signal(
        "message_posted", MessagePosted(message_id=1, seq=99, sender_role=Role.AGENT)
    )
    await system.start_worker()
    warning = await system.wait_for_event(cid, visitor, "conversation.idle_warning")
    assert warning["data"]["after_agent_message_seq"] == 99
    closed = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "idle_timeout"


def _stored_unsignalled(system: System, cid: str, role: str, sender: str, text: str) -> int:
    return store_unsignalled(
        system.db, conversation_id=cid, sender_role=role, sender_id=sender, content=text
    ).message.seq


async def test_a_stored_message_the_workflow_never_heard_of_is_told(system: System) -> None:
    _agent_id, agent = await system.create_agent()
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    await system.post_message(cid, agent, "Hello, how can I help?")
    seq = _stored_unsignalled(system, cid, "visitor", cid, "my parcel is late")
    assert (await system.snapshot(cid))["workflow"]["last_message_seq"] < seq
    reconciler = _reconciler(system, settle=timedelta(0))

    assert await reconciler.reconcile() == Repairs(message_signals=1)

    async def told() -> bool:
        return (await system.snapshot(cid))["workflow"]["last_message_seq"] == seq

    await eventually(told, what="the workflow told of the stored message")
    with system.db.read() as session:
        conversation = session.get(Conversation, cid)
        assert conversation is not None and conversation.signalled_seq == seq
    assert (await reconciler.reconcile()).total() == 0  # told once


async def test_messages_the_api_told_are_not_told_again(system: System) -> None:
    _agent_id, agent = await system.create_agent()
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    seq = await system.say(cid, agent, "Hello!")

    async def recorded() -> bool:
        with system.db.read() as session:
            conversation = session.get(Conversation, cid)
            return conversation is not None and conversation.signalled_seq == seq

    await eventually(recorded, what="the API to record that it told the workflow")
    assert (await _reconciler(system, settle=timedelta(0)).reconcile()).total() == 0


async def test_a_conversation_whose_workflow_never_started_is_started(system: System) -> None:
    """The row was written and the start failed (the API answered 503), and the customer never
    came back: the reconciler starts its workflow, which routes and queues it."""
    opened = open_conversation(system.db, customer_id="customer-orphan", channel="web")
    cid = opened.conversation.id
    # The repairs are counted on the worker's /metrics, as the worker's runtime serves them.
    metrics = f"127.0.0.1:{free_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=metrics)))
    reconciler = _reconciler(system, settle=timedelta(0), meter=runtime.metric_meter)

    assert await reconciler.reconcile() == Repairs(workflows_started=1)

    async def counted() -> bool:
        async with httpx.AsyncClient() as http:
            page = (await http.get(f"http://{metrics}/metrics")).text
        return 'switchboard_reconciled{kind="workflows_started"' in page

    await eventually(counted, what="the repair counted on /metrics")

    async def in_queue() -> bool:
        with system.db.read() as session:
            entry = select(QueueEntry).where(QueueEntry.conversation_id == cid)
            return session.exec(entry).first() is not None

    await eventually(in_queue, what="the started workflow to route and queue it")
    assert (await reconciler.reconcile()).total() == 0


# --- a lost signal is harmless for every timer decision, the reconciler aside -----------------


async def _events_of(system: System, cid: str, token: str) -> list[str]:
    return [event["type"] for event in await system.events(cid, token)]


async def test_a_reply_whose_signal_was_lost_is_not_taken_for_silence(system: System) -> None:
    """The agent wrote; the visitor's reply was stored but its workflow never told (and no
    reconciler runs here). Before, 'are you still there?' followed the reply and then an
    idle_timeout close; now the warning finds the reply and the countdown stops."""
    _agent_id, agent = await system.create_agent()
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    await system.say(cid, agent, "Your parcel left the depot. Anything else?")
    reply = _stored_unsignalled(system, cid, "visitor", cid, "yes, the invoice")
    await system.pending_timer(cid, "idle_warning_at")

    await system.env.sleep(3 * 3600)  # far past the idle warning and the auto-close

    async def resumed() -> bool:
        return (await system.snapshot(cid))["workflow"]["last_message_seq"] == reply

    await eventually(resumed, what="the workflow to go on from the stored reply")
    workflow = (await system.snapshot(cid))["workflow"]
    assert (workflow["state"], workflow["idle_warning_at"], workflow["idle_close_at"]) == (
        "active",
        None,
        None,
    )
    types = await _events_of(system, cid, visitor)
    assert "conversation.idle_warning" not in types and "conversation.closed" not in types
    assert (await system.conversation(cid, visitor))["state"] == "active"


async def test_a_first_reply_whose_signal_was_lost_is_not_requeued(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    """The agent's first reply was stored but never told: before, the first-reply timer
    requeued the conversation away from an agent who had answered; now the requeue finds the
    reply, and the idle countdown starts from it."""
    system = await make_system(
        time_env, groups='[[skill_groups]]\nname = "general"\nagent_first_reply_timeout = "2m"\n'
    )
    agent_id, _agent = await system.create_agent(max_concurrent=1)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    reply = _stored_unsignalled(system, cid, "agent", agent_id, "Hello, I am looking into it")

    await time_env.sleep(130)  # the first reply was due after 2 minutes

    async def counting_down() -> bool:
        workflow = (await system.snapshot(cid))["workflow"]
        return workflow["last_message_seq"] == reply and workflow["idle_warning_at"] is not None

    await eventually(counting_down, what="the countdown from the stored reply")
    assert "conversation.requeued" not in await _events_of(system, cid, visitor)
    body = await system.conversation(cid)
    assert (body["state"], body["agent_id"]) == ("active", agent_id)
    assert (await system.agent(agent_id))["load"] == 1


async def test_a_ticket_whose_workflow_was_never_told_is_started_and_plans(
    system: System,
) -> None:
    """The ticket was stored and its workflow never told (the engine was down, the API
    crashed): the reconciler starts it, it reads the ticket, and nothing is left to tell."""
    ticket = create_ticket(
        system.db,
        policy=PolicySource(system.policy_path).current(),
        new=NewTicket(subject="Parcel lost", customer_id="customer-orphan"),
        author=Author(Role.ADMIN, "admin"),
    )
    assert ticket.id is not None
    reconciler = _reconciler(system, settle=timedelta(0))
    assert await reconciler.reconcile() == Repairs(tickets_told=1)

    async def read_by_its_workflow() -> bool:
        with system.db.read() as session:
            stored = session.get(Ticket, ticket.id)
            return stored is not None and stored.told_version == stored.version

    await eventually(read_by_its_workflow, what="the ticket's workflow to read it")
    assert await reconciler.reconcile() == Repairs()
    handle = system.env.client.get_workflow_handle(ticket_workflow_id(ticket.id))
    plan = await handle.query(TicketWorkflow.current_plan)
    assert plan is not None and (plan.status, plan.version) == ("open", 1)
