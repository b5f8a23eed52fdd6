"""The one event writer: every event of a conversation gets the next seq, without gaps, and
goes into the feed of the agent who holds the conversation (each agent's feed has its own
gapless seq, so the agent's stream resumes from one number) and into the webhooks' outbox
(store/webhooks.py). An event of the agent themself (agent.status_changed) goes into their
feed alone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from domain.types import Audience, ConversationState, EventType
from store.db import Prepared
from store.models import AgentEvent, AgentFeed, Conversation, Event, Message, utcnow
from store.webhooks import enqueue_conversation_event

NOTIFY_CHANNEL = "switchboard_events"


class ConversationClosed(Exception):
    """The conversation is closed: it takes no more messages or files."""


class ConversationNotFound(LookupError):
    pass


def agent_stream_key(agent_id: str) -> str:
    """What wakes an agent's streams (a conversation's streams are woken by its id)."""
    return f"agent:{agent_id}"


# Built once: a statement's cache key is worked out once per object (every message writes
# with these, so building them afresh each time was a good part of an API's CPU per message).
_NEXT_SEQ = Prepared(
    sa.update(Conversation)
    .where(col(Conversation.id) == sa.bindparam("of_conversation"))
    .values(last_seq=col(Conversation.last_seq) + 1)
    .returning(col(Conversation.last_seq), col(Conversation.agent_id))
)
_INSERT_EVENT = sa.insert(Event).returning(col(Event.id))
_INSERT_AGENT_EVENT = sa.insert(AgentEvent)
# A conversation's event in an agent's feed (the entry points at the event).
_INSERT_FEED_ENTRY = Prepared(
    sa.insert(AgentEvent).values(
        agent_id=sa.bindparam("agent_id"),
        seq=sa.bindparam("seq"),
        event_id=sa.bindparam("event_id"),
    )
)
_NOTIFY = sa.text("SELECT pg_notify(:channel, :key)")
_FIND_EVENT = sa.select(*Event.__table__.columns).where(  # type: ignore[attr-defined]
    col(Event.conversation_id) == sa.bindparam("of_conversation"),
    col(Event.dedupe_key) == sa.bindparam("of_key"),
)


def next_seq(connection: sa.Connection, conversation_id: str) -> tuple[int, str | None]:
    """Hand out the next seq, and say who holds the conversation at this point of the
    transaction. The row lock taken here orders concurrent writers."""
    row = _NEXT_SEQ(connection, {"of_conversation": conversation_id}).one_or_none()
    if row is None:
        raise ConversationNotFound(conversation_id)
    return row[0], row[1]


def _next_agent_seq_statement(dialect: str) -> sa.Executable:
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(AgentFeed)
    return (
        insert.values(agent_id=sa.bindparam("of_agent"), last_seq=1)
        .on_conflict_do_update(
            index_elements=[col(AgentFeed.agent_id)],
            set_={"last_seq": col(AgentFeed.last_seq) + 1},
        )
        .returning(col(AgentFeed.last_seq))
    )


_NEXT_AGENT_SEQ = Prepared(_next_agent_seq_statement)


def next_agent_seq(connection: sa.Connection, agent_id: str) -> int:
    """The next seq of an agent's feed. The feed row is the last lock any writer takes."""
    return _NEXT_AGENT_SEQ(connection, {"of_agent": agent_id}).scalar_one()


