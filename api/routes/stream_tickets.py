"""Stream tickets: a bearer token traded for a short-lived ticket to one stream, for a browser's
EventSource (which cannot send the token). How a ticket is made and checked: api/tickets.py."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.routing import compile_path

from api.deps import (
    CurrentPrincipal,
    ServicesDep,
    agent_self_or_admin,
    conversation_of_caller,
    conversation_of_reader,
    credential_hash,
    load_conversation,
)
from api.routes import operation
from api.schemas import UNAUTHORIZED, StreamTicketCreate, StreamTicketPublic, errors
from api.tickets import issue_ticket
from store.attachments import find_attachment

router = APIRouter(prefix="/v1/stream-tickets")

# The streams a ticket opens (their routes take `?ticket=`: api.deps.stream_principal).
CONVERSATION_STREAM = compile_path("/v1/conversations/{conversation_id}/stream")[0]
AGENT_STREAM = compile_path("/v1/agents/{agent_id}/stream")[0]
# An attachment's file and thumbnail (api/routes/attachments.py), for a browser's <img>: the
# ticket lasts the policy's `attachments.url_ttl`.
ATTACHMENT = compile_path("/v1/conversations/{conversation_id}/attachments/{attachment_id}")[0]


@router.post(
    "",
    **operation("stream_tickets", "create"),
    status_code=status.HTTP_201_CREATED,
    response_model=StreamTicketPublic,
    summary="A ticket to open one stream from a browser: short-lived, that stream only, with "
    "your rights",
    description=(
        "A browser's EventSource cannot send the Authorization header, and a token must never "
        "go in a URL. Ask here with your bearer token, then open "
        "`GET <stream>?ticket=<ticket>` (with `after_seq` if you like) within `expires_in` "
        "seconds. The ticket opens only that stream, only while you may, and not once your "
        "token is replaced. Within that time an EventSource that reconnects uses it again; "
        "after it, ask for a new one."
    ),
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Not your conversation or agent feed",
            404: "Unknown conversation, agent or attachment",
            422: "Not a stream's or an attachment's path",
        }
    ),
)
async def create_stream_ticket(
    body: StreamTicketCreate, principal: CurrentPrincipal, services: ServicesDep, response: Response
) -> StreamTicketPublic:
    # The same checks, in the same order, as opening the stream (or fetching) itself.
    lifetime = services.settings.stream_ticket_seconds
    if match := CONVERSATION_STREAM.match(body.stream):
        conversation = await load_conversation(services, match["conversation_id"])
        await conversation_of_caller(principal, conversation)
    elif match := AGENT_STREAM.match(body.stream):
        await agent_self_or_admin(principal, services, match["agent_id"])
    elif match := ATTACHMENT.match(body.stream):
        conversation = await load_conversation(services, match["conversation_id"])
        await conversation_of_reader(principal, services, conversation)
        found = await run_in_threadpool(
            lambda: find_attachment(
                services.db,
                conversation_id=match["conversation_id"],
                attachment_id=match["attachment_id"],
            )
        )
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown attachment")
        lifetime = int(services.policy.current().attachments.url_ttl.total_seconds())
    else:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="not a stream's or an attachment's path: /v1/conversations/{id}/stream, "
            "/v1/agents/{id}/stream or /v1/conversations/{id}/attachments/{attachment_id}",
        )
    held = await credential_hash(services, principal)
    if held is None:  # the agent went between the token's check and now
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    response.headers["Cache-Control"] = "no-store"  # a credential: kept by no cache
    ticket = issue_ticket(
        services.settings,
        stream=body.stream,
        role=principal.role,
        holder=principal.id,
        conversation_id=principal.conversation_id,
        credential_hash=held,
        seconds=lifetime,
    )
    return StreamTicketPublic(ticket=ticket, expires_in=lifetime)
