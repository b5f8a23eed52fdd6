"""Plain types that cross the workflow boundary. No I/O, no clock, no environment here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from temporalio.common import SearchAttributeKey


class ConversationState(StrEnum):
    """What a client sees: `bot` while a bot answers (a routing rule sent it to one first)."""

    BOT = "bot"
    QUEUED = "queued"
    ACTIVE = "active"
    CLOSED = "closed"


class Stage(StrEnum):
    """Where the conversation workflow is in the lifecycle: its state, in finer steps
    (workflows/machine.py has the transitions)."""

    ROUTING = "routing"  # the routing rule and the service hours decide where it goes
    BOT = "bot"  # a bot answers the visitor; a hand-off (转人工) routes it on to the queue
    QUEUED = "queued"  # waiting in a skill group's queue
    # Assigned in the database (the agent_assigned signal), not yet recorded by the workflow
    # (the assignment's events, the state change, the first-reply timer): clients see queued.
    ASSIGNED = "assigned"
    AWAITING_FIRST_REPLY = "awaiting_first_reply"  # the agent has not written yet
    VISITOR_WROTE_LAST = "visitor_wrote_last"  # the agent has answered: no countdown runs
    COUNTING_DOWN = "counting_down"  # the visitor has not answered the agent: warning due
    WARNED = "warned"  # the idle warning went out: the auto-close is due
    CLOSED = "closed"  # the rating invite, then the rating or its expiry

    @property
    def state(self) -> ConversationState:
        return _STATE_OF_STAGE[self]


_STATE_OF_STAGE = {
    Stage.ROUTING: ConversationState.QUEUED,
    Stage.BOT: ConversationState.BOT,
    Stage.QUEUED: ConversationState.QUEUED,
    Stage.ASSIGNED: ConversationState.QUEUED,
    Stage.AWAITING_FIRST_REPLY: ConversationState.ACTIVE,
    Stage.VISITOR_WROTE_LAST: ConversationState.ACTIVE,
    Stage.COUNTING_DOWN: ConversationState.ACTIVE,
    Stage.WARNED: ConversationState.ACTIVE,
    Stage.CLOSED: ConversationState.CLOSED,
}


class CloseReason(StrEnum):
    AGENT_CLOSED = "agent_closed"
    VISITOR_CLOSED = "visitor_closed"
    IDLE_TIMEOUT = "idle_timeout"
    OVERFLOW = "overflow"
    OUT_OF_HOURS = "out_of_hours"
    ABANDONED = "abandoned"
    ADMIN_CLOSED = "admin_closed"
    # The bot answered, and the visitor left without asking for more (its last answer was no
    # miss, and nobody asked for a person).
    BOT_RESOLVED = "bot_resolved"


# The closes a request by each role ends in (a visitor who closes a wait abandons it): how a
# close sent again is told from someone else's.
CLOSED_AT_REQUEST_OF: dict[str, frozenset[str]] = {
    "visitor": frozenset({CloseReason.VISITOR_CLOSED, CloseReason.ABANDONED}),
    "agent": frozenset({CloseReason.AGENT_CLOSED}),
    "admin": frozenset({CloseReason.ADMIN_CLOSED}),
    "supervisor": frozenset({CloseReason.ADMIN_CLOSED}),
}
# Who closes for the service team (the visitor reads "closed by our service team").
TEAM_ROLES = frozenset({"admin", "supervisor"})


class RatingStatus(StrEnum):
    NONE = "none"
    PENDING = "pending"
    RATED = "rated"
    EXPIRED = "expired"


class Role(StrEnum):
    VISITOR = "visitor"
    AGENT = "agent"
    SUPERVISOR = "supervisor"  # an agent record that oversees its groups' conversations
    ADMIN = "admin"
    APP = "app"
    SYSTEM = "system"
    BOT = "bot"  # the bot's messages: the built-in FAQ bot's, or an external one's


class AgentStatus(StrEnum):
    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


# Why an agent went away by themself (agent.status_changed's `reason`): no stream of theirs was
# open for the policy's agents.presence_timeout.
NO_CONNECTION = "no_connection"


class MessageType(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    FILE = "file"  # a PDF
    EMOJI = "emoji"


class EventType(StrEnum):
    MESSAGE_CREATED = "message.created"
    MESSAGE_READ = "message.read"
    STATE_CHANGED = "conversation.state_changed"
    ASSIGNED = "conversation.assigned"
    ROUTED = "conversation.routed"
    OVERFLOWED = "conversation.overflowed"
    QUEUE_POSITION = "queue.position_changed"
    IDLE_WARNING = "conversation.idle_warning"
    CLOSED = "conversation.closed"
    RATING_INVITED = "rating.invited"
    RATING_SUBMITTED = "rating.submitted"
    RATING_EXPIRED = "rating.expired"
    TRANSFERRED = "conversation.transferred"
    REQUEUED = "conversation.requeued"
    LEFT_MESSAGE_CREATED = "left_message.created"
    LEFT_MESSAGE_RESOLVED = "left_message.resolved"
    NOTE_CREATED = "note.created"  # staff only: an internal note, or a transfer's note
    # Staff only: the app changed what it tells of the customer (its keys, never its values).
    ATTRIBUTES_CHANGED = "conversation.attributes_changed"
    # The bot passed the conversation to a person (转人工): why, and (staff) where to and
    # which FAQ entries it matched.
    HANDED_OFF = "conversation.handed_off"
    # Of the agent, not of a conversation: on the agent's feed alone.
    AGENT_STATUS_CHANGED = "agent.status_changed"


class TicketStatus(StrEnum):
    """A ticket's (工单) status: open → pending (waiting for the customer) → solved → closed;
    a customer's reply reopens a pending or solved one."""

    OPEN = "open"
    PENDING = "pending"
    SOLVED = "solved"
    CLOSED = "closed"


class TicketPriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    def raised(self) -> TicketPriority:
        """One level up (urgent stays urgent): an escalation on an SLA breach."""
        order = list(TicketPriority)
        return order[min(order.index(self) + 1, len(order) - 1)]


class TicketTimer(StrEnum):
    """What a ticket's workflow waits for next (store/tickets.py works out which is due)."""

    FIRST_RESPONSE_REMINDER = "first_response_reminder"
    FIRST_RESPONSE_BREACH = "first_response_breach"
    RESOLUTION_REMINDER = "resolution_reminder"
    RESOLUTION_BREACH = "resolution_breach"
    PENDING_CLOSE = "pending_close"  # pending, no customer answer for [tickets] pending_close_after
    SOLVED_CLOSE = "solved_close"  # solved, not reopened for [tickets] solved_close_after


class TicketEventType(StrEnum):
    CREATED = "ticket.created"
    STATUS_CHANGED = "ticket.status_changed"
    PRIORITY_CHANGED = "ticket.priority_changed"
    ASSIGNED = "ticket.assigned"  # staff only: the agent (or the pool) and the group
    COMMENTED = "ticket.commented"  # an internal comment's: staff only
    LINKED = "ticket.linked"  # staff only: a conversation or a left message
    REOPENED = "ticket.reopened"  # a customer's reply to a pending or solved ticket
    SLA_REMINDER = "ticket.sla_reminder"  # staff only: a target breaches in remind_before
    SLA_BREACHED = "ticket.sla_breached"  # staff only
    ESCALATED = "ticket.escalated"  # staff only: the priority raised, or moved to a group


class Audience(StrEnum):
    """Who reads an event: everyone who may read the conversation, or its staff alone (agents,
    admins). Staff words (notes, transfer notes, requeue reasons, agents' ids) never reach a
    customer."""

    ALL = "all"
    STAFF = "staff"


class OnClosing(StrEnum):
    """What becomes of a conversation still queued when its group's service hours end."""

    KEEP = "keep"  # it waits on for the next opening
    CLOSE = "close"  # closed out_of_hours, with the next opening and a left message offered


# What an app may tell staff of its customer, as stored (compact JSON, UTF-8).
MAX_ATTRIBUTES_BYTES = 4096


def attributes_size(attributes: Mapping[str, Any]) -> int:
    """The attributes' size as they are stored: compact JSON, UTF-8."""
    return len(json.dumps(attributes, ensure_ascii=False, separators=(",", ":")).encode())


# overflow_to may name a group or this: take a left message instead of queueing further.
LEFT_MESSAGE = "left_message"
MAX_OVERFLOW_HOPS = 3
# Closes after which the visitor is offered a left message.
LEFT_MESSAGE_REASONS = frozenset({"out_of_hours", "overflow"})


