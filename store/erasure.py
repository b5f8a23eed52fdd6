"""Erasure: a closed conversation's customer text replaced by one marker, in one transaction
per conversation, on request (a customer's erase) or with age (the retention schedule).

What is erased: every message's text, the rating comment, what the app said of the customer
(`order_id`, `attributes`), the left message (its text, contact and the team's note on it),
the attachments (their files and rows; a message's event keeps what kind of file it was), and
the text that events carry (a message's, a note's, a transfer note, a comment). What stays: the
conversation's shape (ids, states, times, seqs, scores, who served it), so the monitor's
figures and the event log's order hold, and the texts the policy wrote (closing messages, idle
warnings, rating invites), which are no customer's. An erase again finds nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.types import ConversationState, EventType
from media.storage import ObjectStore
from store.attachments import conversation_object_keys, forget_attachments
from store.db import Database
from store.events import ConversationNotFound
from store.models import AdminAction, Conversation, Event, LeftMessage, Message, utcnow
from store.webhooks import erase_deliveries

# What every erased text reads from then on.
ERASED = "[erased]"

# The conversation's columns that hold what the customer, or the app about them, gave. A
# column named here that the table does not have (yet) is left out: adding one is one name.
_CONVERSATION_TEXT = tuple(
    name
    for name in ("rating_comment", "order_id", "attributes")
    if name in Conversation.model_fields
)
_LEFT_MESSAGE_TEXT = ("content", "contact", "resolution_note")
# An event's payloads: what everyone reads of it, and what its staff alone read.
_EVENT_PAYLOADS = ("data", "staff_data")
# Keys of an event's payload that carry what people wrote, in any event...
_TEXT_KEYS = frozenset({"content", "note", "comment"})
# ...and `text` in these (elsewhere `text` is a system message the policy wrote: it stays).
_WRITTEN_TEXT_EVENTS = frozenset({EventType.NOTE_CREATED})


class ConversationOpen(Exception):
    """Only a closed conversation is erased: an open one would take new text after it."""


@dataclass(frozen=True)
class Erased:
    """What an erase changed: the conversations it erased (for the first time, or anything
    new in them) and the messages whose text it replaced."""

    conversations: int = 0
    messages: int = 0

    def __add__(self, other: Erased) -> Erased:
        return Erased(self.conversations + other.conversations, self.messages + other.messages)


def erased(value: Any) -> Any:
    """The value with every text in it replaced by the marker (a JSON object keeps its keys);
    None stays None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {key: erased(item) for key, item in value.items()}
    if isinstance(value, list):
        return [erased(item) for item in value]
    return ERASED


def _erased_payload(event_type: str, payload: dict[str, Any] | None) -> dict[str, Any] | None:
    if not payload:
        return payload
    keys = _TEXT_KEYS | {"text"} if event_type in _WRITTEN_TEXT_EVENTS else _TEXT_KEYS
    return {key: erased(value) if key in keys else value for key, value in payload.items()}


def _erase_fields(row: Any, names: tuple[str, ...]) -> int:
    """Replace the row's text in these fields; how many changed."""
    changed = 0
    for name in names:
        value = getattr(row, name)
        if erased(value) != value:
            setattr(row, name, erased(value))
            changed += 1
    return changed


def _erase_events(session: Session, conversation_id: str) -> int:
    """Replace the text in the conversation's events; how many changed."""
    columns = [col(getattr(Event, name)) for name in _EVENT_PAYLOADS]
    rows = session.execute(
        sa.select(col(Event.id), col(Event.type), *columns).where(
            col(Event.conversation_id) == conversation_id
        )
    ).all()
    changed = 0
    for event_id, event_type, *payloads in rows:
        values = {
            name: _erased_payload(event_type, payload)
            for name, payload in zip(_EVENT_PAYLOADS, payloads, strict=True)
        }
        if list(values.values()) != payloads:
            session.execute(sa.update(Event).where(col(Event.id) == event_id).values(**values))
            changed += 1
    return changed


