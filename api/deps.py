"""Dependencies: services, the caller's identity, and resources loaded by path id (404 here)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.routing import compile_path

from api.credentials import VisitorAccess, same_secret, visitor_access_ends, visitor_of
from api.limits import Limits
from api.streams import EventHints
from api.tickets import CODEC_DECODE, MAX_TICKET_CHARS, read_ticket, verify_ticket
from domain.policy import PolicySource
from domain.types import Role
from media.storage import ObjectStore
from settings import Settings
from store.agents import agent_with_token, find_agent, skill_groups_of
from store.conversations import find_conversation, serves_customer
from store.db import Database
from store.messages import SignalledMarks
from store.models import Agent, Conversation
from workflows.gateway import ConversationGateway, TicketGateway

AGENT_TOKEN_PREFIX = "agt_"
STAFF = frozenset({Role.AGENT, Role.SUPERVISOR, Role.ADMIN})
# The largest value of an INTEGER column (seqs, ids): PostgreSQL's is 32 bits, and a larger
# number in a query is an error there, not an empty answer.
MAX_INTEGER = 2**31 - 1
MAX_SEQ = MAX_INTEGER


@dataclass
class Services:
    settings: Settings
    db: Database
    policy: PolicySource
    temporal: ConversationGateway
    hints: EventHints
    limits: Limits  # this process's counts: requests, starts, streams, typing
    signalled: SignalledMarks  # messages told to their workflows, written in batches
    objects: ObjectStore  # attachments' files (media/storage.py)
    tickets: TicketGateway  # the tickets' workflows (on the conversations' client)
    visitor_access: VisitorAccess = field(default_factory=VisitorAccess)  # when tokens end


def get_services(request: Request) -> Services:
    return request.app.state.services


# Every dependency is a coroutine function: FastAPI runs a plain function in the thread pool,
# a trip to a thread (and back) on every request for what costs nothing on the event loop.
async def services_of(request: Request) -> Services:
    return get_services(request)


ServicesDep = Annotated[Services, Depends(services_of)]


# --- tokens ---------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_agent_token() -> str:
    return AGENT_TOKEN_PREFIX + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Principal:
    role: Role
    id: str
    conversation_id: str | None = None  # visitors only
    skill_groups: frozenset[str] = frozenset()  # supervisors only: the groups they oversee
    # Agents and supervisors: the hash of the token they came with (or that asked for their
    # ticket), so a stream they opened ends once that token is replaced.
    token_hash: str | None = None

    @property
    def is_staff(self) -> bool:
        """Reads what staff alone read of a conversation (its notes, its agents' ids, what the
        app told of the customer)."""
        return self.role in STAFF

    def oversees(self, skill_group: str | None) -> bool:
        """A supervisor of this group (a conversation's group is where it is now)."""
        return self.role == Role.SUPERVISOR and skill_group in self.skill_groups


def groups_of_staff(db: Database, principal: Principal) -> frozenset[str] | None:
    """The skill groups a member of staff works in, for what they see of groups (canned
    replies, queue figures); None: every group (an admin). An agent's are their `agent_skill`
    rows, read now; a supervisor's, the groups they oversee."""
    if principal.role == Role.ADMIN:
        return None
    if principal.role == Role.AGENT:
        return frozenset(skill_groups_of(db, agent_id=principal.id))
    return principal.skill_groups  # a supervisor's; nobody else belongs to a group


_bearer = HTTPBearer(auto_error=False)
# The request's bearer credentials, if it has any (a route that also takes a ticket).
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(detail: str = "missing or invalid bearer token") -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized()
    token = credentials.credentials
    settings = services.settings
    if same_secret(token, settings.admin_token):
        return Principal(Role.ADMIN, "admin")
    if same_secret(token, settings.app_key):
        return Principal(Role.APP, "app")
    conversation_id = visitor_of(settings, token)
    if conversation_id is not None:
        # Signed by us, and valid while its conversation is open and its rating window lasts.
        ended = services.visitor_access.ended(conversation_id)
        if ended is None:
            conversation = await run_in_threadpool(
                find_conversation, services.db, conversation_id=conversation_id
            )
            if conversation is None:
                raise _unauthorized("the visitor token has expired")
            window = services.policy.current().timeouts.rating_window
            ends = visitor_access_ends(conversation, rating_window=window)
            services.visitor_access.remember(conversation_id, ends, rating_window=window)
            ended = services.visitor_access.ended(conversation_id)
        if ended:
            raise _unauthorized("the visitor token has expired")
        return Principal(Role.VISITOR, f"visitor:{conversation_id}", conversation_id)
    if token.startswith(AGENT_TOKEN_PREFIX):
        digest = hash_token(token)  # a disabled agent's token finds nobody
        holder = await run_in_threadpool(agent_with_token, services.db, token_hash=digest)
        if holder is not None:
            return Principal(
                Role(holder.role),
                holder.agent_id,
                skill_groups=holder.skill_groups,
                token_hash=digest,
            )
    raise _unauthorized()


async def principal_at_door(request: Request) -> Principal:
    """The caller, for api.limits.FrontDoor: before any body is read. The Temporal UI's codec
    requests carry a codec ticket in their path instead of a token."""
    services = get_services(request)
    if match := _CODEC_TICKET_ROUTE.match(request.scope["path"]):  # no URL object built
        return await codec_ticket_holder(services, match["ticket"])
    return await get_principal(services, await _bearer(request))


async def current_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller: as the front door found it, or (no valid token there) 401 now."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    return await get_principal(services, credentials)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def credential_hash(services: Services, principal: Principal) -> str | None:
    """A hash of the principal's bearer token as it is now (None: they have none any more):
    what a stream ticket is bound to, so it dies with the token that asked for it."""
    settings = services.settings
    if principal.role == Role.ADMIN:
        return hash_token(settings.admin_token)
    if principal.role == Role.APP:
        return hash_token(settings.app_key)
    if principal.role == Role.VISITOR and principal.conversation_id is not None:
        # Visitor tokens are not stored: their access ends with the conversation's (checked
        # by every stream as it runs), whichever of its tokens asked.
        return hash_token(principal.id)
    if principal.role in (Role.AGENT, Role.SUPERVISOR):
        agent = await run_in_threadpool(find_agent, services.db, agent_id=principal.id)
        return None if agent is None else agent.token_hash
    return None


async def stream_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ticket: Annotated[
        str | None,
        Query(
            max_length=MAX_TICKET_CHARS,
            description="A ticket for this stream (POST /v1/stream-tickets) instead of the "
            "Authorization header, for a browser's EventSource",
        ),
    ] = None,
) -> Principal:
    """A stream's caller: by bearer token, or by a ticket issued for this very stream."""
    return await caller_or_ticket_holder(
        request, services, credentials, ticket, opens=request.url.path, what="stream"
    )