# Supervisor view: custom search attributes (Keyword budget on SQL visibility is 10).
SA_STATE = SearchAttributeKey.for_keyword("ConversationState")
SA_SKILL_GROUP = SearchAttributeKey.for_keyword("SkillGroup")
SA_AGENT = SearchAttributeKey.for_keyword("AgentId")
SA_CHANNEL = SearchAttributeKey.for_keyword("Channel")
SA_CLOSE_REASON = SearchAttributeKey.for_keyword("CloseReason")
SA_PRIORITY = SearchAttributeKey.for_int("QueuePriority")
SA_OVERFLOW_HOPS = SearchAttributeKey.for_int("OverflowHops")
SA_QUEUED_AT = SearchAttributeKey.for_datetime("QueuedAt")
# When the conversation closed (the workflow's own CloseTime comes later, after the rating).
SA_CLOSED_AT = SearchAttributeKey.for_datetime("ClosedAt")
# The Ticket workflow's (workflows/ticket.py): its status, priority and assignee (an agent's
# id; unset: the group's pool), and when its next SLA target breaches (unset: none pending).
SA_TICKET_STATUS = SearchAttributeKey.for_keyword("TicketStatus")
SA_TICKET_PRIORITY = SearchAttributeKey.for_keyword("TicketPriority")
SA_TICKET_ASSIGNEE = SearchAttributeKey.for_keyword("TicketAssignee")
SA_SLA_BREACH_AT = SearchAttributeKey.for_datetime("SlaBreachAt")
SEARCH_ATTRIBUTES = (
    SA_STATE,
    SA_SKILL_GROUP,
    SA_AGENT,
    SA_CHANNEL,
    SA_CLOSE_REASON,
    SA_PRIORITY,
    SA_OVERFLOW_HOPS,
    SA_QUEUED_AT,
    SA_CLOSED_AT,
    SA_TICKET_STATUS,
    SA_TICKET_PRIORITY,
    SA_TICKET_ASSIGNEE,
    SA_SLA_BREACH_AT,
)


# --- workflow input, signals, updates -------------------------------------------------------


@dataclass
class MessagePosted:
    """The API stored a message; `seq` orders it within the conversation."""

    message_id: int
    seq: int
    sender_role: str
    # An agent's message carries the policy's idle durations as the sender's process read them
    # (a countdown it starts needs no read of its own); None from older senders, and for others.
    idle_warning_after_s: float | None = None
    idle_close_after_s: float | None = None


@dataclass
class AgentAssigned:
    agent_id: str


@dataclass
class CloseRequest:
    by_role: str
    by_id: str


@dataclass
class RatingSubmission:
    score: int
    resolved: bool | None = None
    # Never sent (the API stores the comment itself): read from older histories only.
    comment: str | None = None


@dataclass
class TransferRequest:
    by_role: str
    by_id: str
    to_agent_id: str | None = None
    to_skill_group: str | None = None
    # Never sent (the API writes the note for the next agent itself): older histories only.
    note: str | None = None


@dataclass
class TransferInput:
    conversation_id: str
    request: TransferRequest
    round: int  # which assignment of the conversation this ends


@dataclass
class TransferResult:
    ok: bool
    reason: str | None = None
    agent_id: str | None = None
    placement: QueuePlacement | None = None
    # The seq of the handover's last event: a message with a greater seq came after it, from
    # the new agent or the visitor (0: a queue transfer, or a result from an older worker).
    handover_seq: int = 0


@dataclass
class RequeueInput:
    conversation_id: str
    agent_id: str
    round: int


@dataclass
class AssignmentRecord:
    conversation_id: str
    round: int


@dataclass
class IdleCountdown:
    """The idle countdown's times: armed by an unanswered agent message (seq > 0)."""

    agent_message_seq: int = 0
    armed_at: datetime | None = None
    # idle_close_after as the policy said when the countdown started (its warning_at likewise).
    close_after_s: float | None = None
    # idle_warning_after likewise: a further agent message moves `armed_at` (and the seq) on, and
    # the warning's timer, when it fires, re-arms for `armed_at` + this (no timer per message).
    warning_after_s: float | None = None
    warning_at: datetime | None = None
    warned: bool = False  # for older code only: the stage says it (workflows/patches.py)
    close_at: datetime | None = None


