"""Nothing stuck (issue 12): an update that lands at an awkward moment of the workflow is still
answered, and the conversation still closes, gives its agent's seat back and completes.

- A conversation frozen for good: a transfer taken in by the very workflow task in which the
  server first suggests continue-as-new. The workflow waited for its handlers to finish before
  continuing as new, and the transfer's handler waited for the run loop: both for ever, with no
  timer, the transfer and every later close answered 503.
- A transfer accepted while the first-reply timeout requeues the conversation: the requeue
  moved the conversation out of the stage that carries transfers out, and the transfer waited
  for ever.

Both run on the real dev server (in real time) with the worker and the API in process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from store.db import Database
from tests.support.api import AgentLogin, Visit, eventually
from tests.support.histories import (
    accepted_updates,
    completed,
    settled,
    standing_still,
    suggesting_tasks,
)
from tests.support.system import StartSystem, System
from tests.support.temporal import SHORT_HISTORY
from workflows.gateway import workflow_id

# How long a transfer or a close may take to answer, on a loaded machine.
ANSWER_WITHIN = 60.0
# How long a closed conversation may take to finish its (two-second) rating phase.
COMPLETE_WITHIN = 60.0
SHORT_RATING = {"rating_window": "2s"}


async def answer(
    request: Awaitable[httpx.Response],
    handle: WorkflowHandle[object, object],
    what: str,
) -> httpx.Response:
    """The request's answer within ANSWER_WITHIN; a 503 or no answer fails, saying where the
    workflow stands."""
    try:
        async with asyncio.timeout(ANSWER_WITHIN):
            response = await request
    except TimeoutError:
        pytest.fail(f"{what}: no answer in {ANSWER_WITHIN}s; {await standing_still(handle)}")
    if response.status_code >= 500:
        pytest.fail(
            f"{what} answered {response.status_code} ({response.text[:200]}); "
            f"{await standing_still(handle)}"
        )
    return response


async def _closes_and_completes(
    system: System, visit: Visit, handle: WorkflowHandle[object, object], *agents: AgentLogin
) -> None:
    """Whoever holds the conversation (of `agents`; nobody: the admin) closes it: 200, the row
    closed, the workflow completed after its rating phase, every agent's seat given back."""
    holder = (await system.conversation(visit.conversation_id))["agent_id"]
    closer = {agent.id: agent.token for agent in agents}.get(holder)
    closed = await answer(
        system.close(visit.conversation_id, closer), handle, "the close after the transfer"
    )
    assert closed.status_code == 200, closed.text
    row = await system.conversation(visit.conversation_id)
    assert row["state"] == "closed", row
    assert await completed(handle, timeout=COMPLETE_WITHIN) == row["close_reason"]
    loads = [(await system.agent(agent.id))["load"] for agent in agents]
    assert loads == [0] * len(agents), loads


# --- a conversation frozen for good ----------------------------------------------------------


async def _to_the_edge_of_continue_as_new(system: System, visit: Visit, agent: AgentLogin) -> str:
    """Messages, one at a time, until the next workflow task of the conversation's run will be
    the first in which the server suggests continue-as-new (its WorkflowTaskScheduled event is
    number SHORT_HISTORY or later, and no task of the run was suggesting yet). Returns the run.

    A message's own task is scheduled two events after the history's end, an update's right
    after it: a history of SHORT_HISTORY - 2 events is the one length where a message would
    take the suggestion itself. Visitor messages add four events, an agent's message after the
    visitor's six: the writer is chosen to step over that length; a run that lands on it all
    the same continues as new, and the next run is tried."""
    handle = system.env.client.get_workflow_handle(workflow_id(visit.conversation_id))
    sent = 0
    while sent < 4 * SHORT_HISTORY:
        run_id, length = await settled(handle)
        history = await handle.fetch_history()
        assert not suggesting_tasks(history), "a suggesting task did not continue as new"
        if length + 1 >= SHORT_HISTORY:
            return run_id
        writer = agent.token if length + 4 == SHORT_HISTORY - 2 else visit.token
        seq = await system.say(visit.conversation_id, writer, f"message {sent}")
        await system.workflow(visit.conversation_id, seen=seq)
        sent += 1
    pytest.fail(f"no run of {handle.id} came to the edge of continue-as-new in {sent} messages")


