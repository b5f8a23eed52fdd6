"""The one event writer: every event of a conversation gets the next seq, without gaps, and
goes into the feed of the agent who holds the conversation (each agent's feed has its own
gapless seq, so the agent's stream resumes from one number)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from store.models import AgentEvent, AgentFeed, Conversation, Event, utcnow

NOTIFY_CHANNEL = "switchboard_events"


class ConversationNotFound(LookupError):
    pass


def agent_stream_key(agent_id: str) -> str:
    """What wakes an agent's streams (a conversation's streams are woken by its id)."""
    return f"agent:{agent_id}"


def next_seq(session: Session, conversation_id: str) -> tuple[int, str | None]:
    """Hand out the next seq, and say who holds the conversation at this point of the
    transaction. The row lock taken here orders concurrent writers."""
    row = session.execute(
        sa.update(Conversation)
        .where(col(Conversation.id) == conversation_id)
        .values(last_seq=col(Conversation.last_seq) + 1)
        .returning(col(Conversation.last_seq), col(Conversation.agent_id))
    ).one_or_none()
    if row is None:
        raise ConversationNotFound(conversation_id)
    return row[0], row[1]


def next_agent_seq(session: Session, agent_id: str) -> int:
    """The next seq of an agent's feed. The feed row is the last lock any writer takes."""
    insert = (postgresql if _dialect(session) == "postgresql" else sqlite).insert(AgentFeed)
    return session.execute(
        insert.values(agent_id=agent_id, last_seq=1)
        .on_conflict_do_update(
            index_elements=[col(AgentFeed.agent_id)],
            set_={"last_seq": col(AgentFeed.last_seq) + 1},
        )
        .returning(col(AgentFeed.last_seq))
    ).scalar_one()


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def append_event(
    session: Session,
    *,
    conversation_id: str,
    type: str,
    data: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    at: datetime | None = None,
    also_to_agents: Iterable[str | None] = (),
) -> Event:
    """Write one event inside the caller's transaction; with a dedupe_key, at most once.

    It goes into the feed of the conversation's agent as this transaction left it, and of
    `also_to_agents` (an agent who just lost the conversation: transfer out, requeue)."""
    if dedupe_key is not None:
        existing = session.exec(
            select(Event).where(
                Event.conversation_id == conversation_id, Event.dedupe_key == dedupe_key
            )
        ).first()
        if existing is not None:
            return existing
    session.flush()  # pending changes first: an agent set on the conversation counts
    seq, holder = next_seq(session, conversation_id)
    event = Event(
        conversation_id=conversation_id,
        seq=seq,
        type=type,
        data=data or {},
        dedupe_key=dedupe_key,
        at=at or utcnow(),
    )
    session.add(event)
    session.flush()
    assert event.id is not None
    agents = sorted({agent for agent in (holder, *also_to_agents) if agent is not None})
    for agent_id in agents:
        session.add(
            AgentEvent(agent_id=agent_id, seq=next_agent_seq(session, agent_id), event_id=event.id)
        )
    if _dialect(session) == "postgresql":
        # Delivered at commit to every process LISTENing (api/streams.py): wakes streams.
        for key in (conversation_id, *map(agent_stream_key, agents)):
            session.execute(
                sa.text("SELECT pg_notify(:channel, :key)"),
                {"channel": NOTIFY_CHANNEL, "key": key},
            )
    return event


def events_after(
    session: Session, *, conversation_id: str, after_seq: int, limit: int
) -> list[Event]:
    """A page of a conversation's events, in seq order."""
    return list(
        session.exec(
            select(Event)
            .where(Event.conversation_id == conversation_id, Event.seq > after_seq)
            .order_by(Event.seq)  # type: ignore[arg-type]
            .limit(limit)
        )
    )


def agent_events_after(
    session: Session, *, agent_id: str, after_seq: int, limit: int
) -> list[tuple[int, Event]]:
    """A page of an agent's feed, in its seq order: (feed seq, the conversation's event)."""
    rows = session.exec(
        select(AgentEvent.seq, Event)
        .join(Event, col(Event.id) == col(AgentEvent.event_id))
        .where(AgentEvent.agent_id == agent_id, col(AgentEvent.seq) > after_seq)
        .order_by(col(AgentEvent.seq))
        .limit(limit)
    )
    return [(seq, event) for seq, event in rows]


def agent_feed_seq(session: Session, agent_id: str) -> int:
    """The newest seq of the agent's feed (0 before the first)."""
    feed = session.get(AgentFeed, agent_id)
    return 0 if feed is None else feed.last_seq
