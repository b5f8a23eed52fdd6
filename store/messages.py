"""Storing a message: the message row and its `message.created` event in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select

from domain.types import ConversationState, EventType
from store.db import Database
from store.events import append_event
from store.models import Conversation, Message


class ConversationClosed(Exception):
    pass


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
) -> StoredMessage:
    """Store once per (sender, client_message_id); a repeat returns the original message."""
    if (existing := _find(db, conversation_id, sender_id, client_message_id)) is not None:
        return StoredMessage(existing, created=False)
    try:
        with db.write() as session:
            state = session.exec(
                select(Conversation.state).where(Conversation.id == conversation_id)
            ).one()
            if state == ConversationState.CLOSED:
                raise ConversationClosed(conversation_id)
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


def mark_acknowledged(db: Database, message_id: int) -> None:
    with db.write() as session:
        session.execute(
            sa.update(Message).where(col(Message.id) == message_id).values(acknowledged=True)
        )