async def caller_or_ticket_holder(
    request: Request,
    services: Services,
    credentials: HTTPAuthorizationCredentials | None,
    ticket: str | None,
    *,
    opens: str,
    what: str,
) -> Principal:
    """The caller by bearer token, or (`ticket` given) the holder of a ticket issued to open
    `opens` (a stream, an attachment: `what`), with their rights as they are now."""
    if ticket is None:
        return await current_principal(request, services, credentials)
    holder = await ticket_holder(services, ticket, opens=opens)
    if holder is None:
        raise _unauthorized(
            f"{what} ticket invalid, expired or for another {what}: ask for a new one"
        )
    return holder


StreamPrincipal = Annotated[Principal, Depends(stream_principal)]

# The Temporal UI's codec endpoint with its ticket (it appends /decode to the URL it is given).
CODEC_TICKET_PATH = "/v1/codec/tickets/{ticket}/decode"
_CODEC_TICKET_ROUTE = compile_path(CODEC_TICKET_PATH)[0]


async def ticket_holder(services: Services, ticket: str, *, opens: str) -> Principal | None:
    """Who a ticket was issued to, if it was issued by us to open `opens`, has not expired, and
    the credential that asked for it is still theirs; else None."""
    claimed = read_ticket(ticket) if len(ticket) <= MAX_TICKET_CHARS else None
    if claimed is None:
        return None
    principal = Principal(claimed.role, claimed.holder, claimed.conversation_id)
    held = await credential_hash(services, principal)
    if held is None or not verify_ticket(
        services.settings, ticket, claimed, stream=opens, credential_hash=held
    ):
        return None
    if principal.role == Role.SUPERVISOR:  # the groups they oversee now
        groups = await run_in_threadpool(skill_groups_of, services.db, agent_id=principal.id)
        return replace(principal, token_hash=held, skill_groups=frozenset(groups))
    if principal.role == Role.AGENT:
        return replace(principal, token_hash=held)
    return principal


