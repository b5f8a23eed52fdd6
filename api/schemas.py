"""Public request and response models. Table rows never leave the API unmapped."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from domain.types import (
    MAX_ATTRIBUTES_BYTES,
    AgentStatus,
    ConversationSnapshot,
    MessageType,
    Role,
    TicketPriority,
    TicketStatus,
    attributes_size,
)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank (only whitespace)")
    return text


# Text a person writes: something besides whitespace.
WrittenText = Annotated[str, AfterValidator(_not_blank)]

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_8601(value: object) -> object:
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 time with its zone, e.g. 2026-12-01T09:00:00Z")
    return value


# A time a caller gives: ISO 8601 with its zone (never a bare number of seconds).
IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_8601)]

# What an app tells staff about its customer: a JSON object, flat or one level deep, of at most
# MAX_ATTRIBUTES_BYTES encoded (name, membership level, order summary, links).
AttributeKey = Annotated[str, Field(min_length=1, max_length=64)]
AttributeScalar = StrictStr | StrictInt | StrictFloat | StrictBool | None
AttributeValue = AttributeScalar | dict[AttributeKey, AttributeScalar] | list[AttributeScalar]


def _small_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    if attributes_size(attributes) > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"attributes are larger than {MAX_ATTRIBUTES_BYTES} bytes as JSON")
    return attributes


Attributes = Annotated[dict[AttributeKey, AttributeValue], AfterValidator(_small_attributes)]

# Image and video messages are shown by the other side's page: only a web address it may fetch
# as such (javascript:, data: or http: ones never reach a page).
_ATTACHED_TYPES = frozenset({MessageType.IMAGE, MessageType.VIDEO, MessageType.FILE})


class ErrorBody(BaseModel):
    detail: str


class FieldError(BaseModel):
    """One invalid part of a request, as FastAPI's request validation reports it."""

    loc: list[str | int] = Field(description='Where: e.g. `["body", "content"]`')
    msg: str
    type: str


class InvalidInput(BaseModel):
    """422: a sentence (a value the API refuses), or one entry per field that failed
    validation (a body or parameter that does not match this document)."""

    detail: str | list[FieldError]


