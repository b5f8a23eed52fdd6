"""The ops policy file (config/policy.toml): timeouts, skill groups and system-message texts.

Validated at load with errors that name the key. `PolicySource` re-reads the file when it
changes, so running conversations pick up new values at their next timer without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    Field,
    PlainSerializer,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from domain.hours import ServiceHours
from domain.ops_files import OpsFileError, OpsFileSource, StrictModel, read_model
from domain.types import LEFT_MESSAGE, EventType, OnClosing, TicketEventType, TicketPriority

log = logging.getLogger("switchboard.policy")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|y)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
# Every duration of the policy: a timer shorter than a second is noise, and one beyond a year
# puts its deadline past what a datetime holds (a close retried for ever on the overflow).
SHORTEST_DURATION = timedelta(seconds=1)
LONGEST_DURATION = timedelta(days=365)
# How long transcripts are kept is no timer: years are asked for (the law may want several).
LONGEST_RETENTION = timedelta(days=3650)


def parse_duration(value: Any, *, longest: timedelta = LONGEST_DURATION) -> timedelta:
    """'90s', '5m', '24h', '1.5h', '2d', '1y' (365 days) → timedelta, from 1 second to
    `longest` (365 days)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}: use a number with s, m, h, d or y (90s)")
    # Compared as seconds: a timedelta of "99999999999999d" cannot even be made.
    if not SHORTEST_DURATION.total_seconds() <= seconds <= longest.total_seconds():
        raise ValueError(f"invalid duration {value!r}: it must be from 1s to {longest.days}d")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Human text for system messages: 120s → '2 minutes', 90s → '1 minute 30 seconds'."""
    total = round(delta.total_seconds())
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts) or "0 seconds"


_AS_SECONDS = PlainSerializer(lambda d: f"{d.total_seconds():g}s", return_type=str)
Duration = Annotated[timedelta, BeforeValidator(parse_duration), _AS_SECONDS]
RetentionDuration = Annotated[
    timedelta, BeforeValidator(partial(parse_duration, longest=LONGEST_RETENTION)), _AS_SECONDS
]


_Strict = StrictModel


class Timeouts(_Strict):
    idle_warning_after: Duration = timedelta(minutes=3)
    idle_close_after: Duration = timedelta(minutes=2)
    rating_window: Duration = timedelta(hours=24)


# A skill group's name, and any other name ops give in the files (an entry of the FAQ bot).
NAME_PATTERN = r"^[a-z0-9_]{1,64}$"


DEFAULT_EXPECTED_HANDLING_TIME = timedelta(minutes=5)


class SkillGroup(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    # More waiting than this on arrival → overflow.
    max_queue_length: int | None = Field(default=None, ge=0)
    # Waited longer than this in the group → overflow.
    max_queue_wait: Duration | None = None
    # Another group, or "left_message".
    overflow_to: str | None = None
    # No first reply from the assigned agent in time → back to the head of the queue.
    agent_first_reply_timeout: Duration | None = None
    # No hours: always open.
    hours: ServiceHours | None = None
    # Those still waiting when the hours end: wait on, or closed out_of_hours.
    on_closing: OnClosing = OnClosing.KEEP
    # A conversation's usual time with an agent: the estimated wait's start before the group
    # has a history of its own (domain/queueing.py).
    expected_handling_time: Duration = DEFAULT_EXPECTED_HANDLING_TIME

    @model_validator(mode="after")
    def _closing_needs_hours(self) -> SkillGroup:
        if self.on_closing == OnClosing.CLOSE and self.hours is None:
            raise ValueError(
                f'on_closing = "close" needs [hours]: group {self.name!r} never closes without them'
            )
        return self


class RoutingMatch(_Strict):
    """`when` of a routing rule or an SOP: every key given must match; `{}` matches all."""

    channel: str | None = None
    entry: str | None = None
    tier: str | None = None
    language: str | None = None
    has_order: bool | None = None

    def matches(self, visitor: VisitorContext) -> bool:
        wanted = self.model_dump(exclude_none=True)
        return all(getattr(visitor, key) == value for key, value in wanted.items())


BotKind = Literal["faq", "webhook"]


class RoutingRule(_Strict):
    when: RoutingMatch = RoutingMatch()
    skill_group: str
    priority: int = 0
    # A bot answers first ("faq": the built-in one, "webhook": yours); the skill group takes
    # the conversation when it hands off (转人工).
    bot: BotKind | None = None

    def matches(self, visitor: VisitorContext) -> bool:
        return self.when.matches(visitor)


class VisitorContext(BaseModel):
    """What routing looks at, from the conversation's start."""

    channel: str
    entry: str | None = None
    tier: str | None = None
    language: str | None = None
    has_order: bool = False