async def codec_ticket_holder(
    services: ServicesDep, ticket: Annotated[str, Path(max_length=MAX_TICKET_CHARS)]
) -> Principal:
    """The caller of the ticket's codec endpoint: the admin it was issued to, while it lasts."""
    holder = await ticket_holder(services, ticket, opens=CODEC_DECODE)
    if holder is None:
        raise _unauthorized(
            "codec ticket invalid or expired: ask for a new one (POST /v1/codec/tickets)"
        )
    return holder


CodecTicketHolder = Annotated[Principal, Depends(codec_ticket_holder)]


def require(*roles: Role) -> Any:
    """A dependency admitting only these roles (403 for the others)."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this needs the {' or '.join(roles)} role, not {principal.role}",
            )
        return principal

    return Depends(check)


# --- input every database can store ---------------------------------------------------------

# How deep a JSON body may nest: ours nest two levels; a deeper one is refused before anything
# walks it recursively (validation errors echo what they refuse).
MAX_JSON_DEPTH = 32
TOO_DEEP = f"the body is nested deeper than {MAX_JSON_DEPTH} levels"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A body is parsed a second time only when it may hold what the walk looks for: the escapes
# of NUL and of a surrogate, or more opening brackets than the depth allowed.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def suspect_body(body: bytes) -> bool:
    """Whether a JSON body may hold what `unstorable` refuses, so it is worth parsing to look:
    the escape of NUL or of a surrogate, or more opening brackets than the depth allowed."""
    return bool(_SUSPECT_ESCAPE.search(body)) or (
        body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH
    )


def unstorable(value: object) -> str | None:
    """Why a decoded JSON value cannot be taken (None: it can), walked without recursion: the
    nesting is the client's to choose. U+0000 and lone surrogates in any string, key or value
    (PostgreSQL text cannot hold NUL; no database, log line or JSON answer can hold a lone
    surrogate), and nesting deeper than MAX_JSON_DEPTH."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "text must not contain NUL (U+0000)"
            if _LONE_SURROGATE.search(item):
                return "text must not contain a lone surrogate (U+D800 to U+DFFF)"
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                return TOO_DEEP
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return None


async def refuse_unstorable_input(request: Request) -> None:
    """422 for what no store or answer can hold (see unstorable) in the path, the query or a
    JSON body (an upload's file is bytes: media/inspect.py judges it): it would fail at the
    database, or in the answer echoing it, as a 500 (invariant 7)."""
    inputs: list[object] = [*map(str, request.path_params.values())]
    if request.scope.get("query_string"):  # most requests have none: nothing to parse
        inputs += [*request.query_params.keys(), *request.query_params.values()]
    # A multipart body is a file's bytes (an upload: never stored as text, and its stream is
    # the route's to read).
    multipart = request.headers.get("content-type", "").startswith("multipart/")
    if request.method in ("POST", "PUT", "PATCH") and not multipart:
        body = await request.body()  # cached: the route reads the same bytes
        if suspect_body(body):
            try:
                inputs.append(json.loads(body))
            except RecursionError:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, detail=TOO_DEEP
                ) from None
            except ValueError:
                pass  # not JSON: the route's own validation answers
    for value in inputs:
        if (reason := unstorable(value)) is not None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=reason)


# --- resources by path id -------------------------------------------------------------------


async def load_conversation(
    services: ServicesDep, conversation_id: Annotated[str, Path(max_length=64)]
) -> Conversation:
    conversation = await run_in_threadpool(
        find_conversation, services.db, conversation_id=conversation_id
    )
    if conversation is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown conversation")
    return conversation


def may_access(principal: Principal, conversation: Conversation) -> bool:
    """Whether the caller acts on the conversation: its visitor, its agent, a supervisor of
    the group it is in, or an admin."""
    if principal.role == Role.ADMIN:
        return True
    if principal.role == Role.VISITOR:
        return principal.conversation_id == conversation.id
    if principal.role == Role.AGENT:
        return conversation.agent_id == principal.id
    return principal.oversees(conversation.skill_group)