def errors(described: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error codes, each answered with an ErrorBody (InvalidInput for
    422)."""
    return {
        code: {"model": InvalidInput if code == 422 else ErrorBody, "description": text}
        for code, text in described.items()
    }


def too_many_requests(text: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a 429 with its Retry-After header."""
    retry_after = {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
    return {429: {"model": ErrorBody, "description": text, "headers": {"Retry-After": retry_after}}}


UNAUTHORIZED = {401: "Missing or invalid bearer token"}
BEYOND_NEWEST = {
    422: "Invalid parameter, or an after_seq or Last-Event-ID beyond the newest event "
    "(not from this log: start again from 0)"
}
ENGINE_DOWN = {
    503: "Temporal or the database unreachable; nothing was lost, retry the same request"
}


# --- agents ---------------------------------------------------------------------------------


# The staff an agent record is: agents serve conversations, supervisors oversee their groups.
StaffRole = Literal["agent", "supervisor"]
AgentName = Annotated[str, Field(min_length=1, max_length=200, examples=["Alice"])]
SkillGroupNames = Annotated[
    list[Annotated[str, Field(max_length=64)]],
    Field(min_length=1, max_length=20, examples=[["general"]]),
]
Capacity = Annotated[int, Field(ge=1, le=50, examples=[3])]


class AgentCreate(_Input):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["alice"])
    name: AgentName
    skill_groups: SkillGroupNames
    max_concurrent: Capacity
    role: StaffRole = Field(
        default="agent",
        description="agent (serves conversations) or supervisor (oversees its groups' "
        "conversations: reads them, notes, transfers, closes, assigns; is never assigned one)",
    )


class AgentUpdate(_Input):
    """What an admin changes of an agent: any of these (one at least); what is left out stays."""

    name: AgentName | None = None
    skill_groups: SkillGroupNames | None = Field(
        default=None, description="The agent's groups from now on, instead of theirs"
    )
    max_concurrent: Capacity | None = Field(
        default=None,
        description="Below the agent's load, nothing is taken from them: they get no new "
        "conversation until the load is below it",
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> AgentUpdate:
        if self.name is None and self.skill_groups is None and self.max_concurrent is None:
            raise ValueError("give name, skill_groups or max_concurrent")
        return self


class AgentPublic(BaseModel):
    id: str
    name: str
    role: StaffRole = "agent"
    skill_groups: list[str]
    status: AgentStatus
    load: int = Field(description="Conversations currently assigned")
    max_concurrent: int
    last_assigned_at: datetime | None
    feed_seq: int = Field(
        description="Newest seq of the agent's feed: stream from here to miss nothing after now"
    )
    active: bool = Field(description="False once deactivated: their token is refused")


class AgentCreated(AgentPublic):
    token: str = Field(description="The agent's bearer token; shown once")


class AgentPage(BaseModel):
    agents: list[AgentPublic]
    has_more: bool = Field(description="More after the last: ask again with `after` its id")


class AgentStatusUpdate(_Input):
    status: AgentStatus


# --- conversations --------------------------------------------------------------------------


class ConversationCreate(_Input):
    customer_id: str = Field(min_length=1, max_length=200, examples=["customer-42"])
    channel: str = Field(
        default="web", pattern=r"^[a-z0-9_]{1,64}$", examples=["web", "app", "order_page"]
    )
    entry: str | None = Field(
        default=None, pattern=r"^[a-z0-9_]{1,64}$", description="Where in the app the chat began"
    )
    tier: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,32}$", examples=["vip"])
    language: str | None = Field(default=None, pattern=r"^[A-Za-z-]{2,16}$", examples=["zh-CN"])
    order_id: str | None = Field(default=None, min_length=1, max_length=64)
    attributes: Attributes | None = Field(
        default=None,
        description="What your app vouches for about the customer, shown to staff alone: a "
        "JSON object, flat or one level deep, at most 4 KiB (name, membership, order summary, "
        "links). Given again for the customer's open conversation, it replaces the stored one",
        examples=[{"name": "Li Lei", "membership": "gold", "order": {"total": "¥299"}}],
    )


class AttributesUpdate(_Input):
    """A JSON merge patch of the attributes (RFC 7396, one level): a key with null is removed,
    any other replaces its value."""

    attributes: dict[AttributeKey, AttributeValue] = Field(
        examples=[{"membership": "platinum", "coupon": None}]
    )


class AttributesPublic(BaseModel):
    conversation_id: str
    attributes: dict[str, Any]


class RatingPublic(BaseModel):
    status: str = Field(description="none | pending | rated | expired")
    score: int | None = None
    resolved: bool | None = None
    expires_at: datetime | None = None


class SopStepPublic(BaseModel):
    text: str
    canned_reply: str | None = Field(
        description="The shortcut of the canned reply for this step (GET /v1/canned-replies)"
    )


class SopPublic(BaseModel):
    """The standard operating procedure for a conversation: the policy's first [[sop]] whose
    `when` matches it."""

    title: str
    steps: list[SopStepPublic]


class ConversationPublic(BaseModel):
    id: str
    customer_id: str
    channel: str
    state: str = Field(description="bot | queued | active | closed")
    close_reason: str | None
    skill_group: str | None
    priority: int | None = Field(description="Staff only: higher is served first")
    routing_rule: int | None = Field(
        description="Staff only: index of the matched [[routing]] rule (null: the default group)"
    )
    policy_version: str | None = Field(
        description="Staff only: policy version of its latest decision"
    )
    agent_id: str | None = Field(description="Its agent's id (staff only: null for the visitor)")
    agent_name: str | None = Field(default=None, description="Its agent's display name")
    queue_position: int | None = Field(description="1-based place in the queue while queued")
    estimated_wait: float | None = Field(
        description="While queued: expected wait in seconds, from the place, the group's online "
        "agents' free and busy seats and its recent handling times (at first the policy's "
        "`expected_handling_time`); 0 when a seat is free for it; null only when no agent of "
        "the group is online"
    )
    last_seq: int = Field(description="seq of the newest event")
    visitor_read_seq: int = Field(description="The visitor has seen everything up to this seq")
    agent_read_seq: int = Field(description="The agent has seen everything up to this seq")
    rating: RatingPublic
    created_at: datetime
    closed_at: datetime | None
    sop: SopPublic | None = Field(
        default=None,
        description="Staff only (null for the visitor, and where no [[sop]] matches): the steps "
        "to follow with this conversation",
    )
    # Staff alone read these (its agent, supervisors of its group, admins): null for the visitor.
    entry: str | None = Field(default=None, description="Staff only: where the chat began")
    tier: str | None = Field(default=None, description="Staff only")
    language: str | None = Field(default=None, description="Staff only")
    order_id: str | None = Field(default=None, description="Staff only: the app's order id")
    attributes: dict[str, Any] | None = Field(
        default=None, description="Staff only: what the app vouches for about the customer"
    )
    bot: str | None = Field(
        default=None, description="Staff only: the bot that answered first (faq | webhook)"
    )
    handoff_reason: str | None = Field(
        default=None,
        description="Staff only: why the bot passed it to a person (null: it did not)",
    )


class CustomerConversation(BaseModel):
    """One of a customer's conversations, as staff list them (the transcript: /events)."""

    id: str
    channel: str
    state: str
    close_reason: str | None
    skill_group: str | None
    agent_id: str | None
    agent_name: str | None
    rating_score: int | None
    rating_resolved: bool | None
    created_at: datetime
    closed_at: datetime | None


class ConversationAssign(_Input):
    agent_id: str = Field(min_length=1, max_length=64, examples=["alice"])


class ConversationCreated(ConversationPublic):
    visitor_token: str = Field(
        description="Bearer token for this conversation's visitor: valid while it is open and "
        "until its rating window ends"
    )


class VisitorTokenPublic(BaseModel):
    conversation_id: str
    visitor_token: str = Field(description="Bearer token for this conversation's visitor")
    expires_at: datetime | None = Field(
        description="When it stops working; null while the conversation is open (it then works "
        "until the rating window ends)"
    )


class MessageCreate(_Input):
    client_message_id: str = Field(
        min_length=1, max_length=128, description="Chosen by the client; a retry reuses it"
    )
    type: MessageType = MessageType.TEXT
    content: str = Field(
        default="",
        description="The text; for an image, a video or a file, an optional caption",
    )
    attachment_id: str | None = Field(
        default=None,
        pattern=r"^att_[0-9a-f]{24}$",
        description="For an image, a video or a file: what POST …/attachments answered",
    )

    @model_validator(mode="after")
    def _text_or_attachment(self) -> MessageCreate:
        if self.type in _ATTACHED_TYPES:
            if self.attachment_id is None:
                raise ValueError(
                    f"a message of type {self.type} carries attachment_id: upload the file "
                    "first (POST /v1/conversations/{id}/attachments)"
                )
            if self.content and not self.content.strip():
                raise ValueError("a caption is not blank (leave it out instead)")
        else:
            if self.attachment_id is not None:
                raise ValueError("only image, video and file messages carry an attachment")
            _not_blank(self.content)
        return self


class TransferCreate(_Input):
    to_agent_id: str | None = Field(default=None, max_length=64)
    to_skill_group: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=2000, description="For the next agent")

    @model_validator(mode="after")
    def _one_target(self) -> TransferCreate:
        if (self.to_agent_id is None) == (self.to_skill_group is None):
            raise ValueError("give exactly one of to_agent_id and to_skill_group")
        return self


