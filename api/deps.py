"""Dependencies: services, the caller's identity, and resources loaded by path id (404 here)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.limits import Limits
from api.streams import EventHints
from domain.policy import PolicySource
from domain.types import Role
from settings import Settings
from store.agents import agent_with_token, find_agent
from store.conversations import find_conversation
from store.db import Database
from store.messages import SignalledMarks
from store.models import Agent, Conversation
from workflows.gateway import ConversationGateway

AGENT_TOKEN_PREFIX = "agt_"
# The largest value of an INTEGER column (seqs, ids): PostgreSQL's is 32 bits, and a larger
# number in a query is an error there, not an empty answer.
MAX_INTEGER = 2**31 - 1
MAX_SEQ = MAX_INTEGER
VISITOR_TOKEN_PREFIX = "vis_"


@dataclass
class Services:
    settings: Settings
    db: Database
    policy: PolicySource
    temporal: ConversationGateway
    hints: EventHints
    limits: Limits  # this process's counts: requests, starts, streams, typing
    signalled: SignalledMarks  # messages told to their workflows, written in batches


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


# --- tokens ---------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_agent_token() -> str:
    return AGENT_TOKEN_PREFIX + secrets.token_urlsafe(24)


def visitor_token(settings: Settings, conversation_id: str) -> str:
    """Derived, not stored: the same conversation always gets the same token back."""
    mac = hmac.new(settings.secret_key.encode(), conversation_id.encode(), hashlib.sha256)
    return f"{VISITOR_TOKEN_PREFIX}{conversation_id}.{mac.hexdigest()[:40]}"


@dataclass(frozen=True)
class Principal:
    role: Role
    id: str
    conversation_id: str | None = None  # visitors only


_bearer = HTTPBearer(auto_error=False)


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
    if hmac.compare_digest(token, settings.admin_token):
        return Principal(Role.ADMIN, "admin")
    if hmac.compare_digest(token, settings.app_key):
        return Principal(Role.APP, "app")
    if token.startswith(VISITOR_TOKEN_PREFIX):
        conversation_id = token[len(VISITOR_TOKEN_PREFIX) :].split(".", 1)[0]
        if hmac.compare_digest(token, visitor_token(settings, conversation_id)):
            return Principal(Role.VISITOR, f"visitor:{conversation_id}", conversation_id)
        raise _unauthorized()
    if token.startswith(AGENT_TOKEN_PREFIX):
        digest = hash_token(token)
        agent_id = await run_in_threadpool(agent_with_token, services.db, token_hash=digest)
        if agent_id is not None:
            return Principal(Role.AGENT, agent_id)
    raise _unauthorized()


async def principal_at_door(request: Request) -> Principal:
    """The caller, for api.limits.FrontDoor: before any body is read."""
    return await get_principal(get_services(request), await _bearer(request))


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


def require(*roles: Role) -> Any:
    """A dependency admitting only these roles (403 for the others)."""

    def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this needs the {' or '.join(roles)} role, not {principal.role}",
            )
        return principal

    return Depends(check)


# --- input every database can store ---------------------------------------------------------


def _holds_nul(value: object) -> bool:
    """Whether a decoded JSON value has U+0000 in any string, key or value (without recursion:
    the nesting is the client's to choose)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


async def refuse_nul_characters(request: Request) -> None:
    """422 for U+0000 in the path, the query or a JSON body. PostgreSQL text cannot hold it
    (SQLite can), so it would fail there, and only there, as a 500 (invariant 7)."""
    inputs: list[object] = [
        *map(str, request.path_params.values()),
        *request.query_params.keys(),
        *request.query_params.values(),
    ]
    if request.method in ("POST", "PUT", "PATCH"):
        body = await request.body()  # cached: the route reads the same bytes
        # JSON can only carry NUL escaped: parse (a second time) only when the escape is there.
        if b"\\u0000" in body:
            try:
                inputs.append(json.loads(body))
            except (ValueError, RecursionError):
                pass  # not JSON (or too deep to read): the route's own validation answers
    if any(_holds_nul(value) for value in inputs):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="text must not contain NUL (U+0000)"
        )


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
    if principal.role == Role.ADMIN:
        return True
    if principal.role == Role.VISITOR:
        return principal.conversation_id == conversation.id
    if principal.role == Role.AGENT:
        return conversation.agent_id == principal.id
    return False


async def conversation_of_caller(
    principal: CurrentPrincipal,
    conversation: Annotated[Conversation, Depends(load_conversation)],
) -> Conversation:
    """The conversation, if the caller is its visitor, its assigned agent, or an admin."""
    if not may_access(principal, conversation):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="not your conversation")
    return conversation


ConversationOfCaller = Annotated[Conversation, Depends(conversation_of_caller)]


async def load_agent(services: ServicesDep, agent_id: Annotated[str, Path(max_length=64)]) -> Agent:
    agent = await run_in_threadpool(find_agent, services.db, agent_id=agent_id)
    if agent is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown agent")
    return agent


async def agent_self_or_admin(
    principal: CurrentPrincipal, agent: Annotated[Agent, Depends(load_agent)]
) -> Agent:
    if principal.role == Role.ADMIN or (principal.role == Role.AGENT and principal.id == agent.id):
        return agent
    raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only this agent or an admin")


AgentSelfOrAdmin = Annotated[Agent, Depends(agent_self_or_admin)]


# --- streams --------------------------------------------------------------------------------


def stream_start(
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> int:
    """Where a stream starts: after the client's Last-Event-ID (a reconnect) or `after_seq`.
    A Last-Event-ID that is not a seq we could have sent is ignored."""
    start = after_seq or 0
    if last_event_id is not None and last_event_id.isdigit() and int(last_event_id) <= MAX_SEQ:
        start = max(start, int(last_event_id))
    return start


StreamStart = Annotated[int, Depends(stream_start)]
