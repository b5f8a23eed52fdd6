"""The external bot's webhook contract (bot = "webhook"; examples/README.md writes it down):
what Switchboard posts, how it signs it, and what the bot must answer.

Switchboard POSTs a `BotRequest` as JSON with `X-Switchboard-Timestamp` (Unix seconds) and
`X-Switchboard-Signature: sha256=<hex HMAC-SHA256 of f"{timestamp}.{body}" with the shared
secret>`; the bot answers 200 with a `BotAnswer` within the timeout. Anything else (another
status, a body that is not a valid `BotAnswer`, no answer in time) means the bot is unreachable.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.bot import QuickReply
from domain.policy import NAME_PATTERN

SIGNATURE_HEADER = "X-Switchboard-Signature"
TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
# A signed request older (or newer) than this is refused: a recorded one cannot be replayed.
TOLERANCE_SECONDS = 300
_SCHEME = "sha256="


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return _SCHEME + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str | int,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """Whether `signature` is `body`'s at `timestamp` (the header's text, or a number) and the
    timestamp is within `tolerance` seconds of `now`."""
    text = str(timestamp)
    if not (text.isascii() and text.isdigit()):
        return False
    if abs(now - int(text)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(text), body), signature)


class _Contract(BaseModel):
    # The bot may send more than the contract asks (its own fields are ignored), never less.
    model_config = ConfigDict(extra="ignore", frozen=True)


class BotMessage(_Contract):
    seq: int
    text: str


class BotContext(_Contract):
    channel: str
    entry: str | None = None
    language: str | None = None
    tier: str | None = None
    attributes: dict[str, Any] = {}


class BotRequest(_Contract):
    """What Switchboard posts for each visitor message."""

    conversation_id: str
    message: BotMessage
    context: BotContext


class BotAnswerText(_Contract):
    text: str = Field(min_length=1, max_length=4000)
    quick_replies: list[QuickReply] = Field(default=[], max_length=6)


class BotAnswer(_Contract):
    """What the bot answers (200, JSON): its messages to the visitor, and whether a person
    takes over now."""

    answers: list[BotAnswerText] = Field(max_length=5)
    handoff: bool
    # Why the bot hands off, in a word (staff and the figures see it): "asked_for_person".
    reason: str | None = Field(default=None, pattern=NAME_PATTERN)
    # Where the hand-off goes; None: where the conversation's routing rule sends it.
    skill_group: str | None = Field(default=None, pattern=NAME_PATTERN)
