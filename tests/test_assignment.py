"""Invariants 3 and 4 at the database: capacity never exceeded, never assigned twice, FIFO.

Each thread has its own Database (its own connection pool), as separate API and worker
processes would; the same tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from store.assignment import (
    CannotTake,
    NotWaiting,
    assign_to,
    dispatch,
    join_queue,
    queue_position,
    release_agent,
)
from store.db import Database
from store.models import (
    Agent,
    AgentSkill,
    Assignment,
    Conversation,
    QueueEntry,
    utcnow,
)
from tests.support.data import add_agent, enqueue_conversations, new_conversation, skip_agent


def _clone(db: Database) -> Database:
    return Database(db.url)


def _held_per_agent(db: Database) -> list[tuple[str | None, int]]:
    """What each agent holds right now, by their conversations (not their counter)."""
    with db.read() as session:
        return list(
            session.exec(
                select(Conversation.agent_id, sa.func.count())
                .where(
                    col(Conversation.agent_id).is_not(None),
                    col(Conversation.load_released).is_(False),
                )
                .group_by(Conversation.agent_id)
            ).all()
        )


def test_concurrent_dispatchers_never_exceed_capacity_or_assign_twice(db: Database) -> None:
    for index in range(5):
        add_agent(db, f"agent-{index}", max_concurrent=2)
    conversations = enqueue_conversations(db, 40)
    dispatchers = [_clone(db) for _ in range(8)]
    barrier = threading.Barrier(len(dispatchers))

    def run(worker_db: Database) -> int:
        barrier.wait()
        return len(dispatch(worker_db, ["general"]))

    with ThreadPoolExecutor(len(dispatchers)) as pool:
        made = sum(pool.map(run, dispatchers))
    for worker_db in dispatchers:
        worker_db.dispose()

    with db.read() as session:
        log = list(session.exec(select(Assignment).order_by(col(Assignment.id))))
        agents = list(session.exec(select(Agent)))
        waiting = list(session.exec(select(QueueEntry)))
    assert made == len(log) == 10, "5 agents x capacity 2 = exactly 10 assignments"
    assert len({a.conversation_id for a in log}) == len(log), "a conversation assigned twice"
    per_agent = Counter(a.agent_id for a in log)
    assert all(count == 2 for count in per_agent.values()) and len(per_agent) == 5
    assert all(agent.active_count == 2 for agent in agents)
    # FIFO: the ten who queued first are the ones served, in queue order.
    assert [a.conversation_id for a in log] == conversations[:10]
    assert len(waiting) == 30


def test_fifo_holds_while_agents_free_capacity_concurrently(db: Database) -> None:
    for index in range(4):
        add_agent(db, f"agent-{index}", max_concurrent=3)
    conversations = enqueue_conversations(db, 60)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def agent_loop(agent_id: str) -> None:
        own = _clone(db)
        rng = random.Random(agent_id)
        try:
            for _ in range(200):
                dispatch(own, ["general"])
                with own.read() as session:
                    held = list(
                        session.exec(
                            select(Conversation.id).where(
                                Conversation.agent_id == agent_id,
                                col(Conversation.load_released).is_(False),
                            )
                        )
                    )
                    left = session.exec(select(QueueEntry.id)).first()
                if not held and left is None:
                    return
                if held:
                    with own.write() as session:
                        release_agent(session, rng.choice(held), utcnow())
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            own.dispose()

    samples: list[int] = []
    done = threading.Event()

    def sample_loads() -> None:
        """Watch what agents hold while it happens: never more than their capacity."""
        watcher = _clone(db)
        while not done.is_set():
            held = _held_per_agent(watcher)
            samples.extend(count for _agent, count in held)
        watcher.dispose()

    sampler = threading.Thread(target=sample_loads)
    sampler.start()
    threads = [threading.Thread(target=agent_loop, args=(f"agent-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    sampler.join()
    assert not errors, errors

    with db.read() as session:
        log = list(session.exec(select(Assignment).order_by(col(Assignment.id))))
        agents = {a.id: a for a in session.exec(select(Agent))}
    assert sorted(a.conversation_id for a in log) == sorted(conversations), "each exactly once"
    assert [a.queue_ticket for a in log] == sorted(a.queue_ticket for a in log), "FIFO broken"
    assert all(agent.active_count == 0 for agent in agents.values())
    assert max(samples) <= 3 and max(samples) == 3, "the sampler saw agents at full capacity"


def test_priority_first_then_first_come_first_served(db: Database) -> None:
    now = utcnow()
    early_low = enqueue_conversations(db, 1, priority=0, enqueued_at=now - timedelta(minutes=5))
    late_high = enqueue_conversations(db, 1, priority=10, enqueued_at=now)
    early_high = enqueue_conversations(db, 1, priority=10, enqueued_at=now - timedelta(minutes=1))
    with db.read() as session:
        positions = {
            e.conversation_id: queue_position(session, e) for e in session.exec(select(QueueEntry))
        }
    assert positions == {early_high[0]: 1, late_high[0]: 2, early_low[0]: 3}
    add_agent(db, "solo", max_concurrent=3)
    made = dispatch(db, ["general"])
    assert [m.conversation_id for m in made] == early_high + late_high + early_low


@pytest.mark.parametrize("status", ["offline", "away"])
def test_only_online_agents_of_the_group_are_assigned(db: Database, status: str) -> None:
    add_agent(db, "elsewhere", skill_groups=["after_sales"], max_concurrent=5)
    add_agent(db, "resting", max_concurrent=5, status=status)
    enqueue_conversations(db, 2)
    assert dispatch(db, ["general"]) == []
    add_agent(db, "ready", max_concurrent=1)
    made = dispatch(db, ["general"])
    assert [m.agent_id for m in made] == ["ready"]


def test_least_loaded_then_longest_since_last_assignment(db: Database) -> None:
    add_agent(db, "busy", max_concurrent=5)
    add_agent(db, "fresh", max_concurrent=5)
    with db.write() as session:
        busy = session.get(Agent, "busy")
        assert busy is not None
        busy.active_count = 1
        session.add(busy)
    enqueue_conversations(db, 3)
    made = dispatch(db, ["general"])
    # fresh (0 load) first; then both at 1: busy has never been assigned → busy; then fresh.
    assert [m.agent_id for m in made] == ["fresh", "busy", "fresh"]


def test_release_is_counted_once(db: Database) -> None:
    add_agent(db, "alice", max_concurrent=2)
    closing, staying = enqueue_conversations(db, 2)
    assert [(m.conversation_id, m.agent_id) for m in dispatch(db, ["general"])] == [
        (closing, "alice"),
        (staying, "alice"),
    ]
    # Her other conversation keeps its seat: a counter that only stops at zero would not.
    for _ in range(3):  # an activity may run more than once
        with db.write() as session:
            release_agent(session, closing, utcnow())
    with db.read() as session:
        agent = session.get(Agent, "alice")
        assert agent is not None and agent.active_count == 1


def test_a_head_only_skipped_agents_have_room_for_does_not_hold_up_the_queue(
    db: Database,
) -> None:
    add_agent(db, "alice", max_concurrent=3)
    add_agent(db, "bob", max_concurrent=1, active_count=1)  # online, full for now
    unanswered, next_one, last_one = enqueue_conversations(db, 3)
    skip_agent(db, unanswered, "alice")  # she let it go without a reply before
    made = dispatch(db, ["general"])
    assert [(m.conversation_id, m.agent_id) for m in made] == [
        (next_one, "alice"),
        (last_one, "alice"),
    ]
    with db.read() as session:
        waiting = session.exec(select(QueueEntry.conversation_id)).all()
    assert waiting == [unanswered]
    with db.write() as session:  # bob's other conversation ends
        session.execute(sa.update(Agent).where(col(Agent.id) == "bob").values(active_count=0))
    assert [(m.conversation_id, m.agent_id) for m in dispatch(db, ["general"])] == [
        (unanswered, "bob")
    ]


@pytest.mark.parametrize(
    ("others", "served_by"),
    [
        ("online", None),  # bob could serve it once he has room: it waits for him
        ("away", "alice"),  # nobody else online: the agent it skips rather than nobody
        ("offline", "alice"),
    ],
)
def test_a_skipped_agent_is_passed_over_only_while_another_of_the_group_is_online(
    db: Database, others: str, served_by: str | None
) -> None:
    add_agent(db, "alice", max_concurrent=2)
    add_agent(db, "bob", max_concurrent=1, active_count=1, status=others)
    add_agent(db, "elsewhere", max_concurrent=5, skill_groups=["after_sales"])  # another group
    [unanswered] = enqueue_conversations(db, 1)
    skip_agent(db, unanswered, "alice")
    made = dispatch(db, ["general"])
    assert [(m.conversation_id, m.agent_id) for m in made] == (
        [(unanswered, served_by)] if served_by else []
    )


def test_the_skip_lapses_when_the_last_other_agent_goes_offline(db: Database) -> None:
    add_agent(db, "alice", max_concurrent=1)
    add_agent(db, "bob", max_concurrent=1, active_count=1)
    [unanswered] = enqueue_conversations(db, 1)
    skip_agent(db, unanswered, "alice")
    assert dispatch(db, ["general"]) == []
    with db.write() as session:
        session.execute(sa.update(Agent).where(col(Agent.id) == "bob").values(status="offline"))
    assert [m.agent_id for m in dispatch(db, ["general"])] == ["alice"]


def test_a_conversation_that_skips_everyone_online_goes_to_one_of_them(db: Database) -> None:
    add_agent(db, "alice", max_concurrent=1)
    add_agent(db, "bob", max_concurrent=1)
    add_agent(db, "carol", max_concurrent=1, status="away")
    [twice_unanswered] = enqueue_conversations(db, 1)
    for agent_id in ("alice", "bob"):
        skip_agent(db, twice_unanswered, agent_id)
    made = dispatch(db, ["general"])
    assert [(m.conversation_id, m.agent_id) for m in made] == [(twice_unanswered, "alice")]


def test_nobody_is_served_before_an_earlier_arrival_still_joining(db: Database) -> None:
    """A joins the queue first but its transaction is still open when B joins and an agent
    is free: B must not be served ahead of A (enqueue times follow commit order)."""
    add_agent(db, "wide", max_concurrent=10)
    a_joined, release_a = threading.Event(), threading.Event()
    ids: dict[str, str] = {}

    def join_a() -> None:
        own = _clone(db)
        with own.write() as session:
            conversation = new_conversation(session)
            join_queue(session, conversation, skill_group="general", priority=0)
            ids["a"] = conversation.id
            a_joined.set()
            release_a.wait(5)  # the rest of A's transaction is slow
        own.dispose()

    def join_b() -> None:
        own = _clone(db)
        ids["b"] = enqueue_conversations(own, 1)[0]
        own.dispose()

    def serve() -> None:
        own = _clone(db)
        dispatch(own, ["general"])
        own.dispose()

    threads = [threading.Thread(target=join_a)]
    threads[0].start()
    assert a_joined.wait(5)
    for target in (join_b, serve):
        threads.append(threading.Thread(target=target))
        threads[-1].start()
        time.sleep(0.3)  # B commits (or waits for A); the agent looks for work
    release_a.set()
    for thread in threads:
        thread.join(10)
    dispatch(db, ["general"])

    with db.read() as session:
        log = list(session.exec(select(Assignment).order_by(col(Assignment.id))))
    assert [a.conversation_id for a in log] == [ids["a"], ids["b"]]


def test_several_groups_sharing_agents_with_priorities_under_200_arrivals(db: Database) -> None:
    """Invariants 3 and 4 across groups: 200 arrive at once in three groups with mixed
    priorities; agents serving several groups work through them concurrently."""
    groups = ["general", "after_sales", "vip"]
    add_agent(db, "all-rounder", max_concurrent=3, skill_groups=groups)
    add_agent(db, "general-1", max_concurrent=2, skill_groups=["general"])
    add_agent(db, "returns", max_concurrent=2, skill_groups=["after_sales", "general"])
    add_agent(db, "vip-desk", max_concurrent=2, skill_groups=["vip", "after_sales"])
    for agent_id in ("all-rounder", "general-1", "returns", "vip-desk"):
        with db.write() as session:
            agent = session.get(Agent, agent_id)
            assert agent is not None
            agent.status = "offline"  # nobody serves until everyone has arrived
            session.add(agent)
    barrier = threading.Barrier(20)

    def arrive(index: int) -> None:
        own = _clone(db)
        rng = random.Random(index)
        barrier.wait()
        for _ in range(10):
            enqueue_conversations(
                own, 1, skill_group=rng.choice(groups), priority=rng.choice([0, 0, 5, 10])
            )
        own.dispose()

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(arrive, range(20)))
    with db.write() as session:
        session.execute(sa.update(Agent).values(status="online"))

    errors: list[BaseException] = []
    capacities: dict[str, int] = {}
    with db.read() as session:
        for agent in session.exec(select(Agent)):
            capacities[agent.id] = agent.max_concurrent
    overloads: list[tuple[str, int]] = []
    done = threading.Event()

    def watch() -> None:
        watcher = _clone(db)
        while not done.is_set():
            held = _held_per_agent(watcher)
            overloads.extend((a, n) for a, n in held if a and n > capacities[a])
        watcher.dispose()

    def work(agent_id: str) -> None:
        own = _clone(db)
        rng = random.Random(agent_id)
        try:
            with own.read() as session:
                mine = list(
                    session.exec(
                        select(AgentSkill.skill_group).where(AgentSkill.agent_id == agent_id)
                    )
                )
            for _ in range(1000):
                dispatch(own, mine)
                with own.read() as session:
                    held = list(
                        session.exec(
                            select(Conversation.id).where(
                                Conversation.agent_id == agent_id,
                                col(Conversation.load_released).is_(False),
                            )
                        )
                    )
                    left = session.exec(
                        select(QueueEntry.id).where(col(QueueEntry.skill_group).in_(mine))
                    ).first()
                if not held and left is None:
                    return
                if held:
                    with own.write() as session:
                        release_agent(session, rng.choice(held), utcnow())
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.dispose()

    watcher = threading.Thread(target=watch)
    watcher.start()
    agents = [threading.Thread(target=work, args=(a,)) for a in capacities]
    for thread in agents:
        thread.start()
    for thread in agents:
        thread.join()
    done.set()
    watcher.join()
    assert not errors, errors
    assert not overloads, overloads[:5]

    with db.read() as session:
        log = list(session.exec(select(Assignment).order_by(col(Assignment.id))))
    assert len(log) == 200 and len({a.conversation_id for a in log}) == 200
    for group in groups:
        served = [
            (-a.priority, a.enqueued_at, a.queue_ticket) for a in log if a.skill_group == group
        ]
        assert served == sorted(served), f"{group}: served out of priority/FIFO order"


def test_a_supervisor_is_never_assigned_a_conversation(db: Database) -> None:
    add_agent(db, "sue", max_concurrent=5, role="supervisor")
    [waiting] = enqueue_conversations(db, 1)
    assert dispatch(db, ["general"]) == []
    add_agent(db, "alice", max_concurrent=1)
    assert [(m.conversation_id, m.agent_id) for m in dispatch(db, ["general"])] == [
        (waiting, "alice")
    ]


def _positions(db: Database, conversation_ids: list[str]) -> list[int | None]:
    with db.read() as session:
        entries = {
            entry.conversation_id: entry
            for entry in session.exec(
                select(QueueEntry).where(col(QueueEntry.conversation_id).in_(conversation_ids))
            )
        }
        return [
            queue_position(session, entries[cid]) if cid in entries else None
            for cid in conversation_ids
        ]


def test_a_supervisor_assigns_a_waiting_conversation_and_the_rest_keep_their_order(
    db: Database,
) -> None:
    first, second, third = enqueue_conversations(db, 3)
    add_agent(db, "alice", max_concurrent=1)  # online, with room: no dispatcher ran
    add_agent(db, "bob", max_concurrent=1, skill_groups=["after_sales"])
    add_agent(db, "resting", max_concurrent=1, status="away")
    add_agent(db, "full", max_concurrent=1, active_count=1)
    add_agent(db, "sue", max_concurrent=1, role="supervisor")
    refused = {
        "bob": "not an agent of general",
        "resting": "not online with room",
        "full": "not online with room",
    }
    for agent_id, why in refused.items():
        with pytest.raises(CannotTake, match=why):
            assign_to(db, conversation_id=second, agent_id=agent_id)
    for nobody in ("sue", "nobody"):
        with pytest.raises(LookupError):
            assign_to(db, conversation_id=second, agent_id=nobody)
    assert _positions(db, [first, second, third]) == [1, 2, 3]

    made = assign_to(db, conversation_id=second, agent_id="alice")
    assert (made.conversation_id, made.agent_id, made.skill_group) == (second, "alice", "general")
    assert _positions(db, [first, second, third]) == [1, None, 2]
    with db.read() as session:
        conversation = session.get(Conversation, second)
        alice = session.get(Agent, "alice")
        logged = session.exec(select(Assignment).where(Assignment.conversation_id == second)).one()
    assert conversation is not None and conversation.agent_id == "alice"
    assert alice is not None and alice.active_count == 1
    assert (logged.agent_id, logged.skill_group) == ("alice", "general")
    with pytest.raises(NotWaiting):
        assign_to(db, conversation_id=second, agent_id="alice")
    # Alice is full now: the head waits for someone with room.
    with pytest.raises(CannotTake, match="not online with room"):
        assign_to(db, conversation_id=first, agent_id="alice")