def append_event(
    session: Session | sa.Connection,
    *,
    conversation_id: str,
    type: str,
    data: dict[str, Any] | None = None,
    staff_data: dict[str, Any] | None = None,
    audience: Audience = Audience.ALL,
    dedupe_key: str | None = None,
    at: datetime | None = None,
    also_to_agents: Iterable[str | None] = (),
) -> Event:
    """Write one event inside the caller's transaction; with a dedupe_key, at most once.

    `data` is what everyone who reads the event reads (the visitor too, unless the `audience`
    is staff); `staff_data` what staff alone read of it. It goes into the feed of the
    conversation's agent as this transaction left it, and of `also_to_agents` (an agent who
    just lost the conversation: transfer out, requeue)."""
    # Core statements on the session's connection, not the ORM: the same rows for a fraction
    # of the CPU (every message comes through here).
    if isinstance(session, Session):
        session.flush()  # pending changes first: an agent set on the conversation counts
        connection = session.connection()
    else:
        connection = session
    if dedupe_key is not None:
        existing = connection.execute(
            _FIND_EVENT, {"of_conversation": conversation_id, "of_key": dedupe_key}
        ).first()
        if existing is not None:
            return Event(**existing._asdict())
    written = write_event(
        connection,
        conversation_id=conversation_id,
        type=type,
        data=data,
        staff_data=staff_data,
        audience=audience,
        dedupe_key=dedupe_key,
        at=at,
        also_to_agents=also_to_agents,
    )
    return Event(id=written.id, **written.row)


@dataclass(frozen=True)
class WrittenEvent:
    """An event as written: its id and its row (no ORM object made: the message's hot path
    needs its seq and time alone)."""

    id: int
    row: dict[str, Any]

    @property
    def seq(self) -> int:
        return self.row["seq"]

    @property
    def at(self) -> datetime:
        return self.row["at"]


def write_event(
    connection: sa.Connection,
    *,
    conversation_id: str,
    type: str,
    data: dict[str, Any] | None = None,
    staff_data: dict[str, Any] | None = None,
    audience: Audience = Audience.ALL,
    dedupe_key: str | None = None,
    at: datetime | None = None,
    also_to_agents: Iterable[str | None] = (),
) -> WrittenEvent:
    """append_event's writing, on a connection, without its dedupe look-up: the next seq, the
    event, its outbox rows, its feed entries and (PostgreSQL) the hints."""
    seq, holder = next_seq(connection, conversation_id)
    row = {
        "conversation_id": conversation_id,
        "seq": seq,
        "type": type,
        "data": data or {},
        "staff_data": staff_data or None,
        "audience": audience,
        "dedupe_key": dedupe_key,
        "at": at or utcnow(),
    }
    event = WrittenEvent(connection.execute(_INSERT_EVENT, row).scalar_one(), row)
    enqueue_conversation_event(
        connection,
        conversation_id=conversation_id,
        seq=seq,
        type=type,
        data=row["data"],
        staff_data=row["staff_data"],
        staff_only=audience == Audience.STAFF,
        at=row["at"],
    )
    agents = sorted({agent for agent in (holder, *also_to_agents) if agent is not None})
    for agent_id in agents:
        _INSERT_FEED_ENTRY(
            connection,
            {
                "agent_id": agent_id,
                "seq": next_agent_seq(connection, agent_id),
                "event_id": event.id,
            },
        )
    if connection.dialect.name == "postgresql":
        # Delivered at commit to every process LISTENing (api/streams.py): wakes streams.
        for key in (conversation_id, *map(agent_stream_key, agents)):
            connection.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "key": key})
    return event


def append_agent_event(
    connection: sa.Connection,
    *,
    agent_id: str,
    type: str,
    data: dict[str, Any],
    at: datetime | None = None,
) -> int:
    """Write an event of the agent themself, of no conversation, into their feed (kept in
    the feed's entry: no other feed has it), inside the caller's transaction; its feed seq."""
    seq = next_agent_seq(connection, agent_id)
    connection.execute(
        _INSERT_AGENT_EVENT,
        {"agent_id": agent_id, "seq": seq, "type": type, "at": at or utcnow(), "data": data},
    )
    if connection.dialect.name == "postgresql":
        connection.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "key": agent_stream_key(agent_id)})
    return seq


