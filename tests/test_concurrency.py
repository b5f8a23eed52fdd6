"""50 conversations start at once against 5 agents of capacity 2 (real dev server, real API).

No agent ever holds more than 2, every conversation is assigned exactly once, and as agents
close conversations the waiting ones are served first come, first served.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from store.assignment import queue_order
from store.db import Database
from store.models import Assignment, QueueEntry
from tests.support.api import eventually
from tests.support.system import StartSystem, System


async def _active(system: System, agents: dict[str, str]) -> dict[str, list[str]]:
    held: dict[str, list[str]] = {}
    for agent_id, token in agents.items():
        held[agent_id] = [c["id"] for c in await system.agent_conversations(agent_id, token)]
    return held


def _queue_order(db: Database) -> list[str]:
    """Who is next: by enqueue time, the ticket breaking ties (as the assignment reads it)."""
    with db.read() as session:
        entries = session.exec(select(QueueEntry).order_by(*queue_order())).all()
        return [entry.conversation_id for entry in entries]


def _assignment_log(db: Database) -> list[Assignment]:
    with db.read() as session:
        return list(session.exec(select(Assignment).order_by(col(Assignment.id))))


async def test_fifty_conversations_five_agents_capacity_two(
    dev_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(dev_env)
    agents = dict([await system.create_agent(f"agent-{i}", max_concurrent=2) for i in range(5)])
    started = await asyncio.gather(*(system.start_conversation() for _ in range(50)))
    visitor = dict(started)

    async def ten_active() -> dict[str, list[str]] | None:
        held = await _active(system, agents)
        return held if sum(map(len, held.values())) == 10 else None

    held = await eventually(ten_active, what="10 conversations active")
    assert all(len(ids) == 2 for ids in held.values()), held

    async def forty_waiting() -> list[str] | None:
        order = _queue_order(system.db)
        return order if len(order) == 40 else None

    waiting_order = await eventually(forty_waiting, what="the other 40 in the queue")
    assert sum(map(len, (await _active(system, agents)).values())) == 10

    overloads: list[dict[str, int]] = []
    sampling = True

    async def watch_loads() -> None:
        while sampling:
            for agent_id, token in agents.items():
                body = await system.agent(agent_id, token)
                if body["load"] > 2:
                    overloads.append({agent_id: body["load"]})
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch_loads())
    served_after_start: list[str] = []
    for _wave in range(5):
        held = await _active(system, agents)
        before = {cid for ids in held.values() for cid in ids}
        # Every agent closes one conversation at once; the queue head takes each free seat.
        closes = [system.close(ids[0], agents[a]) for a, ids in held.items() if ids]
        for response in await asyncio.gather(*closes):
            assert response.status_code == 200, response.text
        expected = waiting_order[len(served_after_start) : len(served_after_start) + len(closes)]

        async def seats_refilled(expected: list[str] = expected) -> set[str] | None:
            now = {cid for ids in (await _active(system, agents)).values() for cid in ids}
            return now if set(expected) <= now else None

        now_active = await eventually(seats_refilled, what="the queue head to be served")
        assert now_active - before == set(expected), "someone who queued later went first"
        served_after_start += expected
    sampling = False
    await watcher
    assert not overloads, overloads

    # Close the rest so every conversation is served, then check the assignment log.
    async def drain() -> bool | None:
        held = await _active(system, agents)
        if not any(held.values()) and not _queue_order(system.db):
            return True
        await asyncio.gather(
            *(system.close(cid, agents[a]) for a, ids in held.items() for cid in ids)
        )
        return None

    await eventually(drain, timeout=60, what="every conversation served and closed")
    log = _assignment_log(system.db)
    assert sorted(a.conversation_id for a in log) == sorted(visitor), "each exactly once"
    assert Counter(a.conversation_id for a in log).most_common(1)[0][1] == 1
    fifo = sorted(log, key=lambda a: (a.enqueued_at, a.queue_ticket))
    assert [a.conversation_id for a in log] == [a.conversation_id for a in fifo], [
        (a.id, a.queue_ticket, a.enqueued_at.isoformat(), a.assigned_at.isoformat())
        for a in log[:12]
    ]
    for agent_id, token in agents.items():
        assert (await system.agent(agent_id, token))["load"] == 0
