"""store/agents.py on SQLite and PostgreSQL, without Temporal: registering an agent, finding one
by id or token, status changes, the agent's conversations and feed; an admin's changes (name,
groups, capacity), deactivation, new tokens, the list of agents."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from domain.policy import Policy
from domain.types import AgentStatus, ConversationState, EventType
from store.agents import (
    AgentDeactivated,
    AgentExists,
    AgentHoldsConversations,
    AgentNotFound,
    TokenHolder,
    agent_conversations,
    agent_feed,
    agent_with_token,
    change_agent,
    change_agent_status,
    deactivate_agent,
    find_agent,
    list_agents,
    register_agent,
    replace_agent_token,
    view_agent,
)
from store.assignment import dispatch, take_capacity
from store.db import Database
from store.events import append_event
from store.lifecycle import close_conversation
from store.models import Conversation, utcnow
from tests.support.data import (
    add_agent,
    enqueue_conversations,
    new_conversation,
    wait_until_blocked_by,
)


def test_a_registered_agent_starts_offline_with_its_groups_once(db: Database) -> None:
    view = register_agent(
        db,
        agent_id="alice",
        name="Alice",
        token_hash="h-alice",
        max_concurrent=3,
        skill_groups=["general", "after_sales", "general"],
    )
    assert view.skill_groups == ["after_sales", "general"]
    assert view.feed_seq == 0
    agent = view.agent
    assert (agent.id, agent.name, agent.status, agent.max_concurrent, agent.active_count) == (
        "alice",
        "Alice",
        AgentStatus.OFFLINE,
        3,
        0,
    )
    assert view_agent(db, agent_id="alice") == view

    with pytest.raises(AgentExists):
        register_agent(
            db,
            agent_id="alice",
            name="Another",
            token_hash="h-other",
            max_concurrent=1,
            skill_groups=["returns"],
        )
    assert view_agent(db, agent_id="alice").skill_groups == ["after_sales", "general"]


def test_an_agent_is_found_by_id_and_by_token(db: Database) -> None:
    add_agent(db, "bob", max_concurrent=1)
    found = find_agent(db, agent_id="bob")
    assert found is not None and found.id == "bob"
    assert find_agent(db, agent_id="nobody") is None
    assert agent_with_token(db, token_hash=found.token_hash) == TokenHolder("bob", "agent")
    assert agent_with_token(db, token_hash="not-a-hash") is None
    with pytest.raises(AgentNotFound):
        view_agent(db, agent_id="nobody")


def test_a_status_change_answers_the_agents_groups(db: Database) -> None:
    add_agent(db, "carol", max_concurrent=2, skill_groups=["vip", "general"], status="offline")
    groups = change_agent_status(db, agent_id="carol", status=AgentStatus.ONLINE)
    assert sorted(groups) == ["general", "vip"]
    assert view_agent(db, agent_id="carol").agent.status == AgentStatus.ONLINE
    change_agent_status(db, agent_id="carol", status=AgentStatus.AWAY)
    assert view_agent(db, agent_id="carol").agent.status == AgentStatus.AWAY
    with pytest.raises(AgentNotFound):
        change_agent_status(db, agent_id="nobody", status=AgentStatus.ONLINE)


def test_the_agents_conversations_in_a_state_newest_assignment_first(db: Database) -> None:
    add_agent(db, "dave", max_concurrent=5)
    now = utcnow()
    with db.write() as session:
        older, newer, newest = (
            new_conversation(
                session, state="active", agent_id="dave", assigned_at=now - timedelta(minutes=age)
            ).id
            for age in (3, 2, 1)
        )
        closed = new_conversation(
            session, state="closed", agent_id="dave", assigned_at=now, open_customer_key=None
        ).id
        new_conversation(session, state="active", agent_id="erin", assigned_at=now)

    active = agent_conversations(db, agent_id="dave", state=ConversationState.ACTIVE, limit=10)
    assert [view.conversation.id for view in active] == [newest, newer, older]
    assert all(view.queue_position is None for view in active)
    limited = agent_conversations(db, agent_id="dave", state=ConversationState.ACTIVE, limit=2)
    assert [view.conversation.id for view in limited] == [newest, newer]
    assert [
        view.conversation.id
        for view in agent_conversations(
            db, agent_id="dave", state=ConversationState.CLOSED, limit=10
        )
    ] == [closed]
    assert (
        agent_conversations(db, agent_id="nobody", state=ConversationState.ACTIVE, limit=10) == []
    )


def test_the_agents_feed_in_feed_order_after_a_seq(db: Database) -> None:
    add_agent(db, "frank", max_concurrent=5)
    held, other = enqueue_conversations(db, 2)
    with db.write() as session:
        session.get_one(Conversation, held).agent_id = "frank"
    with db.write() as session:
        for n in range(3):
            for conversation_id in (held, other):
                append_event(
                    session,
                    conversation_id=conversation_id,
                    type=EventType.MESSAGE_CREATED,
                    data={"n": n},
                )

    feed = agent_feed(db, agent_id="frank", after_seq=0, limit=10)
    assert [(seq, event.conversation_id, event.data["n"]) for seq, event in feed] == [
        (1, held, 0),
        (2, held, 1),
        (3, held, 2),
    ]
    assert [seq for seq, _event in agent_feed(db, agent_id="frank", after_seq=1, limit=1)] == [2]
    assert view_agent(db, agent_id="frank").feed_seq == 3
    assert agent_feed(db, agent_id="frank", after_seq=3, limit=10) == []


def test_a_supervisors_token_carries_the_groups_they_oversee(db: Database) -> None:
    register_agent(
        db,
        agent_id="sue",
        name="Sue",
        token_hash="h-sue",
        max_concurrent=1,
        skill_groups=["vip", "general"],
        role="supervisor",
    )
    assert agent_with_token(db, token_hash="h-sue") == TokenHolder(
        "sue", "supervisor", frozenset({"general", "vip"})
    )


def _held(db: Database, agent_id: str) -> set[str]:
    """The conversations assigned to the agent (in the database) and not closed."""
    with db.read() as session:
        return {
            conversation.id
            for conversation in session.exec(
                select(Conversation).where(
                    Conversation.agent_id == agent_id, Conversation.state != "closed"
                )
            )
        }


def _close(db: Database, conversation_id: str) -> None:
    close_conversation(
        db=db, policy=Policy(), conversation_id=conversation_id, reason="agent_closed"
    )


def test_a_changed_agent_keeps_what_they_hold_and_takes_only_what_fits(db: Database) -> None:
    add_agent(db, "gina", max_concurrent=3, skill_groups=["general", "vip"])
    waiting = enqueue_conversations(db, 5)
    assert len(dispatch(db, ["general"])) == 3
    held = _held(db, "gina")

    lowered = change_agent(db, agent_id="gina", max_concurrent=1, name="Gina B.")
    assert (lowered.agent.name, lowered.agent.max_concurrent, lowered.agent.active_count) == (
        "Gina B.",
        1,
        3,
    )
    assert lowered.skill_groups == ["general", "vip"]  # not given: unchanged
    assert _held(db, "gina") == held, "a lower capacity drops nothing"
    # Closing one leaves a load of 2, still not below 1: nothing new.
    _close(db, sorted(held)[0])
    assert dispatch(db, ["general"]) == []
    for conversation_id in sorted(held)[1:]:
        _close(db, conversation_id)
    # Below the capacity again: one, and only one.
    [assigned] = dispatch(db, ["general"])
    assert (assigned.agent_id, assigned.conversation_id) == ("gina", waiting[3])
    assert dispatch(db, ["general"]) == []

    regrouped = change_agent(db, agent_id="gina", skill_groups=["after_sales", "general"])
    assert regrouped.skill_groups == ["after_sales", "general"]
    assert view_agent(db, agent_id="gina") == regrouped
    with pytest.raises(AgentNotFound):
        change_agent(db, agent_id="nobody", name="Nobody")


def test_an_agent_holding_conversations_is_not_deactivated(db: Database) -> None:
    add_agent(db, "hank", max_concurrent=2)
    enqueue_conversations(db, 2)
    dispatch(db, ["general"])  # assigned in the database, queued still for their workflows
    with pytest.raises(AgentHoldsConversations) as refused:
        deactivate_agent(db, agent_id="hank")
    assert refused.value.held == 2
    agent = view_agent(db, agent_id="hank").agent
    assert (agent.disabled, agent.status) == (False, AgentStatus.ONLINE)

    first, _second = sorted(_held(db, "hank"))
    _close(db, first)
    with pytest.raises(AgentHoldsConversations) as refused:
        deactivate_agent(db, agent_id="hank")
    assert refused.value.held == 1  # a closed one is not held
    with pytest.raises(AgentNotFound):
        deactivate_agent(db, agent_id="nobody")


def test_a_deactivated_agent_is_offline_refused_and_never_assigned(db: Database) -> None:
    add_agent(db, "iris", max_concurrent=2)
    add_agent(db, "jack", max_concurrent=2, status="offline")
    token_hash = find_agent(db, agent_id="iris").token_hash  # type: ignore[union-attr]
    view = deactivate_agent(db, agent_id="iris")
    assert (view.agent.disabled, view.agent.status) == (True, AgentStatus.OFFLINE)
    assert deactivate_agent(db, agent_id="iris") == view  # again: nothing more to do
    assert agent_with_token(db, token_hash=token_hash) is None
    with pytest.raises(AgentDeactivated):
        change_agent_status(db, agent_id="iris", status=AgentStatus.ONLINE)
    enqueue_conversations(db, 1)
    assert dispatch(db, ["general"]) == []
    assert [v.agent.id for v in list_agents(db, include_inactive=False, after=None, limit=10)] == [
        "jack"
    ]
    everyone = list_agents(db, include_inactive=True, after=None, limit=10)
    assert [(v.agent.id, v.agent.disabled) for v in everyone] == [("iris", True), ("jack", False)]


def test_a_new_token_replaces_the_old_and_can_bring_an_agent_back(db: Database) -> None:
    add_agent(db, "kate", max_concurrent=1)
    old = find_agent(db, agent_id="kate").token_hash  # type: ignore[union-attr]
    replace_agent_token(db, agent_id="kate", token_hash="h-new")
    assert agent_with_token(db, token_hash=old) is None
    assert agent_with_token(db, token_hash="h-new") == TokenHolder("kate", "agent")

    deactivate_agent(db, agent_id="kate")
    replace_agent_token(db, agent_id="kate", token_hash="h-newer")
    assert agent_with_token(db, token_hash="h-newer") is None  # still deactivated
    back = replace_agent_token(db, agent_id="kate", token_hash="h-back", activate=True)
    assert (back.agent.disabled, back.agent.status) == (False, AgentStatus.OFFLINE)
    assert agent_with_token(db, token_hash="h-back") == TokenHolder("kate", "agent")
    assert agent_with_token(db, token_hash="h-newer") is None
    with pytest.raises(AgentNotFound):
        replace_agent_token(db, agent_id="nobody", token_hash="h")


def test_the_list_of_agents_pages_in_id_order_with_groups_and_feeds(db: Database) -> None:
    for n in range(5):
        add_agent(db, f"agent-{n}", max_concurrent=1, skill_groups=["vip", "general"][: n % 2 + 1])
    enqueue_conversations(db, 1)
    dispatch(db, ["general"])
    pages, after = [], None
    while page := list_agents(db, include_inactive=False, after=after, limit=2):
        pages.append([view.agent.id for view in page])
        after = page[-1].agent.id
    assert pages == [["agent-0", "agent-1"], ["agent-2", "agent-3"], ["agent-4"]]
    listed = {
        view.agent.id: view
        for view in list_agents(db, include_inactive=False, after=None, limit=10)
    }
    assert listed == {agent_id: view_agent(db, agent_id=agent_id) for agent_id in listed}
    assert listed["agent-1"].skill_groups == ["general", "vip"]


def test_a_deactivation_waits_for_an_assignment_in_flight_and_counts_it(
    postgres_db: Database,
) -> None:
    """An assignment that has taken the agent's capacity and not yet committed: the
    deactivation waits for it (the agent's row lock, taken before it counts) and then counts
    what it assigned. Counted first, it would deactivate an agent about to hold a conversation.
    (SQLite serialises whole write transactions: nothing can come in between there.)"""
    db = postgres_db
    add_agent(db, "lena", max_concurrent=1)
    [waiting] = enqueue_conversations(db, 1)
    outcome: dict[str, object] = {}

    def deactivate() -> None:
        try:
            outcome["deactivated"] = deactivate_agent(db, agent_id="lena")
        except AgentHoldsConversations as refused:
            outcome["refused"] = refused.held

    deactivation = threading.Thread(target=deactivate)
    with db.write() as session:
        # What an assignment writes (store/assignment.py: assign_next), held open.
        now = utcnow()
        assert take_capacity(session, "lena", now)
        session.execute(
            sa.update(Conversation)
            .where(col(Conversation.id) == waiting)
            .values(agent_id="lena", assigned_at=now)
        )
        deactivation.start()
        wait_until_blocked_by(db, session)
    deactivation.join()
    assert outcome == {"refused": 1}
    agent = view_agent(db, agent_id="lena").agent
    assert (agent.disabled, agent.active_count) == (False, 1)
    assert _held(db, "lena") == {waiting}
