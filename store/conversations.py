"""Conversations as clients see them: starting one (or getting the customer's open one back),
its view with its place in the queue, its events, and read marks."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.types import (
    MAX_ATTRIBUTES_BYTES,
    Audience,
    ConversationState,
    EventType,
    RatingStatus,
    Role,
    attributes_size,
)
from store.assignment import queue_position
from store.db import Database
from store.erasure import ERASED
from store.estimate import estimated_wait
from store.events import ConversationNotFound, EventView, append_event, events_after
from store.models import Agent, Conversation, QueueEntry, utcnow
from store.rates import check_rate

# Conversations a customer may start within this window (the API's limit per customer_id).
CUSTOMER_START_WINDOW = timedelta(hours=1)


class SeqNotReached(Exception):
    """A read mark beyond the conversation's newest event."""

    def __init__(self, seq: int, last_seq: int) -> None:
        super().__init__(f"seq {seq} is beyond the newest event ({last_seq})")
        self.seq = seq
        self.last_seq = last_seq


@dataclass(frozen=True)
class OpenConversation:
    conversation: Conversation
    created: bool  # False: the customer's conversation that was open already


@dataclass(frozen=True)
class ConversationView:
    """A conversation as its visitor, its agent or an admin sees it."""

    conversation: Conversation
    agent_name: str | None = None  # its agent's display name (what a visitor sees of them)
    queue_position: int | None = None  # while queued: 1-based place in its group's queue
    # While queued: seconds (store/estimate.py); None with nobody of the group online.
    estimated_wait: float | None = None


@dataclass(frozen=True)
class ReadMarks:
    conversation_id: str
    visitor_read_seq: int
    agent_read_seq: int


def find_conversation(db: Database, *, conversation_id: str) -> Conversation | None:
    with db.read() as session:
        return session.get(Conversation, conversation_id)


def _open_of(db: Database, customer_id: str) -> Conversation | None:
    with db.read() as session:
        return session.exec(
            select(Conversation).where(Conversation.open_customer_key == customer_id)
        ).first()


_RECENT_STARTS = sa.select(sa.func.count(), sa.func.min(col(Conversation.created_at))).where(
    col(Conversation.customer_id) == sa.bindparam("of_customer"),
    col(Conversation.created_at) > sa.bindparam("since"),
)


def open_conversation(
    db: Database,
    *,
    customer_id: str,
    channel: str,
    entry: str | None = None,
    tier: str | None = None,
    language: str | None = None,
    order_id: str | None = None,
    attributes: dict[str, Any] | None = None,
    max_per_customer: int | None = None,
) -> OpenConversation:
    """The customer's open conversation, or a new queued one: at most one is open per
    customer (a unique index), so of two concurrent starts one creates and the other gets it.
    A new one beyond `max_per_customer` started within CUSTOMER_START_WINDOW raises
    RateLimited (the open one is still answered). `attributes` given for the open one
    replace its own (the app's newest word on its customer)."""
    if (existing := _open_of(db, customer_id)) is not None:
        return _reopened(db, existing, attributes)
    conversation = Conversation(
        id=secrets.token_hex(8),
        customer_id=customer_id,
        open_customer_key=customer_id,
        channel=channel,
        entry=entry,
        tier=tier,
        language=language,
        order_id=order_id,
        attributes=attributes,
        state=ConversationState.QUEUED,
    )
    try:
        with db.write() as session:
            if max_per_customer is not None:
                check_rate(
                    session.connection(),
                    _RECENT_STARTS,
                    {"of_customer": customer_id},
                    limit=max_per_customer,
                    window=CUSTOMER_START_WINDOW,
                )
            session.add(conversation)
    except sa.exc.IntegrityError:
        if (existing := _open_of(db, customer_id)) is None:
            raise
        return _reopened(db, existing, attributes)
    return OpenConversation(conversation, created=True)


def _reopened(
    db: Database, existing: Conversation, attributes: dict[str, Any] | None
) -> OpenConversation:
    if attributes is not None and attributes != existing.attributes:
        existing = change_attributes(
            db, conversation_id=existing.id, attributes=attributes, replace=True
        )
    return OpenConversation(existing, created=False)