@pytest.mark.parametrize("target", ["agent", "group"])
@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_a_transfer_in_the_task_that_suggests_continue_as_new_is_answered(
    target: str, short_history_env: WorkflowEnvironment, db: Database, make_system: StartSystem
) -> None:
    env = short_history_env
    system = await make_system(env, **SHORT_RATING)
    alice = await system.create_agent("alice", max_concurrent=2)
    visit = await system.start_conversation()
    await system.wait_for(visit.conversation_id, state="active", agent_id=alice.id)
    # Bob serves another group: the conversation reaches him only by the transfer.
    bob = await system.create_agent("bob", skill_groups=["after_sales"], max_concurrent=2)
    await system.say(visit.conversation_id, alice.token, "Hello, how can I help?")
    handle = env.client.get_workflow_handle(workflow_id(visit.conversation_id))

    run_id = await _to_the_edge_of_continue_as_new(system, visit, alice)
    moved = await answer(
        system.transfer(
            visit.conversation_id,
            alice.token,
            **({"to_agent_id": bob.id} if target == "agent" else {"to_skill_group": "after_sales"}),
        ),
        handle,
        "the transfer in the suggesting task",
    )
    assert moved.status_code in (200, 409), moved.text
    if moved.status_code == 200:
        # The test did what it says: the transfer was taken in by the suggesting task.
        edge = await env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        transfers = [u for u in accepted_updates(edge) if u.name == "transfer"]
        assert [u.in_suggesting_task for u in transfers] == [True], transfers

    await _closes_and_completes(system, visit, handle, alice, bob)
    # The run after the edge really continued: the conversation went on in a new run.
    assert (await handle.describe()).run_id != run_id


# --- a transfer accepted while the first-reply timeout requeues --------------------------------

FIRST_REPLY_IN_6_SECONDS = (
    '[[skill_groups]]\nname = "general"\nagent_first_reply_timeout = "6s"\n'
    '[[skill_groups]]\nname = "after_sales"\n'
)


@contextmanager
def writes_held(db: Database) -> Iterator[None]:
    """Another process's write transaction on the SQLite file: every write of the system waits
    (reads go on) until the block ends."""
    path = make_url(db.url).database
    assert path, db.url
    holder = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


async def _fired(handle: WorkflowHandle[object, object], event_type: int) -> bool:
    history = await handle.fetch_history()
    return any(event.event_type == event_type for event in history.events)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_a_transfer_accepted_while_the_unanswered_conversation_is_requeued_is_answered(
    dev_env: WorkflowEnvironment, db: Database, make_system: StartSystem
) -> None:
    """The first-reply timer fires and the requeue's write waits on the database (held by
    another transaction); the workflow task that runs it outlives its timeout and is
    heartbeated, and the next one brings the transfer while the requeue is still under way.
    Only then may the requeue write: the transfer must still be answered, and the conversation
    close and complete."""
    system = await make_system(dev_env, groups=FIRST_REPLY_IN_6_SECONDS, **SHORT_RATING)
    # Bob serves another group: after the requeue nobody takes the conversation from general.
    bob = await system.create_agent("bob", skill_groups=["after_sales"], max_concurrent=1)
    alice = await system.create_agent("alice", max_concurrent=1)
    visit = await system.start_conversation()
    await system.wait_for(visit.conversation_id, state="active", agent_id=alice.id)
    handle = dev_env.client.get_workflow_handle(workflow_id(visit.conversation_id))

    with writes_held(db):
        # Held before the first reply is due: the requeue will wait for it.
        await system.pending_timer(visit.conversation_id, "first_reply_due_at")
        await eventually(
            lambda: _fired(handle, EventType.EVENT_TYPE_TIMER_FIRED),
            what="the first-reply timer to fire",
            timeout=30,
        )
        transfer = asyncio.create_task(
            system.transfer(visit.conversation_id, alice.token, to_agent_id=bob.id)
        )

        async def taken_in_or_answered() -> bool:
            return transfer.done() or await _fired(
                handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
            )

        # The requeue cannot write meanwhile: whatever takes the transfer in, takes it first.
        await eventually(
            taken_in_or_answered, what="the transfer to be taken in or answered", timeout=60
        )
    moved = await answer(transfer, handle, "the transfer accepted during the requeue")
    assert moved.status_code in (200, 409), moved.text
    await _closes_and_completes(system, visit, handle, alice, bob)