def change_state(
    session: Session,
    *,
    conversation: Conversation,
    state: ConversationState,
    dedupe_key: str,
    close_reason: str | None = None,
    **staff_details: Any,
) -> Event:
    """Set the conversation's state and write its state-changed event, inside the caller's
    transaction (see state_changed). Where a conversation's state changes (the close sets the
    column with the rest of its changes to the row: store/lifecycle.py)."""
    conversation.state = state
    session.add(conversation)
    return state_changed(
        session,
        conversation_id=conversation.id,
        state=state,
        dedupe_key=dedupe_key,
        close_reason=close_reason,
        **staff_details,
    )


def state_changed(
    session: Session | sa.Connection,
    *,
    conversation_id: str,
    state: ConversationState,
    dedupe_key: str,
    close_reason: str | None = None,
    **staff_details: Any,
) -> Event:
    """The state-changed event: the state, the close reason, and `staff_details` for staff
    alone (its group, its agent's id); with its dedupe key it is written once."""
    data: dict[str, Any] = {"state": state}
    if close_reason is not None:
        data["close_reason"] = close_reason
    return append_event(
        session,
        conversation_id=conversation_id,
        type=EventType.STATE_CHANGED,
        data=data,
        staff_data=staff_details,
        dedupe_key=dedupe_key,
    )


def append_events(
    session: Session, *, type: str, items: Sequence[tuple[str, dict[str, Any]]]
) -> None:
    """One event (no dedupe key) for each of many conversations, inside the caller's
    transaction: what append_event does for each, in a handful of statements rather than a few
    per event (a queue's position announcements, bench/ B5)."""
    if not items:
        return
    session.flush()
    connection = session.connection()
    data = dict(items)
    rows = connection.execute(
        sa.update(Conversation)
        .where(col(Conversation.id).in_(list(data)))
        .values(last_seq=col(Conversation.last_seq) + 1)
        .returning(col(Conversation.id), col(Conversation.last_seq), col(Conversation.agent_id))
    ).all()
    if len(rows) != len(data):
        missing = set(data) - {row[0] for row in rows}
        raise ConversationNotFound(", ".join(sorted(missing)))
    now = utcnow()
    inserted = connection.execute(
        sa.insert(Event).returning(
            col(Event.id), col(Event.conversation_id), sort_by_parameter_order=True
        ),
        [
            {
                "conversation_id": conversation_id,
                "seq": seq,
                "type": type,
                "data": data[conversation_id],
                "staff_data": None,
                "audience": Audience.ALL,
                "dedupe_key": None,
                "at": now,
            }
            for conversation_id, seq, _holder in rows
        ],
    ).all()
    holders = {conversation_id: holder for conversation_id, _seq, holder in rows}
    for conversation_id, seq, _holder in rows:
        enqueue_conversation_event(
            connection,
            conversation_id=conversation_id,
            seq=seq,
            type=type,
            data=data[conversation_id],
            staff_data=None,
            staff_only=False,
            at=now,
        )
    for event_id, conversation_id in inserted:
        holder = holders[conversation_id]
        if holder is not None:
            _INSERT_FEED_ENTRY(
                connection,
                {
                    "agent_id": holder,
                    "seq": next_agent_seq(connection, holder),
                    "event_id": event_id,
                },
            )
    if connection.dialect.name == "postgresql":
        keys = {*data, *(agent_stream_key(agent) for agent in holders.values() if agent)}
        for key in sorted(keys):
            connection.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "key": key})


@dataclass(frozen=True)
class EventView:
    """An event as one reader reads it: staff read `data` with `staff_data` over it, everyone
    else `data` alone; a message's event carries the message's text (stored once, in the
    message's row)."""

    conversation_id: str
    seq: int
    type: str
    at: datetime
    data: dict[str, Any]


# A message's event's message (an outer join: other events have none).
_MESSAGE_OF_EVENT = sa.and_(
    col(Message.conversation_id) == col(Event.conversation_id),
    col(Message.seq) == col(Event.seq),
    col(Event.type) == EventType.MESSAGE_CREATED,
)
# The event and, for a message's event, the message's text.
_EVENT_WITH_TEXT = sa.select(Event, col(Message.content)).outerjoin(Message, _MESSAGE_OF_EVENT)


