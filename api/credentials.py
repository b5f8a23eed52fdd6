"""Visitor tokens that end: signed over the conversation id with a named key (so the key can
rotate without cutting open conversations), and valid while their conversation is open and
until its rating window ends.

A token is `vis_<key id>.<conversation id>.<signature>`. It is derived, not stored: the same
conversation and key always give the same token, and the app can have it again at any time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timedelta
from functools import lru_cache

from domain.types import ConversationState
from settings import Settings
from store.models import Conversation, utcnow

VISITOR_TOKEN_PREFIX = "vis_"
_SIGNATURE_CHARS = 40  # 160 bits of HMAC-SHA256, in hex


def same_secret(given: str, expected: str) -> bool:
    """A comparison in constant time, of any text: compare_digest refuses str with non-ASCII
    characters (a header's bytes arrive as Latin-1), and a caller must get a 401, not a 500."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _sign(key: str, text: str) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()[:_SIGNATURE_CHARS]


@lru_cache
def key_id(key: str) -> str:
    """A key's name in the tokens it signs: a signature of a constant, telling nothing of it."""
    return _sign(key, "switchboard visitor token key id")[:8]


def visitor_token(settings: Settings, conversation_id: str) -> str:
    """The conversation's visitor token, signed with the first of the keys."""
    key = settings.secret_keys[0]
    signed = f"{VISITOR_TOKEN_PREFIX}{key_id(key)}.{conversation_id}"
    return f"{signed}.{_sign(key, signed)}"


def visitor_of(settings: Settings, token: str) -> str | None:
    """The conversation a visitor token was signed for; None for anything else (not a visitor
    token, forged, or signed with a key no longer among the settings' keys)."""
    signed, dot, signature = token.rpartition(".")
    if not dot or not signed.startswith(VISITOR_TOKEN_PREFIX):
        return None
    named, dot, conversation_id = signed.removeprefix(VISITOR_TOKEN_PREFIX).partition(".")
    if dot:
        keys = [key for key in settings.secret_keys if key_id(key) == named]
    else:
        # Handed out before tokens named their key (`vis_<conversation id>.<signature over the
        # id>`): tried with every key, so an upgrade cuts no open conversation either.
        keys, conversation_id, signed = settings.secret_keys, named, named
    if any(same_secret(signature, _sign(key, signed)) for key in keys):
        return conversation_id
    return None


def visitor_access_ends(conversation: Conversation, *, rating_window: timedelta) -> datetime | None:
    """When the conversation's visitor token stops working: None while it is open; once closed,
    the end of its rating window. A close that invites no rating (nobody served it: a left
    message may follow) gets a window as long, from the close."""
    if conversation.state != ConversationState.CLOSED:
        return None
    if conversation.rating_expires_at is not None:
        return conversation.rating_expires_at
    return (conversation.closed_at or conversation.created_at) + rating_window


def visitor_access_ended(conversation: Conversation, *, rating_window: timedelta) -> bool:
    ends = visitor_access_ends(conversation, rating_window=rating_window)
    return ends is not None and ends <= utcnow()


class VisitorAccess:
    """When each conversation's visitor access ends, as last read, so that a visitor's requests
    (every message of a chat) do not each read the conversation to check their token. An open
    conversation is read again after a while: it can close meanwhile, but its token still works
    for a rating window after the close, so a conversation open when read keeps its access for
    at least that window. Read again within the window (and within MAX_RECHECK seconds),
    nothing that ended is ever let in. A closed one's end is known and stays. This process's
    memory only."""

    MAX_RECHECK = 10.0
    _KEEP = 4096  # entries before those of conversations not asked about lately are dropped

    def __init__(self) -> None:
        # conversation → (read at, access ends (None: open), read again after this long)
        self._known: dict[str, tuple[float, datetime | None, float]] = {}

    def ended(self, conversation_id: str) -> bool | None:
        """Whether its access has ended, or None: not known (read the conversation)."""
        known = self._known.get(conversation_id)
        if known is None:
            return None
        read_at, ends, recheck = known
        if ends is not None:
            return ends <= utcnow()
        return None if time.monotonic() - read_at > recheck else False

    def remember(
        self, conversation_id: str, ends: datetime | None, *, rating_window: timedelta
    ) -> None:
        """What was read: when access ends (None: open), under the policy's rating window."""
        if len(self._known) >= self._KEEP:
            self._forget()
        recheck = min(rating_window.total_seconds(), self.MAX_RECHECK)
        self._known[conversation_id] = (time.monotonic(), ends, recheck)

    def _forget(self) -> None:
        stale = time.monotonic() - self.MAX_RECHECK
        now = utcnow()
        for key, (read_at, ends, _recheck) in list(self._known.items()):
            if (ends is None and read_at < stale) or (ends is not None and ends <= now):
                del self._known[key]
        if len(self._known) >= self._KEEP:  # all fresh: start afresh rather than grow
            self._known.clear()
