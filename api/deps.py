"""Dependencies: services, the caller's identity, and resources loaded by path id (404 here)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.streams import EventHints, StreamSlots
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
    visitor_streams: StreamSlots  # streams each visitor holds open in this process
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


def _same_secret(given: str, secret: str) -> bool:
    """In constant time, as bytes: compare_digest refuses str with non-ASCII characters (a
    header's bytes arrive as Latin-1), and a caller must get a 401 for them, not a 500."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
    )


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
    if _same_secret(token, settings.admin_token):
        return Principal(Role.ADMIN, "admin")
    if _same_secret(token, settings.app_key):
        return Principal(Role.APP, "app")
    if token.startswith(VISITOR_TOKEN_PREFIX):
        conversation_id = token[len(VISITOR_TOKEN_PREFIX) :].split(".", 1)[0]
        if _same_secret(token, visitor_token(settings, conversation_id)):
            return Principal(Role.VISITOR, f"visitor:{conversation_id}", conversation_id)
        raise _unauthorized()
    if token.startswith(AGENT_TOKEN_PREFIX):
        digest = hash_token(token)
        agent_id = await run_in_threadpool(agent_with_token, services.db, token_hash=digest)
        if agent_id is not None:
            return Principal(Role.AGENT, agent_id)
    raise _unauthorized()


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


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

# How deep a JSON body may nest: ours nest two levels; a deeper one is refused before anything
# walks it recursively (validation errors echo what they refuse).
MAX_JSON_DEPTH = 32
TOO_DEEP = f"the body is nested deeper than {MAX_JSON_DEPTH} levels"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A body is parsed a second time only when it may hold what the walk looks for: the escapes
# of NUL and of a surrogate, or more opening brackets than the depth allowed.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _unstorable(value: object) -> str | None:
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
    """422 for what no store or answer can hold (see _unstorable) in the path, the query or a
    JSON body: it would fail at the database, or in the answer echoing it, as a 500
    (invariant 7)."""
    inputs: list[object] = [
        *map(str, request.path_params.values()),
        *request.query_params.keys(),
        *request.query_params.values(),
    ]
    if request.method in ("POST", "PUT", "PATCH"):
        body = await request.body()  # cached: the route reads the same bytes
        if _SUSPECT_ESCAPE.search(body) or body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
            try:
                inputs.append(json.loads(body))
            except RecursionError:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, detail=TOO_DEEP
                ) from None
            except ValueError:
                pass  # not JSON: the route's own validation answers
    for value in inputs:
        if (reason := _unstorable(value)) is not None:
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
    A Last-Event-ID that is not a number is ignored; one beyond any seq is MAX_SEQ + 1 (which
    `resume_after` refuses)."""
    start = after_seq or 0
    if last_event_id is not None and last_event_id.isascii() and last_event_id.isdigit():
        digits = last_event_id.lstrip("0") or "0"
        start = max(start, int(digits) if len(digits) <= len(str(MAX_SEQ)) else MAX_SEQ + 1)
    return start


StreamStart = Annotated[int, Depends(stream_start)]


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