class NoteCreate(_Input):
    content: WrittenText = Field(
        min_length=1, max_length=2000, description="For staff: never shown to the visitor"
    )


class ReadReceipt(_Input):
    seq: int = Field(ge=1, description="Everything up to this seq has been seen")


class ReadState(BaseModel):
    conversation_id: str
    visitor_read_seq: int
    agent_read_seq: int


class TypingPublic(BaseModel):
    type: str = "conversation.typing"
    conversation_id: str
    by_role: str
    by_id: str | None = Field(
        description="The visitor's id; null for the agent (a visitor never reads an agent's id)"
    )
    at: datetime


class AttachmentPublic(BaseModel):
    attachment_id: str
    kind: str = Field(description="image | video | file (a PDF)")
    content_type: str = Field(description="From our inspection of the bytes")
    size: int = Field(description="Bytes, as stored (images re-encoded)")
    width: int | None = None
    height: int | None = None
    duration: float | None = Field(default=None, description="Seconds, for a video")
    url: str = Field(
        description="Its path: with your bearer token, or `?ticket=` from POST "
        "/v1/stream-tickets for a browser"
    )
    thumbnail_url: str | None = Field(default=None, description="An image's thumbnail (JPEG)")


class MessagePublic(BaseModel):
    id: int
    conversation_id: str
    seq: int
    sender_role: str
    sender_id: str
    client_message_id: str
    type: str
    content: str
    created_at: datetime
    attachment: AttachmentPublic | None = None


