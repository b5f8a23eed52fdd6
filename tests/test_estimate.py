"""The estimated wait (domain/queueing.py, store/estimate.py, the announcements of
store/assignment.py): Erlang C against known values, the wait at a known place against Erlang
C's mean, the cold start from the policy, never null while an agent of the group is online,
null with nobody online, and a new `queue.position_changed` when the estimate moves by more
than its share. The database parts on SQLite and PostgreSQL; the last one end to end."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col

from domain.queueing import (
    ESTIMATE_MOVED_SHARE,
    PRIOR_RELEASES,
    erlang_c,
    mmc_mean_wait,
    moved,
    service_rate,
    wait_at_position,
)
from domain.types import AgentStatus, EventType
from store.agents import change_agent_status
from store.assignment import announce
from store.conversations import conversation_events, view_conversation
from store.db import Database
from store.estimate import group_pace
from store.models import Agent, Assignment, utcnow
from tests.support.api import eventually
from tests.support.data import add_agent, enqueue_conversations, new_conversation
from tests.support.system import StartSystem, System

# --- the arithmetic -----------------------------------------------------------------------


def _erlang_c_by_its_sum(seats: int, load: float) -> float:
    """The textbook formula, term by term: an independent check of the recursion."""
    top = load**seats / math.factorial(seats) * seats / (seats - load)
    return top / (sum(load**k / math.factorial(k) for k in range(seats)) + top)


@pytest.mark.parametrize(
    ("seats", "load", "known"),
    [
        (1, 0.5, 0.5),  # M/M/1: an arrival waits with probability rho
        (2, 1.0, 1 / 3),
        (3, 2.0, 4 / 9),
        (10, 8.0, 0.40918),  # the call-centre tables' figure for 10 agents, 8 Erlangs
    ],
)
def test_erlang_c_matches_known_values(seats: int, load: float, known: float) -> None:
    assert erlang_c(seats, load) == pytest.approx(known, abs=5e-5)
    assert erlang_c(seats, load) == pytest.approx(_erlang_c_by_its_sum(seats, load), rel=1e-9)


def test_erlang_c_at_the_edges() -> None:
    assert erlang_c(4, 0.0) == 0.0
    assert erlang_c(4, 4.0) == 1.0  # the queue grows without end
    assert mmc_mean_wait(5.0, 1.0, 5) == math.inf
    # 3 seats, λ = 2, μ = 1: C = 4/9, mean wait C / (cμ - λ) = 4/9 s.
    assert mmc_mean_wait(2.0, 1.0, 3) == pytest.approx(4 / 9)
    with pytest.raises(ValueError):
        erlang_c(0, 1.0)


@pytest.mark.parametrize(("seats", "rho"), [(1, 0.7), (5, 0.85), (12, 0.95)])
def test_the_wait_at_a_known_place_averages_to_erlang_cs_mean(seats: int, rho: float) -> None:
    """Arrivals see the stationary distribution (PASTA): one finding n ≥ c in the system takes
    place n - c + 1 and is told wait_at_position for it. Averaged, that is Erlang C's mean: the
    estimator is unbiased for an M/M/c queue."""
    mu = 1 / 30  # 30 s handling
    lam = rho * seats * mu
    load = lam / mu
    p_full = erlang_c(seats, load) * (1 - rho)  # P(n = c) for an arrival, from Erlang C
    told = sum(
        p_full
        * rho ** (n - seats)
        * wait_at_position(n - seats + 1, seats=seats, free_seats=0, rate_per_seat=mu)
        for n in range(seats, seats + 5000)
    )
    assert told == pytest.approx(mmc_mean_wait(lam, mu, seats), rel=1e-6)


def test_free_seats_and_the_rate() -> None:
    assert wait_at_position(2, seats=4, free_seats=2, rate_per_seat=0.1) == 0.0
    assert wait_at_position(3, seats=4, free_seats=2, rate_per_seat=0.1) == pytest.approx(2.5)
    # No history: the policy's rate; much history: the group's own.
    assert service_rate(releases=0, busy_seconds=0, expected_handling_seconds=300) == 1 / 300
    assert service_rate(
        releases=1000, busy_seconds=60_000, expected_handling_seconds=300
    ) == pytest.approx(1 / 60, rel=0.02)
    assert not moved(100.0, 100.0 * (1 + ESTIMATE_MOVED_SHARE) - 1)
    assert moved(100.0, 100.0 * (1 + ESTIMATE_MOVED_SHARE) + 1)
    assert moved(100.0, None) and moved(None, 5.0) and not moved(None, None)
    assert moved(0.0, 3.0) and not moved(0.0, 0.0)


# --- from the database --------------------------------------------------------------------


def _busy(db: Database, agent_id: str) -> None:
    with db.write() as session:
        session.execute(
            sa.update(Agent)
            .where(col(Agent.id) == agent_id)
            .values(active_count=col(Agent.max_concurrent))
        )


def test_the_first_visitor_of_the_day_gets_an_estimate_from_the_policy(db: Database) -> None:
    """No history at all: two busy agents of one seat each, the policy's 4 minutes → the first
    in line waits for one of two departures at 1/240 s each: 120 s; the second 240 s."""
    add_agent(db, "alice", max_concurrent=1)
    add_agent(db, "bob", max_concurrent=1)
    _busy(db, "alice")
    _busy(db, "bob")
    first, second = enqueue_conversations(db, 2, expected_handling_time=timedelta(minutes=4))
    assert view_conversation(db, conversation_id=first).estimated_wait == 120.0
    assert view_conversation(db, conversation_id=second).estimated_wait == 240.0


def test_never_null_with_an_agent_online_and_null_with_none(db: Database) -> None:
    add_agent(db, "alice", max_concurrent=2, status=AgentStatus.AWAY)
    add_agent(db, "sue", max_concurrent=5, role="supervisor")  # never assigned: no seats
    [waiting] = enqueue_conversations(db, 1)
    assert view_conversation(db, conversation_id=waiting).estimated_wait is None

    change_agent_status(db, agent_id="alice", status=AgentStatus.ONLINE)
    # Online with room: about to be served.
    assert view_conversation(db, conversation_id=waiting).estimated_wait == 0.0
    _busy(db, "alice")
    # The policy's default (5 minutes) over two seats.
    assert view_conversation(db, conversation_id=waiting).estimated_wait == 150.0


def test_the_groups_own_history_takes_over_from_the_policy(db: Database) -> None:
    """Forty releases of 60 s each against the policy's 300 s: the rate is the releases over
    the seat time, with the policy counted as PRIOR_RELEASES releases."""
    add_agent(db, "alice", max_concurrent=1)
    _busy(db, "alice")
    now = utcnow()
    with db.write() as session:
        for n in range(40):
            conversation = new_conversation(session, state="closed", agent_id="alice")
            released = now - timedelta(seconds=60 * n + 1)
            session.add(
                Assignment(
                    conversation_id=conversation.id,
                    agent_id="alice",
                    skill_group="general",
                    enqueued_at=released - timedelta(seconds=61),
                    assigned_at=released - timedelta(seconds=60),
                    released_at=released,
                )
            )
    [waiting] = enqueue_conversations(db, 1, expected_handling_time=timedelta(seconds=300))
    with db.read() as session:
        pace = group_pace(session, "general", now)
    expected_rate = (40 + PRIOR_RELEASES) / (40 * 60 + PRIOR_RELEASES * 300)
    assert pace.rate_per_seat == pytest.approx(expected_rate, rel=1e-3)
    assert (pace.agents_online, pace.seats, pace.free_seats) == (1, 1, 0)
    estimate = view_conversation(db, conversation_id=waiting).estimated_wait
    assert estimate is not None and 70 < estimate < 80  # near the group's 60 s, not 300 s


def _told(db: Database, conversation_id: str) -> list[tuple[int, float | None]]:
    events = conversation_events(
        db, conversation_id=conversation_id, after_seq=0, limit=100, staff=False
    )
    return [
        (e.data["position"], e.data["estimated_wait"])
        for e in events
        if e.type == EventType.QUEUE_POSITION
    ]


def test_visitors_are_told_again_when_the_estimate_moves_by_more_than_its_share(
    db: Database,
) -> None:
    add_agent(db, "alice", max_concurrent=1)
    add_agent(db, "bob", max_concurrent=1)
    _busy(db, "alice")
    _busy(db, "bob")
    first, second = enqueue_conversations(db, 2, expected_handling_time=timedelta(seconds=100))
    announce(db, ["general"])
    assert _told(db, first) == [(1, 50.0)]
    assert _told(db, second) == [(2, 100.0)]

    announce(db, ["general"])  # nothing moved: nothing told
    assert _told(db, second) == [(2, 100.0)]

    # Bob leaves: the same places, twice the wait: both told again.
    change_agent_status(db, agent_id="bob", status=AgentStatus.OFFLINE)
    announce(db, ["general"])
    assert _told(db, first) == [(1, 50.0), (1, 100.0)]
    assert _told(db, second) == [(2, 100.0), (2, 200.0)]

    # A small move (one release of about the expected length, well within the share): silence.
    with db.write() as session:
        conversation = new_conversation(session, state="closed", agent_id="bob")
        session.add(
            Assignment(
                conversation_id=conversation.id,
                agent_id="bob",
                skill_group="general",
                enqueued_at=utcnow() - timedelta(seconds=95),
                assigned_at=utcnow() - timedelta(seconds=90),
                released_at=utcnow(),
            )
        )
    assert view_conversation(db, conversation_id=first).estimated_wait != 100.0
    announce(db, ["general"])
    assert _told(db, first) == [(1, 50.0), (1, 100.0)]

    # Alice leaves too: nobody online, nobody can say.
    change_agent_status(db, agent_id="alice", status=AgentStatus.OFFLINE)
    announce(db, ["general"])
    assert _told(db, first)[-1] == (1, None)
    assert view_conversation(db, conversation_id=second).estimated_wait is None


async def test_an_agent_leaving_tells_the_waiting_visitor_on_their_stream(
    time_env: object, make_system: StartSystem
) -> None:
    """End to end: the agent's status change (PUT …/status) re-estimates the queue, and the
    visitor reads the new estimate at the same place."""
    groups = '[[skill_groups]]\nname = "general"\nexpected_handling_time = "2m"\n'
    system = await make_system(time_env, groups=groups)  # type: ignore[arg-type]
    alice = await system.create_agent("alice", max_concurrent=1)
    bob = await system.create_agent("bob", max_concurrent=1)
    for _ in range(2):
        served = await system.start_conversation()
        await system.wait_for_state(*served, "active")
    cid, visitor = await system.start_conversation()
    told = await system.wait_for_event(cid, visitor, "queue.position_changed")
    # Two busy seats, the policy's 2 minutes (and the seconds the two have been served).
    assert told["data"]["position"] == 1
    assert told["data"]["estimated_wait"] == pytest.approx(60, abs=5)

    await system.set_status(bob.id, bob.token, "away")

    async def told_again() -> list[dict[str, object]] | None:
        found = [
            e["data"]
            for e in await system.events(cid, visitor)
            if e["type"] == "queue.position_changed"
        ]
        return found if len(found) > 1 else None

    found = await eventually(told_again, what="the new estimate")
    assert found[-1]["position"] == 1  # the same place, one seat fewer: twice the wait
    assert found[-1]["estimated_wait"] == pytest.approx(120, abs=10)
    view = await system.conversation(cid, visitor)
    assert view["estimated_wait"] == pytest.approx(120, abs=10)

    await system.set_status(alice.id, alice.token, "away")  # nobody online: nobody can say
    await eventually(
        lambda: _last_told_is_none(system, cid, visitor), what="no estimate with nobody online"
    )
    assert (await system.conversation(cid, visitor))["estimated_wait"] is None


async def _last_told_is_none(system: System, cid: str, visitor: str) -> bool:
    told = [e for e in await system.events(cid, visitor) if e["type"] == "queue.position_changed"]
    return told[-1]["data"]["estimated_wait"] is None
