"""Storing a message: the message row and its `message.created` event in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import col

from domain.types import ConversationState, EventType, Role
from store.attachments import (
    ATTACHED_TYPES,
    attachment_of_message,
    attachment_public,
    sent_with,
    take_for_message,
)
from store.db import Database, Prepared
from store.events import ConversationClosed, ConversationNotFound, write_event
from store.models import Conversation, Message, utcnow
from store.rates import check_rate

# Messages a sender may post in one conversation within this window (the API's rate limit).
RATE_WINDOW = timedelta(minutes=1)


class NotYourConversation(Exception):
    """The agent posting does not hold the conversation."""


class ConversationNotActive(Exception):
    """An agent may write only while the conversation is active."""


@dataclass(frozen=True)
class MessageRecord:
    """A stored message's row, as its columns are (no ORM object: every message makes one)."""

    id: int
    conversation_id: str
    seq: int
    sender_role: str
    sender_id: str
    client_message_id: str
    type: str
    content: str
    created_at: datetime


@dataclass(frozen=True)
class StoredMessage:
    message: MessageRecord
    created: bool
    holder: str | None = None  # the agent holding the conversation when it was stored
    attachment: dict[str, Any] | None = None  # what it carries (attachment_public)


# Built once (a statement's cache key is worked out once per object): every message runs these.
_LOCK_CONVERSATION = Prepared(
    sa.select(col(Conversation.state), col(Conversation.agent_id))
    .where(col(Conversation.id) == sa.bindparam("of_conversation"))
    .with_for_update()
)
# Whether the sender stored this message before (then _FIND reads it, times and all).
_STORED_BEFORE = Prepared(
    sa.select(col(Message.id)).where(
        col(Message.conversation_id) == sa.bindparam("of_conversation"),
        col(Message.sender_id) == sa.bindparam("of_sender"),
        col(Message.client_message_id) == sa.bindparam("of_client_message"),
    )
)
_FIND = sa.select(*Message.__table__.columns).where(  # type: ignore[attr-defined]
    col(Message.conversation_id) == sa.bindparam("of_conversation"),
    col(Message.sender_id) == sa.bindparam("of_sender"),
    col(Message.client_message_id) == sa.bindparam("of_client_message"),
)
_INSERT_MESSAGE = sa.insert(Message).returning(col(Message.id))


def store_message(
    db: Database,
    *,
    conversation_id: str,
    sender_role: str,
    sender_id: str,
    client_message_id: str,
    type: str,
    content: str,
    attachment_id: str | None = None,
    max_per_minute: int | None = None,
) -> StoredMessage:
    """Store once per (sender, client_message_id); a repeat returns the original message.

    One write transaction, the conversation's row locked first (on SQLite the transaction is
    the lock): unknown → ConversationNotFound; an agent who does not hold it →
    NotYourConversation; a repeat → the original, whatever the state now; closed →
    ConversationClosed; an agent's message while not active → ConversationNotActive. A new
    message beyond `max_per_minute` from this sender in this conversation raises RateLimited:
    counted in the database, so the limit holds across any number of API processes. An image,
    video or file carries `attachment_id`: one its sender uploaded here and has not sent yet
    (else AttachmentNotUsable), its metadata in the event."""
    with db.write_connection() as connection:
        row = _LOCK_CONVERSATION(connection, {"of_conversation": conversation_id}).first()
        if row is None:
            raise ConversationNotFound(conversation_id)
        state, agent_id = row
        if sender_role == Role.AGENT and agent_id != sender_id:
            raise NotYourConversation(conversation_id)
        this_message = {
            "of_conversation": conversation_id,
            "of_sender": sender_id,
            "of_client_message": client_message_id,
        }
        existing = (
            connection.execute(_FIND, this_message).first()
            if _STORED_BEFORE(connection, this_message).first() is not None
            else None
        )
        if existing is not None:
            message = MessageRecord(**existing._asdict())
            carried = (
                attachment_of_message(connection, conversation_id=conversation_id, seq=message.seq)
                if message.type in ATTACHED_TYPES
                else None
            )
            return StoredMessage(
                message, created=False, attachment=carried and attachment_public(carried)
            )
        if state == ConversationState.CLOSED:
            raise ConversationClosed(conversation_id)
        if sender_role == Role.AGENT and state != ConversationState.ACTIVE:
            raise ConversationNotActive(conversation_id)
        if max_per_minute is not None:
            check_rate(
                connection,
                _RECENT,
                {"of_conversation": conversation_id, "of_sender": sender_id},
                limit=max_per_minute,
                window=RATE_WINDOW,
            )
        data: dict[str, Any] = {
            "sender_role": sender_role,
            "client_message_id": client_message_id,
            "message_type": type,
        }
        carried = None
        if attachment_id is not None:
            taken = take_for_message(
                connection,
                conversation_id=conversation_id,
                attachment_id=attachment_id,
                sender_id=sender_id,
                message_type=type,
            )
            carried = attachment_public(taken)
            data["attachment"] = carried  # what it is and where: never its content
        event = write_event(
            connection,
            conversation_id=conversation_id,
            type=EventType.MESSAGE_CREATED,
            # The text is the message row's alone (stored once): readers join it in.
            data=data,
            staff_data={"sender_id": sender_id},
        )
        if attachment_id is not None:
            sent_with(connection, attachment_id, event.seq)
        row = {
            "conversation_id": conversation_id,
            "seq": event.seq,
            "sender_role": sender_role,
            "sender_id": sender_id,
            "client_message_id": client_message_id,
            "type": type,
            "content": content,
            "created_at": event.at,
        }
        message = MessageRecord(id=connection.execute(_INSERT_MESSAGE, row).scalar_one(), **row)
    return StoredMessage(message, created=True, holder=agent_id, attachment=carried)