def event_view(event: Event, content: str | None = None, *, staff: bool) -> EventView:
    """The event as staff (or everyone else) read it; `content`: its message's text."""
    data = {**event.data, **(event.staff_data or {})} if staff else event.data
    if event.type == EventType.MESSAGE_CREATED and content is not None:
        data = {**data, "content": content}
    return EventView(event.conversation_id, event.seq, event.type, event.at, data)


def events_after(
    session: Session, *, conversation_id: str, after_seq: int, limit: int, staff: bool
) -> list[EventView]:
    """A page of a conversation's events, in seq order, as staff or as the visitor reads them
    (the visitor's has gaps where staff's events are: its seqs are the conversation's)."""
    query = _EVENT_WITH_TEXT.where(
        col(Event.conversation_id) == conversation_id, col(Event.seq) > after_seq
    )
    if not staff:
        query = query.where(col(Event.audience) == Audience.ALL)
    rows = session.execute(query.order_by(col(Event.seq)).limit(limit))
    return [event_view(event, content, staff=staff) for event, content in rows]


@dataclass(frozen=True)
class AgentOwnEvent:
    """An event of the agent themself in their feed, of no conversation (agent.status_changed)."""

    type: str
    at: datetime
    data: dict[str, Any]


FeedEvent = EventView | AgentOwnEvent

# An agent's feed: its entries, each with its conversation's event (and, for a message's
# event, the message's text), or none for the agent's own events.
_FEED = (
    sa.select(
        col(AgentEvent.seq),
        col(AgentEvent.type),
        col(AgentEvent.at),
        col(AgentEvent.data),
        Event,
        col(Message.content),
    )
    .select_from(AgentEvent)
    .outerjoin(Event, col(Event.id) == col(AgentEvent.event_id))
    .outerjoin(Message, _MESSAGE_OF_EVENT)
)


def agent_events_after(
    session: Session, *, agent_id: str, after_seq: int, limit: int
) -> list[tuple[int, FeedEvent]]:
    """A page of an agent's feed, in its seq order: (feed seq, the conversation's event as
    staff read it, or the agent's own event)."""
    rows = session.execute(
        _FEED.where(col(AgentEvent.agent_id) == agent_id, col(AgentEvent.seq) > after_seq)
        .order_by(col(AgentEvent.seq))
        .limit(limit)
    )
    return [
        (
            seq,
            AgentOwnEvent(own_type, own_at, own_data or {})
            if event is None
            else event_view(event, content, staff=True),
        )
        for seq, own_type, own_at, own_data, event, content in rows
    ]


def agent_feed_seq(session: Session, agent_id: str) -> int:
    """The newest seq of the agent's feed (0 before the first)."""
    feed = session.get(AgentFeed, agent_id)
    return 0 if feed is None else feed.last_seq


def newest_event_id(session: Session) -> int:
    """The id of the newest event of the whole log (0 before the first)."""
    return session.execute(sa.select(sa.func.max(col(Event.id)))).scalar() or 0


def feed_positions(session: Session) -> dict[str, int]:
    """Every agent's feed seq (one small row per agent)."""
    return {
        agent_id: last_seq
        for agent_id, last_seq in session.execute(
            sa.select(col(AgentFeed.agent_id), col(AgentFeed.last_seq))
        )
    }


def conversations_since(session: Session, after_id: int, up_to_id: int) -> set[str]:
    """The conversations with events in (after_id, up_to_id]: a range of the primary key."""
    return set(
        session.execute(
            sa.select(col(Event.conversation_id))
            .where(col(Event.id) > after_id, col(Event.id) <= up_to_id)
            .distinct()
        ).scalars()
    )