def _not_yours() -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail="not your conversation")


async def conversation_of_caller(
    principal: CurrentPrincipal,
    conversation: Annotated[Conversation, Depends(load_conversation)],
) -> Conversation:
    """The conversation, if the caller is its visitor, its assigned agent, a supervisor of its
    group, or an admin."""
    if not may_access(principal, conversation):
        raise _not_yours()
    return conversation


async def conversation_of_reader(
    principal: CurrentPrincipal,
    services: ServicesDep,
    conversation: Annotated[Conversation, Depends(load_conversation)],
) -> Conversation:
    """conversation_of_caller, and besides, for reading alone: any conversation of the
    customer an agent is serving now (their history, beside the chat)."""
    if may_access(principal, conversation):
        return conversation
    if principal.role == Role.AGENT and await run_in_threadpool(
        serves_customer, services.db, agent_id=principal.id, customer_id=conversation.customer_id
    ):
        return conversation
    raise _not_yours()


async def conversation_of_streamer(
    principal: StreamPrincipal,
    conversation: Annotated[Conversation, Depends(load_conversation)],
) -> Conversation:
    """conversation_of_caller, for a caller who may hold a stream ticket."""
    return await conversation_of_caller(principal, conversation)


ConversationOfCaller = Annotated[Conversation, Depends(conversation_of_caller)]
ConversationOfReader = Annotated[Conversation, Depends(conversation_of_reader)]
ConversationOfStreamer = Annotated[Conversation, Depends(conversation_of_streamer)]


async def load_agent(services: ServicesDep, agent_id: Annotated[str, Path(max_length=64)]) -> Agent:
    agent = await run_in_threadpool(find_agent, services.db, agent_id=agent_id)
    if agent is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown agent")
    return agent


async def agent_self_or_admin(
    principal: CurrentPrincipal,
    services: ServicesDep,
    agent_id: Annotated[str, Path(max_length=64)],
) -> Agent:
    # Who asks first, then whether the agent exists: anyone else gets the same 403 for an agent
    # id that exists and one that does not. (A supervisor's record is theirs as an agent's is.)
    if principal.role == Role.ADMIN or (
        principal.role in (Role.AGENT, Role.SUPERVISOR) and principal.id == agent_id
    ):
        return await load_agent(services, agent_id)
    raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only this agent or an admin")


async def agent_of_streamer(
    principal: StreamPrincipal,
    services: ServicesDep,
    agent_id: Annotated[str, Path(max_length=64)],
) -> Agent:
    """agent_self_or_admin, for a caller who may hold a stream ticket."""
    return await agent_self_or_admin(principal, services, agent_id)


AgentSelfOrAdmin = Annotated[Agent, Depends(agent_self_or_admin)]
AgentOfStreamer = Annotated[Agent, Depends(agent_of_streamer)]


# --- streams --------------------------------------------------------------------------------


def stream_start(
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> int:
    """Where a stream starts: after the client's Last-Event-ID (a reconnect) or `after_seq`.
    A Last-Event-ID that is not a number is ignored; one beyond any seq is MAX_SEQ + 1 (which
    `resume_after` refuses)."""
    start = after_seq or 0
    if last_event_id is not None and last_event_id.isascii() and last_event_id.isdigit():
        digits = last_event_id.lstrip("0") or "0"
        start = max(start, int(digits) if len(digits) <= len(str(MAX_SEQ)) else MAX_SEQ + 1)
    return start


async def _stream_start_of(
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> int:
    """stream_start, as a dependency (on the event loop: see services_of)."""
    return stream_start(after_seq, last_event_id)


StreamStart = Annotated[int, Depends(_stream_start_of)]


def resume_after(after_seq: int, *, newest: int) -> int:
    """`after_seq`, if the log has reached it. One beyond the newest event was not sent from
    this log (a database restored or replaced, a client's bug): going on from there would skip
    the events still to come up to it, so it is refused, never followed silently."""
    if after_seq > newest:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"after_seq or Last-Event-ID {after_seq} is beyond the newest event "
            f"({newest}): it is not from this log; start again from 0 (everything) or "
            f"{newest} (what comes next)",
        )
    return after_seq