class EventPublic(BaseModel):
    seq: int
    type: str
    at: datetime
    data: dict[str, Any]


class EventPage(BaseModel):
    conversation_id: str
    events: list[EventPublic]
    has_more: bool


class AgentEventPublic(EventPublic):
    """An event of one of the agent's conversations, or of the agent themself
    (agent.status_changed), in the agent's feed."""

    agent_seq: int = Field(description="Its place in the agent's feed (the stream's `id:`)")
    conversation_id: str | None = Field(
        description="The event's conversation; null for the agent's own (agent.status_changed)"
    )
    seq: int | None = Field(  # type: ignore[assignment]
        description="Its seq in the conversation; null for the agent's own events"
    )


class AgentEventPage(BaseModel):
    agent_id: str
    events: list[AgentEventPublic]
    has_more: bool


class RatingCreate(_Input):
    score: int = Field(ge=1, le=5)
    resolved: bool | None = None
    comment: str | None = Field(default=None, max_length=2000)


class Health(BaseModel):
    status: str
    database: str
    temporal: str


# --- staff assist ---------------------------------------------------------------------------


class CannedReplyPublic(BaseModel):
    shortcut: str
    title: str
    text: str = Field(
        description="With conversation_id: its placeholders filled for that conversation; "
        "without: as written ({customer_name}, {agent_name}, {order_id})"
    )
    skill_groups: list[str] | None = Field(description="The groups it is for; null: every group")
    unfilled: list[str] = Field(
        description="Placeholders the conversation had no value for, filled with the policy's "
        "canned_reply_fallbacks: worth a look before sending"
    )


class CannedReplyPage(BaseModel):
    canned_replies: list[CannedReplyPublic] = Field(description="In the policy file's order")
    has_more: bool = Field(description="More matched than a page holds: narrow the query")


# --- admin ----------------------------------------------------------------------------------


class PolicyPublic(BaseModel):
    version: str = Field(description="A hash of the policy file in force")
    path: str
    loaded_at: datetime
    last_error: str | None = Field(
        description="Why the newest edit of the file was refused (the policy in force stays)"
    )
    policy: dict[str, Any]


class ConversationSupervision(BaseModel):
    workflow: ConversationSnapshot = Field(description="The workflow's `snapshot` query")
    queue_position: int | None
    estimated_wait: float | None = Field(
        description="As in the conversation's view: null only when no agent of its group is online"
    )


# --- left messages --------------------------------------------------------------------------


