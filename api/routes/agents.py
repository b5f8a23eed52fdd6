"""Agents: created by an admin, set their own status, see their conversations."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, status
from sqlmodel import Session, col, select
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.deps import (
    MAX_SEQ,
    AgentSelfOrAdmin,
    ServicesDep,
    StreamStart,
    hash_token,
    new_agent_token,
    require,
)
from api.routes import operation
from api.routes.conversations import conversation_view
from api.schemas import (
    UNAUTHORIZED,
    AgentCreate,
    AgentCreated,
    AgentEventPage,
    AgentPublic,
    AgentStatusUpdate,
    ConversationPublic,
    errors,
)
from api.streams import agent_event_public, agent_log, event_stream
from dispatcher import assign_and_notify
from domain.errors import EngineUnavailable
from domain.types import AgentStatus, ConversationState, Role
from store.assignment import agent_skill_groups
from store.events import agent_events_after, agent_feed_seq, agent_stream_key
from store.models import Agent, AgentSkill, Conversation

router = APIRouter(prefix="/v1/agents")

_AUTH_ERRORS = errors({**UNAUTHORIZED, 403: "Only this agent or an admin", 404: "Unknown agent"})


def _public(session: Session, agent: Agent) -> AgentPublic:
    return AgentPublic(
        id=agent.id,
        name=agent.name,
        skill_groups=sorted(agent_skill_groups(session, agent.id)),
        status=AgentStatus(agent.status),
        load=agent.active_count,
        max_concurrent=agent.max_concurrent,
        last_assigned_at=agent.last_assigned_at,
        feed_seq=agent_feed_seq(session, agent.id),
    )


@router.post(
    "",
    **operation("agents", "create"),
    status_code=status.HTTP_201_CREATED,
    response_model=AgentCreated,
    summary="Create an agent; the answer carries the agent's token (shown once)",
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Admins only",
            409: "An agent with this id exists",
            422: "Invalid body or unknown skill group",
        }
    ),
    dependencies=[require(Role.ADMIN)],
)
async def create_agent(body: AgentCreate, services: ServicesDep) -> AgentCreated:
    known = services.policy.current().skill_group_names
    unknown = sorted(set(body.skill_groups) - known)
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"unknown skill group(s) {', '.join(unknown)}; the policy has "
            f"{', '.join(sorted(known))}",
        )
    token = new_agent_token()

    def create() -> AgentPublic:
        with services.db.write() as session:
            agent = Agent(
                id=body.id,
                name=body.name,
                token_hash=hash_token(token),
                max_concurrent=body.max_concurrent,
            )
            session.add(agent)
            session.flush()
            session.add_all(
                AgentSkill(agent_id=body.id, skill_group=group)
                for group in sorted(set(body.skill_groups))
            )
            session.flush()
            return _public(session, agent)

    try:
        public = await run_in_threadpool(create)
    except sa.exc.IntegrityError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"agent {body.id!r} already exists"
        ) from None
    return AgentCreated(**public.model_dump(), token=token)


async def _agent_view(services: ServicesDep, agent_id: str) -> AgentPublic:
    def read() -> AgentPublic:
        with services.db.read() as session:
            agent = session.get(Agent, agent_id)
            assert agent is not None
            return _public(session, agent)

    return await run_in_threadpool(read)


@router.get(
    "/{agent_id}",
    **operation("agents", "get"),
    response_model=AgentPublic,
    summary="An agent's status, load and capacity",
    responses=_AUTH_ERRORS,
)
async def get_agent(agent: AgentSelfOrAdmin, services: ServicesDep) -> AgentPublic:
    return await _agent_view(services, agent.id)


@router.put(
    "/{agent_id}/status",
    **operation("agents", "set_status"),
    response_model=AgentPublic,
    summary="Go online (waiting conversations are assigned at once), away or offline",
    responses=_AUTH_ERRORS,
)
async def set_agent_status(
    body: AgentStatusUpdate, agent: AgentSelfOrAdmin, services: ServicesDep
) -> AgentPublic:
    def write() -> list[str]:
        with services.db.write() as session:
            session.execute(
                sa.update(Agent).where(col(Agent.id) == agent.id).values(status=body.status)
            )
            return agent_skill_groups(session, agent.id)

    groups = await run_in_threadpool(write)
    if body.status == AgentStatus.ONLINE:
        # Going offline keeps active conversations with the agent; online takes new ones now
        # (or, with Temporal unreachable, at the worker's next reconciliation pass).
        try:
            client = await services.temporal.client()
        except EngineUnavailable:
            client = None
        if client is not None:
            await assign_and_notify(db=services.db, client=client, skill_groups=groups)
    return await _agent_view(services, agent.id)


@router.get(
    "/{agent_id}/conversations",
    **operation("agents", "list_conversations"),
    response_model=list[ConversationPublic],
    summary="The agent's conversations (active ones unless a state is given)",
    responses=_AUTH_ERRORS,
)
async def list_agent_conversations(
    agent: AgentSelfOrAdmin,
    services: ServicesDep,
    state: Annotated[ConversationState, Query()] = ConversationState.ACTIVE,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ConversationPublic]:
    def read() -> list[str]:
        with services.db.read() as session:
            return list(
                session.exec(
                    select(Conversation.id)
                    .where(Conversation.agent_id == agent.id, Conversation.state == state)
                    .order_by(col(Conversation.assigned_at).desc())
                    .limit(limit)
                )
            )

    ids = await run_in_threadpool(read)
    return [await conversation_view(services.db, conversation_id) for conversation_id in ids]


@router.get(
    "/{agent_id}/events",
    **operation("agents", "list_events"),
    response_model=AgentEventPage,
    summary="The agent's feed: every event of the agent's conversations, in feed order",
    responses=_AUTH_ERRORS,
)
async def list_agent_events(
    agent: AgentSelfOrAdmin,
    services: ServicesDep,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ, description="A feed seq (agent_seq)")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AgentEventPage:
    def read() -> AgentEventPage:
        with services.db.read() as session:
            rows = agent_events_after(
                session, agent_id=agent.id, after_seq=after_seq, limit=limit + 1
            )
        events = [agent_event_public(seq, event) for seq, event in rows]
        return AgentEventPage(
            agent_id=agent.id, events=events[:limit], has_more=len(events) > limit
        )

    return await run_in_threadpool(read)


@router.get(
    "/{agent_id}/stream",
    **operation("agents", "stream"),
    response_class=EventSourceResponse,
    summary="The agent's feed as Server-Sent Events: assignments, transfers in and out, and "
    "every event of the agent's conversations; replay, then live",
    description=(
        "`id:` is the feed seq (`agent_seq`), `event:` the type, `data:` the same JSON as "
        "/v1/agents/{id}/events: the event with its `conversation_id` and `seq`. Resume with "
        "`Last-Event-ID` (or `after_seq`; a new workbench starts from the agent's `feed_seq`). "
        "`conversation.typing` of the agent's conversations arrives live, without an id."
    ),
    responses={200: {"content": {"text/event-stream": {}}}, **_AUTH_ERRORS},
)
async def stream_agent_events(
    agent: AgentSelfOrAdmin, services: ServicesDep, start: StreamStart
) -> EventSourceResponse:
    return event_stream(
        settings=services.settings,
        hints=services.hints,
        read=agent_log(services.db, agent.id),
        key=agent_stream_key(agent.id),
        after_seq=start,
    )
