"""Tables. The API never returns these directly: it maps them to its public models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from domain.policy import VisitorContext


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _at(nullable: bool = False, **kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, nullable=nullable, **kwargs)


class Agent(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    token_hash: str = Field(max_length=64, index=True)
    status: str = Field(default="offline", max_length=16)
    # "agent" (serves conversations) or "supervisor" (oversees its groups' conversations).
    role: str = Field(default="agent", max_length=16, sa_column_kwargs={"server_default": "agent"})
    # A disabled agent's token is refused (401) and their open streams end.
    disabled: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    max_concurrent: int
    # Conversations currently assigned: checked and changed only inside the assignment transaction.
    active_count: int = 0
    last_assigned_at: datetime | None = _at(nullable=True, default=None)
    # The last sign of the agent's workbench: their going online, or a beat of a stream of
    # theirs (written while it is open and as it closes). Online with none for the presence
    # timeout → away (store/agents.py). Never null once written (the column came later).
    last_seen_at: datetime | None = _at(nullable=True, default_factory=utcnow)
    created_at: datetime = _at(default_factory=utcnow)


class AgentSkill(SQLModel, table=True):
    __tablename__ = "agent_skill"
    agent_id: str = Field(foreign_key="agent.id", primary_key=True, max_length=64)
    skill_group: str = Field(primary_key=True, max_length=64, index=True)


class Conversation(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32)
    customer_id: str = Field(index=True, max_length=200)
    # Equals customer_id while the conversation is open, NULL once closed: at most one open
    # conversation per customer, enforced by the unique index.
    open_customer_key: str | None = Field(default=None, unique=True, max_length=200)
    channel: str = Field(max_length=64)
    # What routing looks at, as the app gave it.
    entry: str | None = Field(default=None, max_length=64)
    tier: str | None = Field(default=None, max_length=32)
    language: str | None = Field(default=None, max_length=16)
    order_id: str | None = Field(default=None, max_length=64)
    # What the app vouches for about the customer (name, membership, order summary): shown to
    # staff alone, never to the visitor, never to Temporal.
    attributes: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    state: str = Field(max_length=16, index=True)
    skill_group: str | None = Field(default=None, max_length=64)
    priority: int = 0
    # Index of the [[routing]] rule that matched; None: the default group.
    routing_rule: int | None = None
    # The policy (its version: a hash of the file) of the latest decision taken for it.
    policy_version: str | None = Field(default=None, max_length=16)
    queued_at: datetime | None = _at(nullable=True, default=None)
    agent_id: str | None = Field(default=None, index=True, max_length=64)
    assigned_at: datetime | None = _at(nullable=True, default=None)
    load_released: bool = False
    close_reason: str | None = Field(default=None, max_length=32)
    closed_by: str | None = Field(default=None, max_length=64)
    closed_at: datetime | None = _at(nullable=True, default=None, index=True)
    rating_status: str = Field(default="none", max_length=16)
    rating_expires_at: datetime | None = _at(nullable=True, default=None)
    rating_score: int | None = None
    rating_resolved: bool | None = None
    rating_comment: str | None = None
    # Last event seq handed out: incremented in the same transaction that writes the event.
    last_seq: int = 0
    # The newest message seq its workflow is known to have been told of (written after the
    # signals, in batches): the reconciler tells it of anything newer.
    signalled_seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # Read receipts: the highest seq each side has seen.
    visitor_read_seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    agent_read_seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = _at(default_factory=utcnow)
    # When its customer text was replaced by the marker (store/erasure.py): on request, or
    # by the retention schedule.
    erased_at: datetime | None = _at(nullable=True, default=None)
    # A bot answered first ("faq", "webhook"), and why and when it passed to a person.
    bot: str | None = Field(default=None, max_length=16)
    handoff_reason: str | None = Field(default=None, max_length=64)
    handed_off_at: datetime | None = _at(nullable=True, default=None)
    # Until when a stream of the visitor's counts as open (renewed while one is: api/streams.py);
    # past it, an agent's message is pushed to the app at once as visitor.unread.
    visitor_stream_until: datetime | None = _at(nullable=True, default=None)

    def visitor_context(self) -> VisitorContext:
        """What routing looks at."""
        return VisitorContext(
            channel=self.channel,
            entry=self.entry,
            tier=self.tier,
            language=self.language,
            has_order=self.order_id is not None,
        )


class Event(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("conversation_id", "seq"),
        # An activity that runs twice writes its event once.
        sa.UniqueConstraint("conversation_id", "dedupe_key"),
        # The monitor counts today's overflows: a small index over those events only.
        sa.Index(
            "ix_event_overflowed_at",
            "at",
            postgresql_where=sa.text("type = 'conversation.overflowed'"),
            sqlite_where=sa.text("type = 'conversation.overflowed'"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", max_length=32)
    seq: int
    type: str = Field(max_length=64)
    at: datetime = _at(default_factory=utcnow)
    # What everyone who may read the event reads (`audience` all: the visitor too)...
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    # ...and what staff alone read of it (agents' ids, notes, reasons): never the visitor.
    staff_data: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    audience: str = Field(
        default="all", max_length=8, sa_column_kwargs={"server_default": sa.text("'all'")}
    )
    dedupe_key: str | None = Field(default=None, max_length=128)


class Message(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("conversation_id", "sender_id", "client_message_id"),
        # The rate limit counts a sender's messages of the last minute in a conversation: an
        # index range, not a walk through everything they ever wrote there (bench/ B6).
        sa.Index("ix_message_sender_recent", "conversation_id", "sender_id", "created_at"),
        # A conversation's messages in order, and its newest (the reconciler's look at what
        # its workflow has not been told) an index lookup.
        sa.Index("ix_message_conversation_seq", "conversation_id", "seq"),
    )
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", max_length=32)
    seq: int
    sender_role: str = Field(max_length=16)
    sender_id: str = Field(max_length=200)
    client_message_id: str = Field(max_length=128)
    type: str = Field(max_length=16)
    content: str
    created_at: datetime = _at(default_factory=utcnow)


class QueueEntry(SQLModel, table=True):
    __tablename__ = "queue_entry"
    __table_args__ = (sa.Index("ix_queue_order", "skill_group", "priority", "enqueued_at", "id"),)
    # The id is the queue ticket: it breaks ties between equal enqueue times.
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", unique=True, max_length=32)
    skill_group: str = Field(max_length=64)
    priority: int = 0
    enqueued_at: datetime = _at(default_factory=utcnow)
    # The position last told to the visitor (queue.position_changed), to tell only changes.
    announced_position: int | None = None
    # The estimated wait last told with it (seconds; told again when it moves by a share).
    announced_wait: float | None = None
    # The group's expected handling time in the policy when this one joined (seconds): the
    # estimate's start before the group has a history (store/estimate.py).
    expected_handling_seconds: float | None = None


class Assignment(SQLModel, table=True):
    """The assignment log: who got which conversation, in which order, and when it was freed."""

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", max_length=32, index=True)
    agent_id: str = Field(foreign_key="agent.id", max_length=64, index=True)
    skill_group: str = Field(max_length=64)
    queue_ticket: int | None = None  # None: a direct transfer to the agent
    priority: int = 0
    enqueued_at: datetime = _at()
    # Indexed for the monitor's recent waits and handling times.
    assigned_at: datetime = _at(default_factory=utcnow, index=True)
    released_at: datetime | None = _at(nullable=True, default=None, index=True)


class LeftMessage(SQLModel, table=True):
    """What a visitor left when nobody could serve them: the team calls back."""

    __tablename__ = "left_message"
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", unique=True, max_length=32)
    customer_id: str = Field(max_length=200, index=True)
    skill_group: str | None = Field(default=None, max_length=64, index=True)
    content: str
    contact: str | None = Field(default=None, max_length=200)
    status: str = Field(default="open", max_length=16, index=True)
    created_at: datetime = _at(default_factory=utcnow)
    resolved_at: datetime | None = _at(nullable=True, default=None)
    resolved_by: str | None = Field(default=None, max_length=64)
    resolution_note: str | None = None


class Attachment(SQLModel, table=True):
    """A file a side of a conversation uploaded (store/attachments.py): what our inspection
    found it to be, and where its bytes (and its thumbnail's) are in the object store. Never
    the name it was uploaded with. A message of type image, video or file carries one
    (`message_seq`, once sent)."""

    id: str = Field(primary_key=True, max_length=32)
    conversation_id: str = Field(foreign_key="conversation.id", index=True, max_length=32)
    uploaded_by_role: str = Field(max_length=16)
    uploaded_by_id: str = Field(max_length=200)
    kind: str = Field(max_length=16)  # image | video | file
    content_type: str = Field(max_length=64)
    size: int
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    object_key: str = Field(max_length=200)
    thumbnail_key: str | None = Field(default=None, max_length=200)
    message_seq: int | None = None
    created_at: datetime = _at(default_factory=utcnow)


class BotTurn(SQLModel, table=True):
    """The bot's answer to one visitor message (store/bot.py): written once, with the bot's
    messages, so a retried answer finds it and sends nothing twice. What the figures count:
    answers per entry, misses (their questions stay in the message rows), hand-offs."""

    __tablename__ = "bot_turn"
    __table_args__ = (
        sa.UniqueConstraint("conversation_id", "visitor_seq"),
        sa.Index("ix_bot_turn_at", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", max_length=32)
    visitor_seq: int  # the message answered
    kind: str = Field(max_length=16)  # answer | miss | handoff
    entry_id: str | None = Field(default=None, max_length=64)  # the FAQ entry it matched
    score: float | None = None  # the FAQ match's confidence
    handoff_reason: str | None = Field(default=None, max_length=64)
    handoff_group: str | None = Field(default=None, max_length=64)
    last_seq: int = 0  # the seq of the bot's last message of this answer (0: none)
    at: datetime = _at(default_factory=utcnow)


class QueueSkip(SQLModel, table=True):
    """An agent who let this conversation go unanswered, or handed it on to a group, is not
    given it again while another agent of the group is online (store/assignment.py)."""

    __tablename__ = "queue_skip"
    conversation_id: str = Field(foreign_key="conversation.id", primary_key=True, max_length=32)
    agent_id: str = Field(foreign_key="agent.id", primary_key=True, max_length=64)


class AgentFeed(SQLModel, table=True):
    """The head of an agent's feed. Its seq is handed out under this row's lock, held to the
    commit, so the feed's order is its commit order and a stream resumes from one number."""

    __tablename__ = "agent_feed"
    agent_id: str = Field(foreign_key="agent.id", primary_key=True, max_length=64)
    last_seq: int = 0


class AgentEvent(SQLModel, table=True):
    """One entry of an agent's feed: an event of a conversation the agent holds or held
    (`event_id`), or an event of the agent themself, of no conversation (agent.status_changed:
    its `type`, `at` and `data` are kept here, since it belongs to this feed alone)."""

    __tablename__ = "agent_event"
    __table_args__ = (
        sa.CheckConstraint("(event_id IS NULL) <> (type IS NULL)", name="ck_agent_event_kind"),
    )
    agent_id: str = Field(foreign_key="agent.id", primary_key=True, max_length=64)
    seq: int = Field(primary_key=True)
    event_id: int | None = Field(default=None, foreign_key="event.id")
    type: str | None = Field(default=None, max_length=64)
    at: datetime | None = _at(nullable=True, default=None)
    data: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)