@dataclass
class ConversationFlow:
    """All workflow state in one place: the workflow's input, and what continue-as-new carries
    on. Its wire form outlives the code: a new field needs a default, and an old one stays
    while conversations that older code wrote may be running (workflows/patches.py). Ids,
    seqs and routing values only: no customer id or customer text (what the histories keep,
    anyone who reads them reads)."""

    conversation_id: str
    channel: str
    tier: str | None = None
    stage: Stage = Stage.ROUTING
    state: str = ConversationState.QUEUED  # the stage's, for clients (the workflow keeps it so)
    skill_group: str | None = None
    priority: int = 0
    routing_rule: int | None = None
    policy_version: str | None = None  # of the policy that routed it
    queued_at: datetime | None = None
    # The queue the conversation waits in now: since when, for how long at most, hops so far.
    in_group_since: datetime | None = None
    max_queue_wait_s: float | None = None
    overflow_to: str | None = None
    overflow_hops: int = 0
    # When that group's service hours end, what it does then with those still waiting
    # (OnClosing), and when it opens again.
    group_closes_at: datetime | None = None
    on_closing: str = OnClosing.KEEP
    group_next_opening: datetime | None = None
    first_reply_timeout_s: float | None = None
    # Assignments so far (a transfer or a missed first reply starts another).
    assignment_round: int = 0
    first_reply_due_at: datetime | None = None
    transfer_request: TransferRequest | None = None
    agent_id: str | None = None
    close_request: CloseRequest | None = None
    close_reason: str | None = None
    last_message_seq: int = 0
    last_message_role: str | None = None
    last_activity_at: datetime | None = None
    closed_at: datetime | None = None
    countdown: IdleCountdown = field(default_factory=IdleCountdown)
    rating_status: str = RatingStatus.NONE
    rating_expires_at: datetime | None = None
    rating: RatingSubmission | None = None
    # The bot phase (a routing rule's `bot`): which bot ("faq", "webhook"; None: none), the
    # newest visitor message it answered, the seq of its own newest message, whether that
    # answer was a miss, how long a silent visitor is kept (the policy's, as of its last
    # answer), and why and where it handed the conversation to a person.
    bot: str | None = None
    bot_answered_seq: int = 0
    bot_last_seq: int = 0
    bot_missed: bool = False
    bot_idle_close_s: float | None = None
    handoff_reason: str | None = None
    handoff_group: str | None = None
    # Where the conversation stood, as older code said it (with `countdown.warned`): read once
    # from a flow that code wrote, written for it at continue-as-new (workflows/patches.py).
    routed: bool = False
    agent_replied: bool = False
    assignment_recorded: bool = False
    # Older code required it (the customer's id): written empty, so an older worker can still
    # read the flow, and ignored when an older flow carries it (workflows/patches.py).
    customer_id: str = ""


@dataclass
class TicketFlow:
    """The Ticket workflow's input: its id alone (its text and customer stay in the database)."""

    ticket_id: int


@dataclass
class TicketChanged:
    """The API changed the stored ticket (status, priority, assignee, a comment): plan again.
    `version` is the ticket's version after the change."""

    version: int


@dataclass
class TicketPlanRequest:
    ticket_id: int
    at: datetime  # workflow time: what is due is judged at this instant


@dataclass
class TicketPlan:
    """The stored ticket as its workflow needs it: enums, an agent id, times; and its next
    timer (None: nothing to wait for but a change)."""

    status: str
    priority: str
    assignee_id: str | None
    version: int
    timer: str | None = None
    due_at: datetime | None = None
    # The earliest SLA target not yet met nor breached (SlaBreachAt).
    sla_breach_at: datetime | None = None


@dataclass
class TicketTimerDue:
    """A timer of the plan fired: the activity acts if the stored ticket still has it due."""

    ticket_id: int
    timer: str
    at: datetime


# --- activity inputs and results ------------------------------------------------------------


@dataclass
class RouteRequest:
    conversation_id: str
    at: datetime  # workflow time: service hours are judged at this instant


@dataclass
class RouteResult:
    skill_group: str
    priority: int
    rule: int | None
    is_open: bool
    next_opening: datetime | None
    policy_version: str | None = None
    # The rule sends it to a bot first ("faq", "webhook"), which keeps a silent visitor this
    # long; None: straight to the queue (and from an older worker).
    bot: str | None = None
    bot_idle_close_s: float | None = None


@dataclass
class BotTurnRequest:
    """Answer the visitor's messages stored after `after_seq` (the bot reads them itself: no
    customer text crosses into Temporal)."""

    conversation_id: str
    bot: str
    after_seq: int


