"""Storing a message: the message row and its `message.created` event in one transaction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.types import ConversationState, EventType
from store.db import Database
from store.events import append_event
from store.models import Conversation, Message, utcnow

# Messages a sender may post in one conversation within this window (the API's rate limit).
RATE_WINDOW = timedelta(minutes=1)


class ConversationClosed(Exception):
    pass


class RateLimited(Exception):
    """The sender posted its limit of messages in this conversation within RATE_WINDOW."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class StoredMessage:
    message: Message
    created: bool


def _find(
    db: Database, conversation_id: str, sender_id: str, client_message_id: str
) -> Message | None:
    with db.read() as session:
        return session.exec(
            select(Message).where(
                Message.conversation_id == conversation_id,
                Message.sender_id == sender_id,
                Message.client_message_id == client_message_id,
            )
        ).first()


def store_message(
    db: Database,
    *,
    conversation_id: str,
    sender_role: str,
    sender_id: str,
    client_message_id: str,
    type: str,
    content: str,
    max_per_minute: int | None = None,
) -> StoredMessage:
    """Store once per (sender, client_message_id); a repeat returns the original message.

    A new message beyond `max_per_minute` from this sender in this conversation raises
    RateLimited. It is counted in the database, under the conversation's row lock (the write
    transaction on SQLite), so the limit holds across any number of API processes."""
    if (existing := _find(db, conversation_id, sender_id, client_message_id)) is not None:
        return StoredMessage(existing, created=False)
    try:
        with db.write() as session:
            state = session.exec(
                select(Conversation.state)
                .where(Conversation.id == conversation_id)
                .with_for_update()
            ).one()
            if state == ConversationState.CLOSED:
                raise ConversationClosed(conversation_id)
            if max_per_minute is not None:
                _check_rate(session, conversation_id, sender_id, max_per_minute)
            event = append_event(
                session,
                conversation_id=conversation_id,
                type=EventType.MESSAGE_CREATED,
                data={
                    "sender_role": sender_role,
                    "sender_id": sender_id,
                    "client_message_id": client_message_id,
                    "message_type": type,
                    "content": content,
                },
            )
            message = Message(
                conversation_id=conversation_id,
                seq=event.seq,
                sender_role=sender_role,
                sender_id=sender_id,
                client_message_id=client_message_id,
                type=type,
                content=content,
                created_at=event.at,
            )
            session.add(message)
        return StoredMessage(message, created=True)
    except sa.exc.IntegrityError:
        # The same client_message_id raced in on another request: that one is the original.
        original = _find(db, conversation_id, sender_id, client_message_id)
        if original is None:
            raise
        return StoredMessage(original, created=False)


def _check_rate(session: Session, conversation_id: str, sender_id: str, limit: int) -> None:
    now = utcnow()
    recent, oldest = session.execute(
        sa.select(sa.func.count(), sa.func.min(col(Message.created_at))).where(
            col(Message.conversation_id) == conversation_id,  # indexed
            col(Message.sender_id) == sender_id,
            col(Message.created_at) > now - RATE_WINDOW,
        )
    ).one()
    if recent >= limit:
        # The oldest of them leaves the window first: then there is room for one more.
        frees_in = (oldest + RATE_WINDOW - now).total_seconds()
        raise RateLimited(retry_after=max(1, math.ceil(frees_in)))


def mark_acknowledged(db: Database, message_id: int) -> None:
    with db.write() as session:
        session.execute(
            sa.update(Message).where(col(Message.id) == message_id).values(acknowledged=True)
        )
