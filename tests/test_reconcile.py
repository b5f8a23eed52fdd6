"""The reconciliation pass repairs assignment triggers lost to a crash."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import col, select

from activities.dispatching import reconcile
from domain.types import workflow_id
from store.assignment import dispatch
from store.models import Agent, QueueEntry
from tests.utils import ADMIN, System, eventually


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
        handle = system.env.client.get_workflow_handle(workflow_id(conversation_id))
        return (await handle.query("snapshot"))["queued_at"] is not None

    await eventually(placed, what="the enqueue activity to finish")
    return agent_id, conversation_id, visitor


def _online_without_trigger(system: System, agent_id: str) -> None:
    """As if the API process died between writing the status and dispatching."""
    with system.db.write() as session:
        session.execute(sa.update(Agent).where(col(Agent.id) == agent_id).values(status="online"))


async def test_a_lost_trigger_is_repaired(time_env, db, policy_file, make_system) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        agent_id, conversation_id, visitor = await _queued(system)
        _online_without_trigger(system, agent_id)
        await asyncio.sleep(0.5)
        assert (await system.conversation(conversation_id, visitor))["state"] == "queued"

        repaired = await reconcile(db=system.db, client=time_env.client)

        assert repaired == 1
        body = await system.wait_for_state(conversation_id, visitor, "active")
        assert body["agent_id"] == agent_id


async def test_a_lost_assignment_signal_is_sent_again(
    time_env, db, policy_file, make_system
) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        agent_id, conversation_id, visitor = await _queued(system)
        _online_without_trigger(system, agent_id)
        # Assigned in the database, but the process died before signalling the workflow.
        made = dispatch(system.db, ["general"])
        assert [m.conversation_id for m in made] == [conversation_id]
        await asyncio.sleep(0.5)
        assert (await system.conversation(conversation_id, visitor))["state"] == "queued"

        repaired = await reconcile(
            db=system.db, client=time_env.client, stranded_after=timedelta(0)
        )

        assert repaired == 1
        body = await system.wait_for_state(conversation_id, visitor, "active")
        assert body["agent_id"] == agent_id
        # Nothing is assigned twice by the repair.
        assert (await system.http.get(f"/v1/agents/{agent_id}", headers=ADMIN)).json()["load"] == 1
        assert (
            await reconcile(db=system.db, client=time_env.client, stranded_after=timedelta(0)) == 0
        )