class Route(BaseModel):
    skill_group: str
    priority: int
    rule: int | None  # index of the matched [[routing]] rule; None: the default group
    bot: BotKind | None = None


class ClosingTexts(_Strict):
    agent_closed: str = "The agent has closed this chat. Thank you for contacting us."
    visitor_closed: str = "You have left the chat. Thank you for contacting us."
    idle_timeout: str = (
        "This chat was closed because we did not hear from you. Write again any time."
    )
    abandoned: str = "You have left the queue. Write again any time."
    admin_closed: str = "This chat was closed by our service team."
    overflow: str = (
        "All our agents are busy. Please leave us a message and we will get back to you."
    )
    out_of_hours: str = (
        "We are closed right now; we open again {next_opening}. Please leave us a message."
    )
    bot_resolved: str = "Glad we could help. Write again any time."


class Texts(_Strict):
    idle_warning: str = (
        "Are you still there? This chat will close in {idle_close_after} if we don't hear from you."
    )
    rating_invite: str = "How did we do? Please rate this conversation from 1 to 5."
    # What the visitor reads when the conversation passes to another agent (a transfer, or a
    # first reply that never came): who and why stay with staff.
    connecting: str = "Connecting you to another agent. Thank you for waiting."
    # What the visitor reads when the bot passes the conversation to a person (转人工).
    handoff: str = "Connecting you to a person. Thank you for waiting."
    closing: ClosingTexts = ClosingTexts()

    @model_validator(mode="after")
    def _placeholders_known(self) -> Texts:
        try:
            self.idle_warning.format(idle_close_after="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"texts.idle_warning: only {{idle_close_after}} may be used ({exc})"
            ) from None
        return self


# What a canned reply's text may say in braces, filled from the conversation it is used in.
PLACEHOLDERS = ("customer_name", "agent_name", "order_id")
_PLACEHOLDER_LIST = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)


def _refuse_unknown_placeholders(text: str) -> None:
    """Only the known placeholders, bare: a format spec or a conversion (`{order_id:>9}`) is
    Python's language, not ops'."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:  # a lone { or }
        raise ValueError(f"{exc} (write {{{{ or }}}} for a brace)") from None
    for _literal, name, spec, conversion in pieces:
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(
                f"unknown placeholder {{{shown}}}: only {_PLACEHOLDER_LIST} may be used"
            )


def folded(text: str) -> str:
    """Text as a search compares it: case folded, full-width letters and digits as their usual
    forms (a Chinese input method may type them full-width)."""
    return unicodedata.normalize("NFKC", text).casefold()


class CannedReply(_Strict):
    """A reply staff insert by its shortcut (快捷回复), its placeholders filled for the
    conversation at hand."""

    shortcut: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    title: str = Field(min_length=1, max_length=100)
    text: str = Field(min_length=1, max_length=2000)
    # The groups whose agents see it; none: every group.
    skill_groups: list[str] | None = Field(default=None, min_length=1, max_length=50)

    @field_validator("text")
    @classmethod
    def _placeholders_known(cls, text: str) -> str:
        _refuse_unknown_placeholders(text)
        return text

    def seen_by(self, groups: frozenset[str] | None) -> bool:
        """Whether staff of `groups` see it (None: all of them, an admin)."""
        return (
            self.skill_groups is None or groups is None or not groups.isdisjoint(self.skill_groups)
        )

    def found_by(self, query: str) -> bool:
        """`query` (folded) in its shortcut, title or text: "" finds every reply."""
        return any(query in folded(field) for field in (self.shortcut, self.title, self.text))

    def filled(self, values: Mapping[str, str | None], fallbacks: PlaceholderFallbacks) -> Filled:
        """The text with each placeholder filled from `values`, or where a value is missing
        from the policy's fallback (named in `unfilled`, for staff to check before sending).
        Values are inserted as they are: braces in a customer's name are not placeholders."""
        parts: list[str] = []
        unfilled: list[str] = []
        for literal, name, _spec, _conversion in string.Formatter().parse(self.text):
            parts.append(literal)
            if name is None:
                continue
            value = values.get(name)
            if not value:
                value = getattr(fallbacks, name)
                if name not in unfilled:
                    unfilled.append(name)
            parts.append(value)
        return Filled(text="".join(parts), unfilled=unfilled)