_RECENT = sa.select(sa.func.count(), sa.func.min(col(Message.created_at))).where(
    col(Message.conversation_id) == sa.bindparam("of_conversation"),
    col(Message.sender_id) == sa.bindparam("of_sender"),
    col(Message.created_at) > sa.bindparam("since"),
)


# --- telling the workflow -------------------------------------------------------------------

_MARK_SIGNALLED = (
    sa.update(Conversation)
    .where(
        col(Conversation.id) == sa.bindparam("of_conversation"),
        col(Conversation.signalled_seq) < sa.bindparam("seq"),
    )
    .values(signalled_seq=sa.bindparam("seq"))
)


def mark_signalled(db: Database, seqs: Mapping[str, int]) -> None:
    """Record that these conversations' workflows were told of their messages up to these
    seqs: one transaction for the lot, rows in id order (as every writer takes them)."""
    if not seqs:
        return
    with db.write_connection() as connection:
        connection.execute(
            _MARK_SIGNALLED,
            [{"of_conversation": key, "seq": seqs[key]} for key in sorted(seqs)],
        )


class SignalledMarks:
    """The seqs an API process told workflows of, written by `mark_signalled` in batches (a
    write per message would double the hot path's writes). A process that dies before
    writing them loses nothing: the reconciler tells those workflows again, and a workflow
    ignores a seq it has seen."""

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}

    def add(self, conversation_id: str, seq: int) -> None:
        self._pending[conversation_id] = max(seq, self._pending.get(conversation_id, 0))

    def take(self) -> dict[str, int]:
        taken, self._pending = self._pending, {}
        return taken

    def put_back(self, seqs: Mapping[str, int]) -> None:
        for conversation_id, seq in seqs.items():
            self.add(conversation_id, seq)


@dataclass(frozen=True)
class Unsignalled:
    """A conversation's newest message, stored but not known to be told to its workflow."""

    conversation_id: str
    message_id: int
    seq: int
    sender_role: str


def unsignalled_messages(db: Database, *, older_than: timedelta, limit: int) -> list[Unsignalled]:
    """Open conversations whose newest message, stored more than `older_than` ago, is beyond
    what their workflow is known to have been told (its API process died between storing and
    signalling, or the signal failed and the client never retried): at most `limit`."""
    other = aliased(Message)
    newest = (
        sa.select(sa.func.max(other.seq))
        # The bot's messages are its activity's writes: the workflow is never told of them.
        .where(other.conversation_id == col(Conversation.id), other.sender_role != Role.BOT)
        .correlate(Conversation)
        .scalar_subquery()
    )
    query = (
        sa.select(
            col(Message.conversation_id),
            col(Message.id),
            col(Message.seq),
            col(Message.sender_role),
        )
        .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
        .where(
            col(Conversation.state) != ConversationState.CLOSED,
            col(Message.seq) == newest,
            col(Message.seq) > col(Conversation.signalled_seq),
            col(Message.created_at) < utcnow() - older_than,
        )
        .order_by(col(Message.created_at))
        .limit(limit)
    )
    with db.read() as session:
        rows = session.execute(query).all()
    return [Unsignalled(*row) for row in rows]
