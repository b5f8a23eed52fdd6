"""The one event writer: every event of a conversation gets the next seq, without gaps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from store.models import Conversation, Event, utcnow


class ConversationNotFound(LookupError):
    pass


def next_seq(session: Session, conversation_id: str) -> int:
    """Hand out the next seq. The row lock taken here orders concurrent writers."""
    seq = session.execute(
        sa.update(Conversation)
        .where(Conversation.id == conversation_id)  # type: ignore[arg-type]
        .values(last_seq=Conversation.last_seq + 1)
        .returning(Conversation.last_seq)
    ).scalar_one_or_none()
    if seq is None:
        raise ConversationNotFound(conversation_id)
    return seq


def append_event(
    session: Session,
    *,
    conversation_id: str,
    type: str,
    data: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> Event:
    """Write one event inside the caller's transaction; with a dedupe_key, at most once."""
    if dedupe_key is not None:
        existing = session.exec(
            select(Event).where(
                Event.conversation_id == conversation_id, Event.dedupe_key == dedupe_key
            )
        ).first()
        if existing is not None:
            return existing
    event = Event(
        conversation_id=conversation_id,
        seq=next_seq(session, conversation_id),
        type=type,
        data=data or {},
        dedupe_key=dedupe_key,
        at=at or utcnow(),
    )
    session.add(event)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Delivered at commit to every process LISTENing (api/streams.py): wakes streams.
        session.execute(
            sa.text("SELECT pg_notify('switchboard_events', :conversation_id)"),
            {"conversation_id": conversation_id},
        )
    return event


def events_after(
    session: Session, *, conversation_id: str, after_seq: int, limit: int
) -> list[Event]:
    return list(
        session.exec(
            select(Event)
            .where(Event.conversation_id == conversation_id, Event.seq > after_seq)
            .order_by(Event.seq)  # type: ignore[arg-type]
            .limit(limit)
        )
    )