@dataclass(frozen=True)
class Filled:
    text: str
    unfilled: list[str]  # placeholders the conversation had no value for: filled by fallbacks


class PlaceholderFallbacks(_Strict):
    """What fills a placeholder the conversation has no value for (no name given, no order,
    nobody assigned): words that still read in a sentence, never an empty gap."""

    customer_name: str = Field(default="customer", min_length=1, max_length=100)
    agent_name: str = Field(default="your agent", min_length=1, max_length=100)
    order_id: str = Field(default="your order", min_length=1, max_length=100)


class SopStep(_Strict):
    text: str = Field(min_length=1, max_length=500)
    # The shortcut of the canned reply this step sends, if any.
    canned_reply: str | None = None


class Sop(_Strict):
    """A standard operating procedure shown to staff with the conversations it matches."""

    title: str = Field(min_length=1, max_length=100)
    when: RoutingMatch = RoutingMatch()
    steps: list[SopStep] = Field(min_length=1, max_length=30)


class Retention(_Strict):
    # A closed conversation's text is erased this long after its close (store/erasure.py);
    # none: kept for ever.
    transcripts: RetentionDuration | None = None
    # Conversations the retention run erases per activity call (each in its own transaction).
    batch_size: int = Field(default=100, ge=1, le=1000)


class Agents(_Strict):
    # An online agent with no open stream (no workbench) this long is set away by itself:
    # counted from their last stream's end, or from going online with none open.
    presence_timeout: Duration = timedelta(minutes=2)


AttachmentKind = Literal["image", "video", "file"]
# An upload is held in memory while it is inspected (media/inspect.py): no limit beyond 1 GiB.
_LARGEST_ATTACHMENT = 2**30
_AttachmentBytes = Annotated[ByteSize, Field(gt=0, le=_LARGEST_ATTACHMENT)]
LONGEST_URL_TTL = timedelta(days=1)


class Attachments(_Strict):
    """What visitors and staff may upload. Sizes in bytes, or with a unit: "10MiB", "500kB"."""

    max_image_bytes: _AttachmentBytes = ByteSize(10 * 2**20)
    max_video_bytes: _AttachmentBytes = ByteSize(50 * 2**20)
    max_file_bytes: _AttachmentBytes = ByteSize(20 * 2**20)
    # Width times height, read from an image's header before it is decoded (decompression bombs):
    # a 100-megapixel photo already takes 300 MB to decode.
    max_image_pixels: int = Field(default=40_000_000, ge=1, le=100_000_000)
    # image: JPEG, PNG, WebP, GIF, HEIC; video: MP4, WebM; file: PDF.
    allowed: list[AttachmentKind] = ["image", "video", "file"]
    # Uploads of one side in one conversation within a minute (429 over it).
    max_uploads_per_minute: int = Field(default=10, ge=1, le=1000)
    # How long a fetch URL works once handed out: short-lived, a day at most.
    url_ttl: Duration = timedelta(minutes=10)

    @field_validator("url_ttl")
    @classmethod
    def _url_short_lived(cls, url_ttl: timedelta) -> timedelta:
        if url_ttl > LONGEST_URL_TTL:
            raise ValueError("a fetch URL works for a day at most (24h)")
        return url_ttl

    @property
    def largest_bytes(self) -> int:
        """The most an upload of any kind may hold: the API reads no further."""
        return max(self.max_image_bytes, self.max_video_bytes, self.max_file_bytes)

    def max_bytes(self, kind: AttachmentKind) -> int:
        return {
            "image": self.max_image_bytes,
            "video": self.max_video_bytes,
            "file": self.max_file_bytes,
        }[kind]