def erase_conversation(
    db: Database, *, conversation_id: str, objects: ObjectStore | None = None
) -> Erased:
    """Erase the closed conversation's customer text, in one transaction, its row locked (a
    left message or a rating being stored commits first, or waits and finds it erased), and
    its attachments: their files deleted from `objects` first, then their rows (a closed
    conversation takes no new file; should the transaction fail, the next erase finds the rows
    and deletes again). Unknown → ConversationNotFound; not closed → ConversationOpen."""
    with db.read() as session:
        found = session.get(Conversation, conversation_id)
        if found is None:
            raise ConversationNotFound(conversation_id)
        if found.state != ConversationState.CLOSED:
            raise ConversationOpen(conversation_id)
        keys = conversation_object_keys(session, conversation_id)
    if keys:
        if objects is None:
            raise ValueError("the conversation has attachments: erase them with their store")
        objects.delete(keys)
    with db.write() as session:
        # The left message's row before the conversation's, as its resolution takes them.
        left = session.exec(
            select(LeftMessage)
            .where(LeftMessage.conversation_id == conversation_id)
            .with_for_update()
        ).all()
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        if conversation.state != ConversationState.CLOSED:
            raise ConversationOpen(conversation_id)
        messages = session.execute(
            sa.update(Message)
            .where(col(Message.conversation_id) == conversation_id, col(Message.content) != ERASED)
            .values(content=ERASED)
        ).rowcount
        changed = messages + _erase_fields(conversation, _CONVERSATION_TEXT)
        for message in left:
            if _erase_fields(message, _LEFT_MESSAGE_TEXT):
                session.add(message)
                changed += 1
        changed += _erase_events(session, conversation_id)
        # Not counted: each of them repeats an event's text erased just above.
        erase_deliveries(session, conversation_id, _erased_payload)
        changed += forget_attachments(session, conversation_id)
        if not changed and conversation.erased_at is not None:
            return Erased()  # erased before, and nothing new since
        conversation.erased_at = conversation.erased_at or utcnow()
        session.add(conversation)
    return Erased(conversations=1, messages=messages)


@dataclass(frozen=True)
class CustomerConversation:
    id: str
    state: str


def customer_conversations(db: Database, *, customer_id: str) -> list[CustomerConversation]:
    """The customer's conversations, oldest first."""
    with db.read() as session:
        rows = session.execute(
            sa.select(col(Conversation.id), col(Conversation.state))
            .where(col(Conversation.customer_id) == customer_id)
            .order_by(col(Conversation.created_at), col(Conversation.id))
        ).all()
    return [CustomerConversation(*row) for row in rows]


def record_erasure(db: Database, *, by_id: str, erased: Erased) -> AdminAction:
    """The admin action that an erase was: who, when, how much (never whose)."""
    action = AdminAction(
        action="customer.erase",
        by_id=by_id,
        conversations=erased.conversations,
        messages=erased.messages,
    )
    with db.write() as session:
        session.add(action)
    return action


def expired_transcripts(db: Database, *, older_than: timedelta, limit: int) -> list[str]:
    """Up to `limit` conversations closed more than `older_than` ago and not erased yet, the
    longest closed first."""
    with db.read() as session:
        return list(
            session.execute(
                sa.select(col(Conversation.id))
                .where(
                    col(Conversation.state) == ConversationState.CLOSED,
                    col(Conversation.closed_at) < utcnow() - older_than,
                    col(Conversation.erased_at).is_(None),
                )
                .order_by(col(Conversation.closed_at), col(Conversation.id))
                .limit(limit)
            ).scalars()
        )


def erase_expired_transcripts(
    db: Database, *, older_than: timedelta, limit: int, objects: ObjectStore | None = None
) -> tuple[Erased, bool]:
    """Erase up to `limit` conversations closed more than `older_than` ago, each in its own
    transaction (one erased meanwhile counts nothing); and whether `limit` were due (more may
    be)."""
    due = expired_transcripts(db, older_than=older_than, limit=limit)
    done = Erased()
    for conversation_id in due:
        done += erase_conversation(db, conversation_id=conversation_id, objects=objects)
    return done, len(due) == limit