class LeftMessageCreate(_Input):
    content: WrittenText = Field(min_length=1, max_length=4000)
    contact: str | None = Field(
        default=None, max_length=200, description="How to reach the visitor, if not the app"
    )


class LeftMessageResolve(_Input):
    note: str | None = Field(default=None, max_length=2000)


class LeftMessagePublic(BaseModel):
    id: int
    conversation_id: str
    customer_id: str
    skill_group: str | None
    content: str
    contact: str | None
    status: str = Field(description="open | resolved")
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None


# --- tickets --------------------------------------------------------------------------------

SkillGroupName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$", examples=["after_sales"])]
AgentId = Annotated[str, Field(min_length=1, max_length=64, examples=["alice"])]
TicketSubject = Annotated[WrittenText, Field(min_length=1, max_length=200)]
TicketText = Annotated[str, Field(max_length=10_000)]


class TicketFromConversation(_Input):
    """A ticket made of a conversation (or a left message): its customer and context come
    with it."""

    subject: TicketSubject
    description: TicketText = ""
    priority: TicketPriority = TicketPriority.NORMAL
    skill_group: SkillGroupName | None = Field(
        default=None, description="Default: the conversation's group (or the policy's default)"
    )
    assignee_id: AgentId | None = Field(
        default=None,
        description="An agent of the group; default: an agent who makes it, else the group's pool",
    )


class TicketCreate(TicketFromConversation):
    customer_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The app's customer; or give a conversation or a left message",
    )
    conversation_id: str | None = Field(default=None, min_length=1, max_length=64)
    left_message_id: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _someone(self) -> TicketCreate:
        if (self.customer_id, self.conversation_id, self.left_message_id) == (None, None, None):
            raise ValueError("give customer_id, conversation_id or left_message_id")
        return self


class TicketUpdate(_Input):
    """What to change: only the fields given. `assignee_id: null` hands it to the pool."""

    status: TicketStatus | None = None
    priority: TicketPriority | None = None
    assignee_id: AgentId | None = None

    @model_validator(mode="after")
    def _something(self) -> TicketUpdate:
        if not self.model_fields_set:
            raise ValueError("give status, priority or assignee_id")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null")
        if "priority" in self.model_fields_set and self.priority is None:
            raise ValueError("priority cannot be null")
        return self


class TicketCommentCreate(_Input):
    content: WrittenText = Field(min_length=1, max_length=10_000)
    public: StrictBool = Field(
        default=False,
        description="Public: the customer reads it (the app's comments always are); "
        "internal: staff only",
    )


class TicketLinkCreate(_Input):
    """Exactly one: a conversation or a left message of the ticket's customer."""

    conversation_id: str | None = Field(default=None, min_length=1, max_length=64)
    left_message_id: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _one(self) -> TicketLinkCreate:
        if (self.conversation_id is None) == (self.left_message_id is None):
            raise ValueError("give exactly one of conversation_id and left_message_id")
        return self


class TicketCommentPublic(BaseModel):
    id: int
    author_role: str = Field(description="agent | supervisor | admin | customer | system")
    author_id: str | None = Field(description="Staff's id (staff only)")
    public: bool
    content: str
    created_at: datetime


class TicketLinkPublic(BaseModel):
    conversation_id: str | None
    left_message_id: int | None
    linked_at: datetime


class TicketSlaPublic(BaseModel):
    first_response_due_at: datetime | None
    first_responded_at: datetime | None
    first_response_breached_at: datetime | None
    resolution_due_at: datetime | None
    resolution_breached_at: datetime | None


class TicketPublic(BaseModel):
    """A ticket. The app (for its customer) reads no staff field: those are null for it, and
    its comments are the public ones."""

    id: int
    subject: str
    description: str
    status: TicketStatus
    priority: TicketPriority
    customer_id: str
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    comments: list[TicketCommentPublic] = []
    # Staff alone:
    skill_group: str | None = None
    assignee_id: str | None = None
    attributes: dict[str, Any] | None = None
    order_id: str | None = None
    links: list[TicketLinkPublic] | None = None
    sla: TicketSlaPublic | None = None
    breached: bool | None = None