class ConversationErased(Exception):
    """Its customer's text was erased: nothing about them is taken any more."""


class AttributesTooLarge(ValueError):
    """The attributes would be larger than MAX_ATTRIBUTES_BYTES."""


def change_attributes(
    db: Database, *, conversation_id: str, attributes: dict[str, Any], replace: bool = False
) -> Conversation:
    """Merge `attributes` into the conversation's (a JSON merge patch one level deep: a key
    with None is removed), or with `replace` put them in its place; staff's feeds hear which
    keys changed. Unknown → ConversationNotFound; erased → ConversationErased; the result
    too large → AttributesTooLarge."""
    with db.write() as session:
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        if conversation.erased_at is not None:
            raise ConversationErased(conversation_id)
        before = dict(conversation.attributes or {})
        after = {} if replace else dict(before)
        for key, value in attributes.items():
            if value is None and not replace:
                after.pop(key, None)
            else:
                after[key] = value
        if attributes_size(after) > MAX_ATTRIBUTES_BYTES:
            raise AttributesTooLarge(f"larger than {MAX_ATTRIBUTES_BYTES} bytes as JSON")
        changed = sorted(
            key
            for key in before.keys() | after.keys()
            if before.get(key, _UNSET) != after.get(key, _UNSET)
        )
        if changed:
            conversation.attributes = after or None
            session.add(conversation)
            append_event(
                session,
                conversation_id=conversation_id,
                type=EventType.ATTRIBUTES_CHANGED,
                data={"keys": changed},
                audience=Audience.STAFF,
            )
            session.flush()
            session.refresh(conversation)
        return conversation


_UNSET = object()


@dataclass(frozen=True)
class PastConversation:
    """One of a customer's conversations, as staff list them."""

    conversation: Conversation
    agent_name: str | None


def serves_customer(db: Database, *, agent_id: str, customer_id: str) -> bool:
    """Whether the agent is serving the customer now (holds their active conversation)."""
    with db.read() as session:
        return (
            session.exec(
                select(Conversation.id).where(
                    Conversation.customer_id == customer_id,
                    Conversation.agent_id == agent_id,
                    Conversation.state == ConversationState.ACTIVE,
                )
            ).first()
            is not None
        )


def customer_history(db: Database, *, customer_id: str, limit: int) -> list[PastConversation]:
    """The customer's conversations, the newest first, with their agents' names."""
    with db.read() as session:
        rows = session.exec(
            select(Conversation, Agent.name)
            .outerjoin(Agent, col(Agent.id) == col(Conversation.agent_id))
            .where(Conversation.customer_id == customer_id)
            .order_by(col(Conversation.created_at).desc(), col(Conversation.id).desc())
            .limit(limit)
        ).all()
        return [PastConversation(conversation, name) for conversation, name in rows]


def group_conversations(
    db: Database, *, skill_groups: list[str], states: list[ConversationState], limit: int
) -> list[ConversationView]:
    """The conversations in these groups and states, for those who oversee the groups: the
    longest waiting first (a queued one since it first queued), then the earliest assigned."""
    with db.read() as session:
        conversations = session.exec(
            select(Conversation)
            .where(
                col(Conversation.skill_group).in_(skill_groups),
                col(Conversation.state).in_(states),
            )
            .order_by(
                col(Conversation.state).desc(),  # queued before active
                col(Conversation.queued_at),
                col(Conversation.assigned_at),
                col(Conversation.id),
            )
            .limit(limit)
        ).all()
        return [view_in(session, conversation) for conversation in conversations]


def unstarted_conversations(
    db: Database, *, older_than: timedelta, limit: int
) -> list[Conversation]:
    """Conversations created more than `older_than` ago that no workflow has routed: their
    workflow's start failed after the row was written (and the customer has not come back to
    start it again), or it has not run yet. At most `limit`, the oldest first."""
    with db.read() as session:
        return list(
            session.exec(
                select(Conversation)
                .where(
                    Conversation.state == ConversationState.QUEUED,
                    col(Conversation.policy_version).is_(None),
                    col(Conversation.created_at) < utcnow() - older_than,
                )
                .order_by(col(Conversation.created_at))
                .limit(limit)
            ).all()
        )