# What media.inspect_upload takes: the policy's [attachments].
AttachmentLimits = Attachments

LONGEST_BOT_TIMEOUT = timedelta(seconds=30)


class BotWebhook(_Strict):
    """Your own bot (bot = "webhook"): where each visitor message is posted, signed with the
    secret (examples/README.md has the contract)."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)]
    secret: SecretStr = Field(min_length=16, max_length=200)  # never shown: "**********"
    # One attempt's wait for the answer; `attempts` tries, a second apart and more, before the
    # bot counts as unreachable and a person takes over (bot_unreachable).
    timeout: Duration = timedelta(seconds=5)
    attempts: int = Field(default=3, ge=1, le=5)

    @field_validator("timeout")
    @classmethod
    def _answers_soon(cls, timeout: timedelta) -> timedelta:
        if timeout > LONGEST_BOT_TIMEOUT:
            raise ValueError("a visitor waits for the bot's answer: 30s at most")
        return timeout


class BotSettings(_Strict):
    # The built-in FAQ bot's file (config/bot.toml's format), beside this one if relative.
    file: str = Field(default="bot.toml", min_length=1, max_length=500)
    # A bot conversation in which the visitor writes nothing this long closes: bot_resolved if
    # the bot's last answer was understood, idle_timeout if it was a miss.
    idle_close_after: Duration = timedelta(minutes=10)
    # Invite a rating after a conversation the bot resolved alone (no person took part).
    invite_rating: bool = False
    webhook: BotWebhook | None = None


class TicketSla(_Strict):
    """A priority's service targets ([[ticket_sla]]): counted in the business hours of the
    ticket's group when the group has [hours], else around the clock."""

    priority: TicketPriority
    # The first public answer from staff is due this long after the ticket's creation...
    first_response: Duration | None = None
    # ...and the ticket solved this long after it.
    resolution: Duration | None = None
    # A staff-only reminder this long before a target breaches (in clock time).
    remind_before: Duration | None = None
    # On a breach: raise the priority one level, and/or move the ticket to this group's pool.
    escalate_priority: bool = False
    escalate_to: str | None = Field(default=None, pattern=NAME_PATTERN)


class TicketSettings(_Strict):
    # A pending ticket (waiting for the customer) with no customer answer this long → closed.
    pending_close_after: Duration = timedelta(days=7)
    # A solved ticket closes this long after it was solved; until then a customer's reply
    # reopens it (the reopen window).
    solved_close_after: Duration = timedelta(days=3)


# The events an endpoint may ask for beyond the conversation's own (domain/types.py EventType):
# the offline push, and tickets' events.
VISITOR_UNREAD = "visitor.unread"
_WEBHOOK_EXTRA_TYPES = frozenset({VISITOR_UNREAD, *TicketEventType})
# Of the conversation's events, those of an agent alone (on their feed): never a webhook's.
_NOT_WEBHOOK_TYPES = frozenset({EventType.AGENT_STATUS_CHANGED})


def webhook_event_types() -> frozenset[str]:
    """Every exact event type an endpoint may ask for."""
    return frozenset(EventType) - _NOT_WEBHOOK_TYPES | _WEBHOOK_EXTRA_TYPES


def _webhook_pattern(pattern: str) -> str:
    """`pattern` if it names known events: "*", an exact type, or a prefix ("conversation.*")."""
    known = webhook_event_types()
    if pattern == "*" or pattern in known:
        return pattern
    if pattern.endswith(".*"):
        prefix = pattern.removesuffix(".*")
        if any(kind.startswith(prefix + ".") for kind in known):
            return pattern
    raise ValueError(
        f'unknown event type {pattern!r}: use "*", a type such as "message.created" or a '
        f'prefix such as "conversation.*" (known: {", ".join(sorted(known))})'
    )