@dataclass
class BotTurnResult:
    """What the bot did: ids, seqs and names only."""

    answered_seq: int  # the newest visitor message answered (after_seq: none was waiting)
    last_seq: int  # the seq of the bot's newest message (0: it wrote none)
    missed: bool  # the last answer was a miss (not understood)
    handoff_reason: str | None  # a person takes over now, and why
    handoff_group: str | None  # where to (None: the routed group)
    idle_close_after_s: float  # the policy's bot.idle_close_after now


@dataclass
class HandOffRequest:
    conversation_id: str
    reason: str
    skill_group: str | None  # None: the group the routing rule named
    at: datetime  # workflow time: the group's service hours are judged at this instant


@dataclass
class QueueRequest:
    conversation_id: str
    skill_group: str
    priority: int
    at: datetime
    hop: int = 0  # 0: the routed group; n: the n-th overflow
    from_group: str | None = None  # the group it overflowed from


@dataclass
class QueuePlacement:
    """Where `enter_queue` put the conversation, or why the group would not take it."""

    skill_group: str
    accepted: bool
    queued_at: datetime | None = None
    refused_because: str | None = None  # "full" | "closed"
    overflow_to: str | None = None
    max_queue_wait_s: float | None = None
    first_reply_timeout_s: float | None = None
    agent_id: str | None = None  # already assigned (a retried move found it served)
    # The group's service hours: when they next end (None: it has none), what it does then
    # with those still waiting (OnClosing), and when it opens after that.
    closes_at: datetime | None = None
    on_closing: str = OnClosing.KEEP
    next_opening: datetime | None = None


@dataclass
class Timeouts:
    idle_warning_after_s: float
    idle_close_after_s: float
    rating_window_s: float


@dataclass
class IdleWarningInput:
    conversation_id: str
    agent_message_seq: int
    close_at: datetime
    idle_close_after_s: float


@dataclass
class CloseInput:
    conversation_id: str
    reason: str
    closed_by: str | None = None
    next_opening: datetime | None = None  # named in the out-of-hours message
    # Invite the visitor to rate it in the same transaction (an agent served it); the activity
    # then answers when the rating window ends (ISO 8601).
    invite_rating: bool = False
    # A close because nobody wrote after this seq (the idle countdown's agent message): the
    # activity declines it (NEWER_MESSAGE) if a newer message is stored by then (invariant 8).
    silent_after_seq: int | None = None
    # An overflow close: the group it overflows from into a left message, and that hop's number
    # (its conversation.overflowed event is written with the close).
    overflowed_from: str | None = None
    overflow_hop: int = 0
    # A close because nobody took it in time (the queue wait ran out, the group's closing came):
    # declined (ASSIGNED_MEANWHILE, with the agent's id) if an agent has taken it by then.
    unless_assigned: bool = False


@dataclass
class RatingInvite:
    conversation_id: str
    expires_at: datetime


@dataclass
class RatingRecord:
    conversation_id: str
    rating: RatingSubmission


@dataclass
class RetentionRun:
    """What the transcript retention run erased so far: its input (from its schedule, none;
    from continue-as-new, the totals carried on) and its result. Counts only."""

    conversations: int = 0
    messages: int = 0
    tickets: int = 0


@dataclass
class RetentionBatch:
    """One batch the retention activity erased, and whether a full batch was due (more may be)."""

    conversations: int
    messages: int
    more: bool
    tickets: int = 0  # (absent from the results of runs before tickets)


@dataclass
class ConversationSnapshot:
    """What the workflow knows now (the `snapshot` query): state, who, and its pending timers
    with when they fire (None: not pending)."""

    conversation_id: str
    state: str
    channel: str
    skill_group: str | None
    priority: int
    routing_rule: int | None
    policy_version: str | None
    overflow_hops: int
    agent_id: str | None
    close_reason: str | None
    rating_status: str
    queued_at: datetime | None
    last_message_seq: int
    last_activity_at: datetime | None
    closed_at: datetime | None
    overflow_at: datetime | None
    first_reply_due_at: datetime | None
    idle_warning_at: datetime | None
    idle_close_at: datetime | None
    rating_expires_at: datetime | None
    closing_at: datetime | None = None  # the group's closing, which closes a waiting one
    bot_close_at: datetime | None = None  # the bot's idle close, if the visitor stays silent
