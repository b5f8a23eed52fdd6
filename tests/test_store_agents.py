"""store/agents.py on SQLite and PostgreSQL, without Temporal: registering an agent, finding one
by id or token, status changes, the agent's conversations and feed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.types import AgentStatus, ConversationState, EventType
from store.agents import (
    AgentExists,
    AgentNotFound,
    TokenHolder,
    agent_conversations,
    agent_feed,
    agent_with_token,
    change_agent_status,
    find_agent,
    register_agent,
    view_agent,
)
from store.db import Database
from store.events import append_event
from store.models import Conversation, utcnow
from tests.support.data import add_agent, enqueue_conversations, new_conversation


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