class WebhookEndpoint(_Strict):
    """Where events go out to the company's other systems (a CRM, the app's push service),
    signed with the secret: as the visitor sees them, or as staff do with `staff = true`."""

    # The endpoint's stable key (its deliveries carry it): the url's host and path if none.
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)]
    # Shown as asterisks wherever the policy is shown (GET /v1/admin/policy).
    secret: SecretStr = Field(min_length=16, max_length=200)
    # "*" (all), exact types ("message.created") or prefixes ("conversation.*").
    event_types: list[Annotated[str, BeforeValidator(_webhook_pattern)]] = Field(
        min_length=1, max_length=100
    )
    # Staff's view (notes, agents' ids, routing) instead of the visitor's.
    staff: bool = False

    @property
    def key(self) -> str:
        return self.name or hashlib.sha256(self.url.encode()).hexdigest()[:16]

    def wants(self, event_type: str) -> bool:
        return any(
            pattern == "*"
            or pattern == event_type
            or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
            for pattern in self.event_types
        )


class WebhookDelivery(_Strict):
    """How webhooks go out (every endpoint's)."""

    # A `visitor.unread` for a visitor with the chat open goes out once they have left an
    # agent's message unread this long (with no stream open: at once).
    unread_after: Duration = timedelta(seconds=30)
    # A delivery still failing this long after its event is given up (status failed).
    give_up_after: Duration = timedelta(hours=24)


