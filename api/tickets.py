"""Stream tickets: a browser's EventSource cannot send an Authorization header, so a caller
trades their bearer token for a ticket to one stream, short-lived, that goes in the stream's URL
(`?ticket=`). A long-lived token never goes in a URL: URLs end up in logs and histories. The
Temporal UI's codec endpoint takes the same kind of ticket, for a shift, in its path
(api/routes/codec.py): the UI sends no token of ours either.

A ticket is signed, not stored (any API process takes it): the stream's path, who asked, when
it expires, and a MAC over those and over the credential that asked (a hash of the bearer
token). So it opens only that path, only with its holder's rights (checked again when the
stream opens), and not once that credential is replaced or gone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time

from pydantic import BaseModel, ConfigDict

from domain.types import Role
from settings import Settings

TICKET_PREFIX = "stk_"
# A ticket's length: a stream's path and an id or two, signed (well under this).
MAX_TICKET_CHARS = 1024
# What a codec ticket opens (in its `stream`): the decode endpoint, whatever its URL.
CODEC_DECODE = "/v1/codec/decode"
# A MAC of tickets is never a MAC of anything else signed with the secret key.
_PURPOSE = b"switchboard stream ticket\n"


class StreamTicket(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stream: str  # the path it opens, e.g. /v1/conversations/{id}/stream, or CODEC_DECODE
    role: Role
    holder: str  # the principal's id
    conversation_id: str | None  # a visitor's conversation
    expires_at: int  # seconds since the epoch


def _mac(settings: Settings, payload: str, credential_hash: str) -> str:
    message = _PURPOSE + payload.encode() + b"\n" + credential_hash.encode()
    return hmac.new(settings.secret_key.encode(), message, hashlib.sha256).hexdigest()


def issue_ticket(
    settings: Settings,
    *,
    stream: str,
    role: Role,
    holder: str,
    conversation_id: str | None,
    credential_hash: str,
    seconds: int | None = None,
) -> str:
    """A ticket to `stream`, valid for `seconds` (a stream ticket's setting by default)."""
    lifetime = settings.stream_ticket_seconds if seconds is None else seconds
    ticket = StreamTicket(
        stream=stream,
        role=role,
        holder=holder,
        conversation_id=conversation_id,
        expires_at=math.ceil(time.time()) + lifetime,  # at least that long
    )
    payload = base64.urlsafe_b64encode(ticket.model_dump_json().encode()).decode().rstrip("=")
    return f"{TICKET_PREFIX}{payload}.{_mac(settings, payload, credential_hash)}"


def read_ticket(text: str) -> StreamTicket | None:
    """What a ticket claims, unverified (see `verify_ticket`); None if it is not one."""
    if not text.startswith(TICKET_PREFIX):
        return None
    payload = text[len(TICKET_PREFIX) :].partition(".")[0]
    try:  # (a ValidationError, a bad base64 or UTF-8 sequence: all ValueErrors)
        return StreamTicket.model_validate_json(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except ValueError:
        return None


def verify_ticket(
    settings: Settings, text: str, ticket: StreamTicket, *, stream: str, credential_hash: str
) -> bool:
    """Whether `text` (read as `ticket`) was issued by us for `stream`, to the holder of the
    credential hashed as `credential_hash`, and has not expired."""
    payload, _, mac = text[len(TICKET_PREFIX) :].partition(".")
    expected = _mac(settings, payload, credential_hash)
    return (
        hmac.compare_digest(mac.encode(), expected.encode())
        and ticket.stream == stream
        and time.time() < ticket.expires_at
    )
