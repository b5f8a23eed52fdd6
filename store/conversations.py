"""Conversations as clients see them: starting one (or getting the customer's open one back),
its view with its place in the queue, its events, and read marks."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.types import ConversationState, EventType, RatingStatus, Role
from store.assignment import estimated_wait, queue_position
from store.db import Database
from store.erasure import ERASED
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
    estimated_wait: float | None = None  # while queued: seconds, from the group's recent pace


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
    max_per_customer: int | None = None,
) -> OpenConversation:
    """The customer's open conversation, or a new queued one: at most one is open per
    customer (a unique index), so of two concurrent starts one creates and the other gets it.
    A new one beyond `max_per_customer` started within CUSTOMER_START_WINDOW raises
    RateLimited (the open one is still answered)."""
    if (existing := _open_of(db, customer_id)) is not None:
        return OpenConversation(existing, created=False)
    conversation = Conversation(
        id=secrets.token_hex(8),
        customer_id=customer_id,
        open_customer_key=customer_id,
        channel=channel,
        entry=entry,
        tier=tier,
        language=language,
        order_id=order_id,
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
        return OpenConversation(existing, created=False)
    return OpenConversation(conversation, created=True)


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