class Policy(_Strict):
    default_skill_group: str = "general"
    timeouts: Timeouts = Timeouts()
    agents: Agents = Agents()
    retention: Retention = Retention()
    attachments: Attachments = Attachments()
    bot: BotSettings = BotSettings()
    skill_groups: list[SkillGroup] = [SkillGroup(name="general")]
    routing: list[RoutingRule] = []
    texts: Texts = Texts()
    canned_replies: list[CannedReply] = Field(default=[], max_length=1000)
    canned_reply_fallbacks: PlaceholderFallbacks = PlaceholderFallbacks()
    sop: list[Sop] = Field(default=[], max_length=200)
    tickets: TicketSettings = TicketSettings()
    ticket_sla: list[TicketSla] = Field(default=[], max_length=4)
    webhooks: list[WebhookEndpoint] = Field(default=[], max_length=50)
    webhook_delivery: WebhookDelivery = WebhookDelivery()
    # Which file content this is (a hash of it): what each conversation records it ran under.
    _version: str = PrivateAttr(default="builtin")

    @property
    def version(self) -> str:
        return self._version

    @model_validator(mode="after")
    def _groups_consistent(self) -> Policy:
        names = [group.name for group in self.skill_groups]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"skill_groups: duplicate name {duplicates[0]!r}")
        if self.default_skill_group not in names:
            raise ValueError(
                f"default_skill_group: {self.default_skill_group!r} is not one of the "
                f"skill_groups ({', '.join(names)})"
            )
        for index, rule in enumerate(self.routing):
            if rule.skill_group not in names:
                raise ValueError(
                    f"routing.{index}.skill_group: unknown skill group {rule.skill_group!r}"
                )
            if rule.bot == "webhook" and self.bot.webhook is None:
                raise ValueError(
                    f'routing.{index}.bot: "webhook" needs [bot.webhook] (its url and secret)'
                )
        for group in self.skill_groups:
            target = group.overflow_to
            if target is not None and target != LEFT_MESSAGE and target not in names:
                raise ValueError(
                    f"skill_groups.{group.name}.overflow_to: unknown skill group {target!r} "
                    f"(or {LEFT_MESSAGE!r})"
                )
        self._refuse_overflow_cycles()
        self._ticket_sla_consistent(names)
        keys = [endpoint.key for endpoint in self.webhooks]
        for index, key in enumerate(keys):
            if key in keys[:index]:
                raise ValueError(
                    f"webhooks.{index}.name: duplicate endpoint {key!r} (give each a name)"
                )
        return self

    def _ticket_sla_consistent(self, names: list[str]) -> None:
        seen: dict[str, int] = {}
        for index, sla in enumerate(self.ticket_sla):
            if sla.priority in seen:
                raise ValueError(
                    f"ticket_sla.{index}.priority: duplicate priority {sla.priority.value!r} "
                    f"(ticket_sla.{seen[sla.priority]} has it)"
                )
            seen[sla.priority] = index
            if sla.escalate_to is not None and sla.escalate_to not in names:
                raise ValueError(
                    f"ticket_sla.{index}.escalate_to: unknown skill group {sla.escalate_to!r}"
                )
            targets = [t for t in (sla.first_response, sla.resolution) if t is not None]
            if sla.remind_before is not None and any(sla.remind_before >= t for t in targets):
                raise ValueError(
                    f"ticket_sla.{index}.remind_before: must be shorter than first_response "
                    "and resolution"
                )

    def sla_for(self, priority: str) -> TicketSla | None:
        """The [[ticket_sla]] of this priority (None: no targets)."""
        return next((sla for sla in self.ticket_sla if sla.priority == priority), None)

    @model_validator(mode="after")
    def _staff_assist_consistent(self) -> Policy:
        groups = self.skill_group_names
        first_at: dict[str, int] = {}
        for index, reply in enumerate(self.canned_replies):
            if reply.shortcut in first_at:
                raise ValueError(
                    f"canned_replies.{index}.shortcut: duplicate shortcut {reply.shortcut!r} "
                    f"(canned_replies.{first_at[reply.shortcut]} has it)"
                )
            first_at[reply.shortcut] = index
            for group in reply.skill_groups or ():
                if group not in groups:
                    raise ValueError(
                        f"canned_replies.{index}.skill_groups: unknown skill group {group!r}"
                    )
        for index, sop in enumerate(self.sop):
            for number, step in enumerate(sop.steps):
                if step.canned_reply is not None and step.canned_reply not in first_at:
                    raise ValueError(
                        f"sop.{index}.steps.{number}.canned_reply: unknown canned reply "
                        f"{step.canned_reply!r} (not a shortcut of canned_replies)"
                    )
        return self

    def _refuse_overflow_cycles(self) -> None:
        targets = {group.name: group.overflow_to for group in self.skill_groups}
        for start in targets:
            seen = [start]
            while (target := targets.get(seen[-1])) not in (None, LEFT_MESSAGE):
                if target in seen:
                    cycle = " → ".join([*seen[seen.index(target) :], target])
                    raise ValueError(f"skill_groups: overflow_to makes a cycle: {cycle}")
                seen.append(target)

    def group(self, name: str) -> SkillGroup:
        for group in self.skill_groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def route(self, visitor: VisitorContext) -> Route:
        """The first matching rule wins; no match → the default group at priority 0."""
        for index, rule in enumerate(self.routing):
            if rule.matches(visitor):
                return Route(
                    skill_group=rule.skill_group, priority=rule.priority, rule=index, bot=rule.bot
                )
        return Route(skill_group=self.default_skill_group, priority=0, rule=None)

    def canned_replies_for(self, groups: frozenset[str] | None, query: str) -> list[CannedReply]:
        """The canned replies staff of `groups` see (None: every one, for an admin) that hold
        `query` in their shortcut, title or text, in the file's order."""
        wanted = folded(query.strip())
        return [
            reply
            for reply in self.canned_replies
            if reply.seen_by(groups) and reply.found_by(wanted)
        ]

    def sop_for(self, visitor: VisitorContext) -> Sop | None:
        """The first [[sop]] whose `when` matches, as routing's first rule wins; None: none."""
        return next((sop for sop in self.sop if sop.when.matches(visitor)), None)

    @property
    def skill_group_names(self) -> set[str]:
        return {group.name for group in self.skill_groups}

    def closing_text(
        self, reason: str, *, skill_group: str | None = None, next_opening: datetime | None = None
    ) -> str:
        text = getattr(self.texts.closing, reason, self.texts.closing.agent_closed)
        when = "soon"
        if next_opening is not None:
            hours = self.group(skill_group).hours if skill_group in self.skill_group_names else None
            local = next_opening.astimezone(hours.zone) if hours else next_opening
            when = f"{local:%a %d %b at %H:%M} ({hours.timezone if hours else 'UTC'})"
        return text.replace("{next_opening}", when)

    def idle_warning_text(self, idle_close_after: timedelta) -> str:
        return self.texts.idle_warning.format(idle_close_after=format_duration(idle_close_after))


class PolicyError(OpsFileError):
    """The policy file is unreadable or invalid; the message names the key."""


def load_policy(path: Path) -> Policy:
    policy, version = read_model(path, Policy, what="policy", error=PolicyError)
    policy._version = version
    return policy


class PolicySource(OpsFileSource[Policy]):
    """The current policy, re-read when the file changes: running conversations pick up new
    values at their next timer without a restart."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, load=load_policy, error=PolicyError, log=log, what="policy")
