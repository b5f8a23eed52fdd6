"""The codec endpoint: the Temporal UI and the `temporal` CLI show what Temporal keeps of a
conversation (encrypted with SWITCHBOARD_PAYLOAD_KEY, see temporal_client.py) to staff who are
signed in, by sending its payloads here to be decoded.

The Temporal codec server protocol: `POST <endpoint>/decode` (and `/encode`) with the payloads
as protobuf JSON, `{"payloads": [{"metadata": {…}, "data": "…"}]}` (bytes in base64), answered
in the same form. Who may:

- the CLI sends a header of our choosing (`--codec-auth "Bearer <admin token>"`): the endpoint
  is `/v1/codec`, for admins;
- the UI sends no credential of ours (only an OIDC access token, where it signs its users in
  with OIDC). So a signed-in admin asks for a codec ticket (`POST /v1/codec/tickets`) and
  pastes the endpoint it answers, `/v1/codec/tickets/<ticket>`, into the UI's per-browser
  Codec Server setting. The ticket decodes only (the UI is read-only), lasts a shift
  (SWITCHBOARD_CODEC_TICKET_SECONDS), is signed, not stored, and dies with the admin token
  that asked for it. The UI calls from its own origin: list it in SWITCHBOARD_CORS_ORIGINS.

An endpoint that decoded for anyone who reaches it would undo the encryption; a default
endpoint in the UI's own settings (TEMPORAL_CODEC_ENDPOINT) would need a credential that lasts
for ever in a URL. Without a key, both ways answer the payloads unchanged, as the protocol
expects of a codec that does nothing. A bad body, or a payload none of the keys opens, is a
422 (the protocol's 400; its clients take any 4xx as a failure).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, Response, status
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from api.deps import CODEC_TICKET_PATH, CodecTicketHolder, ServicesDep, hash_token, require
from api.limits import ECHO_CHARS
from api.routes import operation
from api.schemas import UNAUTHORIZED, CodecPayloads, CodecTicketPublic, errors
from api.tickets import CODEC_DECODE, issue_ticket, read_ticket
from domain.types import Role
from settings import Settings
from temporal_client import PayloadUndecodable, payload_codec

router = APIRouter(prefix="/v1/codec")

_ADMIN_ONLY = {**UNAUTHORIZED, 403: "Admins only"}
# A page of payloads may be larger than the API's other bodies (api/limits.py).
_TOO_LARGE = {413: "Request body over SWITCHBOARD_MAX_CODEC_BODY_BYTES (2 MiB by default)"}
_UNDECODABLE = {
    422: "Not payloads in protobuf JSON (bytes in base64), or a payload none of the keys opens "
    "(its key is no longer configured, or it was altered)"
}


def _convert(body: CodecPayloads, convert: Callable[[Payload], Payload] | None) -> CodecPayloads:
    """Each payload through `convert` (None: unchanged), read and written as protobuf JSON."""
    try:
        payloads = json_format.ParseDict(body.model_dump(), Payloads())
    except json_format.ParseError as exc:
        reason = str(exc)[:ECHO_CHARS]
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"not payloads in protobuf JSON: {reason}"
        ) from None
    if convert is not None:
        try:
            payloads = Payloads(payloads=[convert(payload) for payload in payloads.payloads])
        except PayloadUndecodable as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return CodecPayloads.model_validate(json_format.MessageToDict(payloads))


def _decode(settings: Settings, body: CodecPayloads) -> CodecPayloads:
    codec = payload_codec(settings)
    return _convert(body, None if codec is None else codec.decrypt)


def codec_ticket(settings: Settings, *, seconds: int | None = None) -> str:
    """A ticket to the decode endpoint for the admin, for `seconds` (a shift by default)."""
    return issue_ticket(
        settings,
        stream=CODEC_DECODE,
        role=Role.ADMIN,
        holder="admin",
        conversation_id=None,
        credential_hash=hash_token(settings.admin_token),
        seconds=settings.codec_ticket_seconds if seconds is None else seconds,
    )


_DECODE_SUMMARY = "Decode payloads for the Temporal UI or CLI (the codec server protocol)"


@router.post(
    "/decode",
    **operation("codec", "decode"),
    response_model=CodecPayloads,
    summary=_DECODE_SUMMARY,
    description="For `temporal … --codec-endpoint <API>/v1/codec --codec-auth 'Bearer <admin "
    "token>'`. Encrypted payloads come back as they were before encryption; others unchanged.",
    responses=errors({**_ADMIN_ONLY, **_TOO_LARGE, **_UNDECODABLE}),
    dependencies=[require(Role.ADMIN)],
)
async def decode(body: CodecPayloads, services: ServicesDep) -> CodecPayloads:
    return _decode(services.settings, body)


@router.post(
    "/encode",
    **operation("codec", "encode"),
    response_model=CodecPayloads,
    summary="Encode payloads for the Temporal CLI (the codec server protocol)",
    description="Encrypted with the first of SWITCHBOARD_PAYLOAD_KEY's keys (unchanged without "
    "one): what the CLI sends when it starts or signals a workflow with a codec endpoint.",
    responses=errors({**_ADMIN_ONLY, **_TOO_LARGE, 422: "Not payloads in protobuf JSON"}),
    dependencies=[require(Role.ADMIN)],
)
async def encode(body: CodecPayloads, services: ServicesDep) -> CodecPayloads:
    codec = payload_codec(services.settings)
    return _convert(body, None if codec is None else codec.encrypt)


@router.post(
    "/tickets",
    **operation("codec", "create_ticket"),
    status_code=status.HTTP_201_CREATED,
    response_model=CodecTicketPublic,
    summary="A codec endpoint for the Temporal UI: decode only, for a shift",
    description="Paste `endpoint` into the Temporal UI's Codec Server setting (per browser; "
    "leave 'pass the user access token' and 'include cross-origin credentials' off). It "
    "decodes until `expires_at` (SWITCHBOARD_CODEC_TICKET_SECONDS), and not once the admin "
    "token is replaced. The UI's origin must be in SWITCHBOARD_CORS_ORIGINS.",
    responses=errors(_ADMIN_ONLY),
    dependencies=[require(Role.ADMIN)],
)
async def create_codec_ticket(
    request: Request, services: ServicesDep, response: Response
) -> CodecTicketPublic:
    ticket = codec_ticket(services.settings)
    claimed = read_ticket(ticket)
    assert claimed is not None
    response.headers["Cache-Control"] = "no-store"  # a credential: kept by no cache
    # The URL the UI is given; it appends /decode. Behind a proxy, uvicorn must trust its
    # X-Forwarded-Proto and Host for this to be the public address.
    endpoint = CODEC_TICKET_PATH.removesuffix("/decode").format(ticket=ticket)
    return CodecTicketPublic(
        endpoint=str(request.base_url).rstrip("/") + endpoint,
        ticket=ticket,
        expires_at=datetime.fromtimestamp(claimed.expires_at, UTC),
    )


@router.post(
    "/tickets/{ticket}/decode",
    **operation("codec", "decode_with_ticket"),
    response_model=CodecPayloads,
    summary=_DECODE_SUMMARY + ", with a codec ticket in the path",
    description="What the Temporal UI calls, given the endpoint of `POST /v1/codec/tickets`. "
    "The ticket is the credential: no Authorization header.",
    responses=errors(
        {
            401: "The ticket is invalid or expired, or the admin token that asked for it changed",
            **_TOO_LARGE,
            **_UNDECODABLE,
        }
    ),
)
async def decode_with_ticket(
    body: CodecPayloads, services: ServicesDep, _holder: CodecTicketHolder
) -> CodecPayloads:
    return _decode(services.settings, body)