class TicketPage(BaseModel):
    tickets: list[TicketPublic]
    next_after: int | None = Field(description="Pass as `after` for the next page (null: last)")


class TicketEventPublic(BaseModel):
    seq: int
    type: str
    at: datetime
    data: dict[str, Any]


# --- monitoring -----------------------------------------------------------------------------


class SkillGroupMonitor(BaseModel):
    """One skill group's figures. /metrics has each as the gauge `switchboard_<name>`."""

    skill_group: str
    waiting: int = Field(description="Conversations in the group's queue now")
    longest_wait_seconds: float = Field(
        description="How long the longest-waiting of them has waited (since it first queued)"
    )
    agents_online: int
    agents_away: int
    agents_at_capacity: int = Field(description="Online agents with no room for another")
    load: int = Field(description="Conversations held by the group's online agents")
    capacity: int = Field(description="The sum of max_concurrent of the group's online agents")
    average_wait_seconds: float | None = Field(
        description="Queued → assigned, over assignments from the queue in the last 15 minutes"
    )
    average_handling_seconds: float | None = Field(
        description="Assigned → released, over conversations released in the last 15 minutes"
    )
    overflows_today: int = Field(
        description="Conversations that moved on to another group or closed with `overflow`"
    )
    abandons_today: int = Field(description="Closed with `abandoned` (the visitor gave up)")
    auto_closes_today: int = Field(description="Closed with `idle_timeout`")
    ratings_today: int = Field(description="Ratings of conversations closed today")
    average_rating_today: float | None = Field(description="Their average score, 1 to 5")
    tickets_open: int = Field(default=0, description="The group's tickets open or pending")
    tickets_breached: int = Field(
        default=0, description="Of them, those that breached an SLA target ([[ticket_sla]])"
    )


class TemporalUiPublic(BaseModel):
    url: str = Field(description="The Temporal UI's address (SWITCHBOARD_TEMPORAL_UI_URL)")
    namespace: str = Field(description="The namespace the conversations' workflows run in")


class BotMonitor(BaseModel):
    """The bot's figures (a routing rule's `bot`). /metrics has each as `switchboard_bot_*`."""

    conversations: int = Field(description="Conversations with a bot now")
    resolved_today: int = Field(
        description="Bot conversations closed today without a hand-off to a person"
    )
    handoffs_today: dict[str, int] = Field(
        description="Hand-offs to a person today, by reason (asked_for_person, quick_reply, "
        "misses, entry, bot_unreachable, or an external bot's own)"
    )
    answers_today: int = Field(description="Visitor messages the bot answered today")
    misses_today: int = Field(description="Of those, answers that it did not understand")
    entry_hits_today: dict[str, int] = Field(
        description="FAQ entries answered today, the most asked first"
    )


class WebhookMonitor(BaseModel):
    pending: int = Field(description="Webhook deliveries owed to their endpoints (admins)")
    failed: int = Field(description="Webhook deliveries given up (admins: see the list)")


class MonitorPublic(BaseModel):
    at: datetime = Field(description="When the figures were read")
    day_started_at: datetime = Field(description="Start of today (UTC) for the *_today figures")
    skill_groups: list[SkillGroupMonitor] = Field(description="Every group of the policy")
    bot: BotMonitor | None = Field(
        default=None, description="The bot's figures (supervisors and admins)"
    )
    temporal_ui: TemporalUiPublic | None = Field(
        default=None,
        description="Where a wallboard links to the conversations' workflows (null: no UI set)",
    )
    webhooks: WebhookMonitor | None = Field(
        default=None, description="The webhooks' deliveries (admins)"
    )


# --- the caller -----------------------------------------------------------------------------