class AdminAction(SQLModel, table=True):
    """What an admin did that leaves no other trace: an erasure, who asked and how much it
    erased. Never whose data it was (the erased customer's id would outlive the erasure)."""

    __tablename__ = "admin_action"
    id: int | None = Field(default=None, primary_key=True)
    action: str = Field(max_length=32)
    by_id: str = Field(max_length=64)
    at: datetime = _at(default_factory=utcnow, index=True)
    conversations: int = 0
    messages: int = 0


class Ticket(SQLModel, table=True):
    """A ticket (工单): follow-up work after a chat or a left message, with its own workflow
    (`ticket-<id>`, workflows/ticket.py) owning its SLA timers. Changed only in store/tickets.py."""

    __table_args__ = (sa.Index("ix_ticket_group_status", "skill_group", "status"),)
    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=200)
    description: str = ""
    status: str = Field(default="open", max_length=16)
    priority: str = Field(default="normal", max_length=16)
    skill_group: str = Field(max_length=64)
    # An agent; None: the group's pool.
    assignee_id: str | None = Field(default=None, max_length=64, index=True)
    customer_id: str = Field(max_length=200, index=True)
    # The customer's context, copied from the conversation it was made from (staff only).
    attributes: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    order_id: str | None = Field(default=None, max_length=64)
    created_by_role: str = Field(max_length=16)
    created_by_id: str = Field(max_length=200)
    created_at: datetime = _at(default_factory=utcnow)
    updated_at: datetime = _at(default_factory=utcnow)
    # Since when it has its status: a pending or solved ticket's auto-close counts from here.
    status_since: datetime = _at(default_factory=utcnow)
    closed_at: datetime | None = _at(nullable=True, default=None)
    # SLA targets (None: its priority has none), when they were met, reminded and breached.
    first_response_due_at: datetime | None = _at(nullable=True, default=None)
    resolution_due_at: datetime | None = _at(nullable=True, default=None)
    first_responded_at: datetime | None = _at(nullable=True, default=None)
    first_response_reminded: bool = False
    resolution_reminded: bool = False
    first_response_breached_at: datetime | None = _at(nullable=True, default=None)
    resolution_breached_at: datetime | None = _at(nullable=True, default=None)
    # Bumped by every change; `told_version`, the newest its workflow has read (its plan):
    # the reconciler tells the workflow of a ticket whose change it has not read in time.
    version: int = 0
    told_version: int = 0
    # Last ticket event seq handed out (store/tickets.py append_ticket_event).
    last_seq: int = 0


