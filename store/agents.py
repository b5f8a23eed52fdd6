"""Agents: created by an admin, their status, their conversations and their feed."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.types import AgentStatus, ConversationState
from store.assignment import agent_skill_groups
from store.conversations import ConversationView, view_in
from store.db import Database
from store.events import EventView, agent_events_after, agent_feed_seq
from store.models import Agent, AgentSkill, Conversation


class AgentNotFound(LookupError):
    pass


class AgentExists(Exception):
    """An agent with this id exists already."""


@dataclass(frozen=True)
class AgentView:
    agent: Agent
    skill_groups: list[str]  # sorted
    feed_seq: int  # the newest seq of the agent's feed (0 before the first)


def _agent_view(session: Session, agent: Agent) -> AgentView:
    return AgentView(
        agent=agent,
        skill_groups=sorted(agent_skill_groups(session, agent.id)),
        feed_seq=agent_feed_seq(session, agent.id),
    )


def newest_feed_seq(db: Database, *, agent_id: str) -> int:
    """The newest seq of the agent's feed (0 before the first)."""
    with db.read() as session:
        return agent_feed_seq(session, agent_id)


def find_agent(db: Database, *, agent_id: str) -> Agent | None:
    with db.read() as session:
        return session.get(Agent, agent_id)


def skill_groups_of(db: Database, *, agent_id: str) -> list[str]:
    """The agent's skill groups (none for an unknown agent)."""
    with db.read() as session:
        return agent_skill_groups(session, agent_id)


def agent_with_token(db: Database, *, token_hash: str) -> str | None:
    """The id of the agent whose token hashes to `token_hash`, if any and not disabled."""
    with db.read() as session:
        return session.exec(
            select(Agent.id).where(Agent.token_hash == token_hash, col(Agent.disabled).is_(False))
        ).first()


def register_agent(
    db: Database,
    *,
    agent_id: str,
    name: str,
    token_hash: str,
    max_concurrent: int,
    skill_groups: list[str],
) -> AgentView:
    """A new agent, offline, in these skill groups. An id taken → AgentExists."""
    try:
        with db.write() as session:
            agent = Agent(
                id=agent_id, name=name, token_hash=token_hash, max_concurrent=max_concurrent
            )
            session.add(agent)
            session.flush()
            session.add_all(
                AgentSkill(agent_id=agent_id, skill_group=group)
                for group in sorted(set(skill_groups))
            )
            session.flush()
            return _agent_view(session, agent)
    except sa.exc.IntegrityError:
        raise AgentExists(agent_id) from None


def view_agent(db: Database, *, agent_id: str) -> AgentView:
    """Unknown → AgentNotFound."""
    with db.read() as session:
        agent = session.get(Agent, agent_id)
        if agent is None:
            raise AgentNotFound(agent_id)
        return _agent_view(session, agent)


def change_agent_status(db: Database, *, agent_id: str, status: AgentStatus) -> list[str]:
    """Change the agent's status; returns the agent's skill groups (where an agent who comes
    online may take waiting conversations). Unknown → AgentNotFound."""
    with db.write() as session:
        changed = session.execute(
            sa.update(Agent).where(col(Agent.id) == agent_id).values(status=status)
        ).rowcount
        if not changed:
            raise AgentNotFound(agent_id)
        return agent_skill_groups(session, agent_id)


def agent_conversations(
    db: Database, *, agent_id: str, state: ConversationState, limit: int
) -> list[ConversationView]:
    """The agent's conversations in this state, the most recently assigned first."""
    with db.read() as session:
        conversations = session.exec(
            select(Conversation)
            .where(Conversation.agent_id == agent_id, Conversation.state == state)
            .order_by(col(Conversation.assigned_at).desc())
            .limit(limit)
        ).all()
        return [view_in(session, conversation) for conversation in conversations]


def agent_feed(
    db: Database, *, agent_id: str, after_seq: int, limit: int
) -> list[tuple[int, EventView]]:
    """Up to `limit` entries of the agent's feed after `after_seq`: (feed seq, event)."""
    with db.read() as session:
        return agent_events_after(session, agent_id=agent_id, after_seq=after_seq, limit=limit)
