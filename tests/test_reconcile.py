"""The reconciliation pass repairs assignment triggers lost to a crash."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from dispatcher import reconcile
from domain.types import MessagePosted, Role
from store.assignment import dispatch
from store.models import Agent, QueueEntry
from tests.support.api import eventually
from tests.support.system import StartSystem, System, assigned_while_no_worker_runs
from workflows.gateway import workflow_id


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
    agent_id, conversation_id, visitor = await _queued(system)
    _online_without_trigger(system, agent_id)
    await _unassigned(system, conversation_id)

    repaired = await reconcile(db=system.db, client=system.env.client)

    assert repaired == 1
    body = await system.wait_for_state(conversation_id, visitor, "active")
    assert body["agent_id"] == agent_id


async def test_a_lost_assignment_signal_is_sent_again(system: System) -> None:
    agent_id, conversation_id, visitor = await _queued(system)
    _online_without_trigger(system, agent_id)
    # Assigned in the database, but the process died before signalling the workflow.
    made = dispatch(system.db, ["general"])
    assert [m.conversation_id for m in made] == [conversation_id]
    await _unassigned(system, conversation_id)

    repaired = await reconcile(db=system.db, client=system.env.client, stranded_after=timedelta(0))

    assert repaired == 1
    body = await system.wait_for_state(conversation_id, visitor, "active")
    assert body["agent_id"] == agent_id
    # Nothing is assigned twice by the repair.
    assert (await system.agent(agent_id))["load"] == 1
    assert await reconcile(db=system.db, client=system.env.client, stranded_after=timedelta(0)) == 0


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
    assert (closed.json()["close_reason"], closed.json()["agent_id"]) == (
        "visitor_closed",
        agent_id,
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