class TicketLink(SQLModel, table=True):
    """A conversation (its transcript) or a left message a ticket is about."""

    __tablename__ = "ticket_link"
    __table_args__ = (
        sa.UniqueConstraint("ticket_id", "conversation_id"),
        sa.UniqueConstraint("ticket_id", "left_message_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    conversation_id: str | None = Field(
        default=None, foreign_key="conversation.id", max_length=32, index=True
    )
    left_message_id: int | None = Field(default=None, foreign_key="left_message.id")
    linked_at: datetime = _at(default_factory=utcnow)


class TicketComment(SQLModel, table=True):
    """A comment on a ticket: public (the customer reads it) or internal (staff only)."""

    __tablename__ = "ticket_comment"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    author_role: str = Field(max_length=16)  # agent | supervisor | customer | system (admin)
    author_id: str = Field(max_length=200)
    public: bool
    content: str
    created_at: datetime = _at(default_factory=utcnow)


class TicketEvent(SQLModel, table=True):
    """A ticket's event log: per-ticket seq without gaps; `data` for everyone who reads the
    ticket (the app, for its customer, unless `audience` is staff), `staff_data` for staff."""

    __tablename__ = "ticket_events"
    __table_args__ = (
        sa.UniqueConstraint("ticket_id", "seq"),
        # A timer's activity that runs twice writes its event once.
        sa.UniqueConstraint("ticket_id", "dedupe_key"),
    )
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id")
    seq: int
    type: str = Field(max_length=64)
    at: datetime = _at(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    staff_data: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    audience: str = Field(default="all", max_length=8)
    dedupe_key: str | None = Field(default=None, max_length=128)


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one event for one webhook endpoint, written in the event's transaction and
    delivered by the worker (courier.py) in seq order per subject, until it succeeds or is
    given up. Its id is the delivery's stable id (X-Switchboard-Delivery)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        # The courier's look for what is due, and the admin's list by status.
        sa.Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        # What holds a delivery back: an earlier one of its subject to its endpoint.
        sa.Index("ix_webhook_delivery_lane", "subject_id", "endpoint", "seq"),
    )
    id: int | None = Field(default=None, primary_key=True)
    endpoint: str = Field(max_length=64)
    # "conversation" or "ticket", and its id: what the order is kept within.
    subject: str = Field(max_length=16)
    subject_id: str = Field(max_length=64)
    seq: int
    type: str = Field(max_length=64)
    # Ordered deliveries wait for the earlier ones of their subject; an unordered one (the
    # offline push, visitor.unread) neither waits nor holds others back.
    ordered: bool = True
    # The event's data as this endpoint reads it (a message's text is joined in when sent:
    # it is stored once, in its message row).
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    at: datetime = _at()
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = _at()
    # A worker sending it holds it until then; one killed mid-send loses it to the next look.
    claimed_until: datetime | None = _at(nullable=True, default=None)
    # What went wrong last (a status, a connection error): never a body.
    last_error: str | None = Field(default=None, max_length=300)
    delivered_at: datetime | None = _at(nullable=True, default=None)