def view_in(session: Session, conversation: Conversation) -> ConversationView:
    """The view of a conversation read in the caller's transaction."""
    if conversation.state != ConversationState.QUEUED:
        agent = session.get(Agent, conversation.agent_id) if conversation.agent_id else None
        return ConversationView(conversation, agent_name=agent.name if agent else None)
    entry = session.exec(
        select(QueueEntry).where(QueueEntry.conversation_id == conversation.id)
    ).first()
    if entry is None:  # queued, and not yet routed to a group
        return ConversationView(conversation)
    position = queue_position(session, entry)
    return ConversationView(
        conversation,
        queue_position=position,
        estimated_wait=estimated_wait(session, entry.skill_group, position),
    )


def view_conversation(db: Database, *, conversation_id: str) -> ConversationView:
    """Unknown → ConversationNotFound."""
    with db.read() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        return view_in(session, conversation)


def conversation_events(
    db: Database, *, conversation_id: str, after_seq: int, limit: int, staff: bool
) -> list[EventView]:
    """Up to `limit` of the conversation's events after `after_seq`, in seq order, as staff
    or as its visitor read them."""
    with db.read() as session:
        return events_after(
            session, conversation_id=conversation_id, after_seq=after_seq, limit=limit, staff=staff
        )


_READ_MARK = {Role.VISITOR: "visitor_read_seq", Role.AGENT: "agent_read_seq"}


def record_read(
    db: Database, *, conversation_id: str, reader_role: Role, reader_id: str, seq: int
) -> ReadMarks:
    """The visitor or the agent has seen everything up to `seq`. Only news is told: a mark
    that moves writes a `message.read` event, the same or an older seq changes nothing.
    Unknown → ConversationNotFound; beyond the newest event → SeqNotReached."""
    column = getattr(Conversation, _READ_MARK[reader_role])
    with db.write() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        if seq > conversation.last_seq:
            raise SeqNotReached(seq, conversation.last_seq)
        moved = session.execute(
            sa.update(Conversation)
            .where(col(Conversation.id) == conversation_id, col(column) < seq)
            .values({column: seq})
        ).rowcount
        if moved:
            append_event(
                session,
                conversation_id=conversation_id,
                type=EventType.MESSAGE_READ,
                data={"by_role": reader_role, "seq": seq},
                staff_data={"by_id": reader_id},
            )
        session.refresh(conversation)
        return ReadMarks(
            conversation_id=conversation_id,
            visitor_read_seq=conversation.visitor_read_seq,
            agent_read_seq=conversation.agent_read_seq,
        )


def keep_rating_comment(db: Database, *, conversation_id: str, comment: str) -> str | None:
    """Store the comment of the conversation's rating, unless one is stored: answers the
    stored one. Written by the API once the workflow took the rating (the workflow never
    hears customer text)."""
    with db.write() as session:
        session.execute(
            sa.update(Conversation)
            .where(
                col(Conversation.id) == conversation_id,
                col(Conversation.rating_status) == RatingStatus.RATED,
                col(Conversation.rating_comment).is_(None),
            )
            .values(
                rating_comment=sa.case(
                    (col(Conversation.erased_at).is_(None), comment), else_=ERASED
                )
            )
        )
        conversation = session.get(Conversation, conversation_id)
        return conversation.rating_comment if conversation is not None else None


def note_visitor_stream(db: Database, *, conversation_id: str, until: datetime) -> None:
    """A stream of the visitor's is open until `until` unless noted again (api/presence.py):
    while it is, an agent's message waits a while for the visitor to read it before it is
    pushed to the app (visitor.unread)."""
    with db.write() as session:
        session.execute(
            sa.update(Conversation)
            .where(col(Conversation.id) == conversation_id)
            .values(visitor_stream_until=until)
        )