class CallerPublic(BaseModel):
    """Who a staff token belongs to: what a workbench signed in with it needs first."""

    role: Role
    id: str = Field(description="The agent's id (`admin` for the admin token)")
    name: str
    skill_groups: list[str] = Field(
        description="An agent's or supervisor's groups; an admin's: every group of the policy"
    )


# --- stream tickets -------------------------------------------------------------------------


class StreamTicketCreate(_Input):
    stream: str = Field(
        max_length=300,
        description="The path of the stream to open: /v1/conversations/{id}/stream or "
        "/v1/agents/{id}/stream; or of an attachment to fetch: "
        "/v1/conversations/{id}/attachments/{attachment_id}",
        examples=["/v1/agents/alice/stream"],
    )


class StreamTicketPublic(BaseModel):
    ticket: str = Field(description="Goes in that stream's URL as `?ticket=`; opens nothing else")
    expires_in: int = Field(description="Seconds left to open the stream with it")


# --- customers ------------------------------------------------------------------------------


class ErasurePublic(BaseModel):
    conversations: int = Field(
        description="The customer's conversations this erase changed (0 for every one erased "
        "before, or for a customer with none)"
    )
    messages: int = Field(description="Messages whose text it replaced with the marker")
    closed: int = Field(description="Open conversations it closed first (`admin_closed`)")
    erased_at: datetime = Field(description="When, as recorded in the admin action")


# --- the payload codec ------------------------------------------------------------------------

# Payloads in one codec request: a page of a history's (the UI and the CLI send one event's).
MAX_CODEC_PAYLOADS = 1000


# Bytes in protobuf JSON: base64, standard or URL-safe, padded or not.
_BASE64 = r"^[A-Za-z0-9+/_-]*={0,2}$"
Base64 = Annotated[str, Field(pattern=_BASE64)]


class CodecPayload(_Input):
    """A Temporal payload in protobuf JSON: its bytes in base64."""

    metadata: dict[str, Base64] = Field(
        default_factory=dict,
        description="Each value in base64 (`encoding`: `json/plain`, `binary/encrypted`, …)",
    )
    data: Base64 = Field(default="", description="The payload's bytes in base64")


class CodecPayloads(_Input):
    """The Temporal codec server protocol's body, both ways."""

    payloads: list[CodecPayload] = Field(default_factory=list, max_length=MAX_CODEC_PAYLOADS)


class CodecTicketPublic(BaseModel):
    endpoint: str = Field(
        description="The Temporal UI's codec endpoint for this ticket: paste it into the UI's "
        "Codec Server setting (it decodes only, until `expires_at`)"
    )
    ticket: str = Field(description="The ticket in that endpoint's path")
    expires_at: datetime


# --- the bot --------------------------------------------------------------------------------


class UnansweredQuestion(BaseModel):
    question: str = Field(description="What visitors asked (the same words in other case once)")
    count: int = Field(description="How many times")
    last_asked_at: datetime


class UnansweredPublic(BaseModel):
    """The questions the FAQ bot did not understand: what to add to config/bot.toml next."""

    since: datetime
    questions: list[UnansweredQuestion] = Field(description="The most asked first")


# --- webhooks -------------------------------------------------------------------------------


class WebhookDeliveryPublic(BaseModel):
    """One event owed to one endpoint, as ops see it: never its body."""

    id: int = Field(description="The delivery's id: its X-Switchboard-Delivery header")
    endpoint: str = Field(description="The endpoint's name (its key in the policy)")
    subject: str = Field(description="conversation or ticket")
    subject_id: str
    seq: int
    type: str
    status: str = Field(description="pending, delivered, failed (given up) or skipped")
    attempts: int
    last_error: str | None = Field(description="The last failure: a status or an error's kind")
    next_attempt_at: datetime | None = Field(description="When a pending one is tried next")
    created_at: datetime = Field(description="The event's time")
    delivered_at: datetime | None


class WebhookDeliveriesPublic(BaseModel):
    deliveries: list[WebhookDeliveryPublic]
    has_more: bool
