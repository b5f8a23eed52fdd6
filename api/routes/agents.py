"""Agents: created, changed, deactivated and listed by an admin; set their own status, see their
conversations, take a new token."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.deps import (
    MAX_SEQ,
    AgentOfStreamer,
    AgentSelfOrAdmin,
    ServicesDep,
    StreamPrincipal,
    StreamStart,
    hash_token,
    new_agent_token,
    require,
    resume_after,
)
from api.presence import keep_present
from api.routes import operation
from api.routes.conversations import conversation_public
from api.schemas import (
    BEYOND_NEWEST,
    UNAUTHORIZED,
    AgentCreate,
    AgentCreated,
    AgentEventPage,
    AgentPage,
    AgentPublic,
    AgentStatusUpdate,
    AgentUpdate,
    ConversationPublic,
    errors,
    too_many_requests,
)
from api.stream_access import stream_access
from api.streams import agent_event_public, agent_log, event_stream
from dispatcher import assign_and_notify
from domain.errors import EngineUnavailable
from domain.types import AgentStatus, ConversationState, Role
from store.agents import (
    AgentDeactivated,
    AgentExists,
    AgentHoldsConversations,
    AgentNotFound,
    AgentView,
    agent_conversations,
    agent_feed,
    change_agent,
    change_agent_status,
    deactivate_agent,
    list_agents,
    newest_feed_seq,
    register_agent,
    replace_agent_token,
    view_agent,
)
from store.events import agent_stream_key

router = APIRouter(prefix="/v1/agents")

_AUTH = {**UNAUTHORIZED, 403: "Only this agent or an admin", 404: "Unknown agent"}
_AUTH_ERRORS = errors(_AUTH)
_ADMIN_ONLY = {**UNAUTHORIZED, 403: "Admins only"}
_ADMIN_ON_AGENT = {**_ADMIN_ONLY, 404: "Unknown agent"}


_UNKNOWN_AGENT = "unknown agent"
_DEACTIVATED = "the agent is deactivated: an admin activates them again"


def _public(view: AgentView) -> AgentPublic:
    agent = view.agent
    return AgentPublic(
        id=agent.id,
        name=agent.name,
        role=agent.role,
        skill_groups=view.skill_groups,
        status=AgentStatus(agent.status),
        load=agent.active_count,
        max_concurrent=agent.max_concurrent,
        last_assigned_at=agent.last_assigned_at,
        feed_seq=view.feed_seq,
        active=not agent.disabled,
    )


def _refuse_unknown_groups(services: ServicesDep, skill_groups: list[str]) -> None:
    """422 for a skill group the policy does not have."""
    known = services.policy.current().skill_group_names
    unknown = sorted(set(skill_groups) - known)
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"unknown skill group(s) {', '.join(unknown)}; the policy has "
            f"{', '.join(sorted(known))}",
        )


async def _dispatch(services: ServicesDep, skill_groups: list[str]) -> None:
    """Assign what waits in these groups to whoever has room now, and tell the workflows (with
    Temporal unreachable: at the worker's next reconciliation pass)."""
    try:
        client = await services.temporal.client()
    except EngineUnavailable:
        return
    await assign_and_notify(db=services.db, client=client, skill_groups=skill_groups)


@router.get(
    "",
    **operation("agents", "list"),
    response_model=AgentPage,
    summary="The agents in id order, active ones unless `include_inactive`, a page at a time",
    responses=errors(_ADMIN_ONLY),
    dependencies=[require(Role.ADMIN)],
)
async def list_all_agents(
    services: ServicesDep,
    include_inactive: Annotated[bool, Query(description="Deactivated agents too")] = False,
    after: Annotated[
        str | None, Query(max_length=64, description="The last id of the page before")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AgentPage:
    views = await run_in_threadpool(
        list_agents,
        services.db,
        include_inactive=include_inactive,
        after=after,
        limit=limit + 1,
    )
    return AgentPage(agents=[_public(view) for view in views[:limit]], has_more=len(views) > limit)


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
    _refuse_unknown_groups(services, body.skill_groups)
    token = new_agent_token()
    try:
        view = await run_in_threadpool(
            register_agent,
            services.db,
            agent_id=body.id,
            name=body.name,
            token_hash=hash_token(token),
            max_concurrent=body.max_concurrent,
            skill_groups=body.skill_groups,
            role=body.role,
        )
    except AgentExists:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"agent {body.id!r} already exists"
        ) from None
    return _with_token(view, token)


def _with_token(view: AgentView, token: str) -> AgentCreated:
    return AgentCreated(**_public(view).model_dump(), token=token)


async def _agent_view(services: ServicesDep, agent_id: str) -> AgentPublic:
    try:
        view = await run_in_threadpool(view_agent, services.db, agent_id=agent_id)
    except AgentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_UNKNOWN_AGENT) from None
    return _public(view)


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
    responses=errors({**_AUTH, 409: "The agent is deactivated"}),
)
async def set_agent_status(
    body: AgentStatusUpdate, agent: AgentSelfOrAdmin, services: ServicesDep
) -> AgentPublic:
    try:
        groups = await run_in_threadpool(
            change_agent_status, services.db, agent_id=agent.id, status=body.status
        )
    except AgentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_UNKNOWN_AGENT) from None
    except AgentDeactivated:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=_DEACTIVATED) from None
    # Going offline keeps active conversations with the agent; online takes new ones now, and
    # leaving may let a waiting one go to an agent it skips, now nobody else is online for it.
    await _dispatch(services, groups)
    return await _agent_view(services, agent.id)


@router.patch(
    "/{agent_id}",
    **operation("agents", "update"),
    response_model=AgentPublic,
    summary="Rename an agent, give them other skill groups or another capacity; a group added "
    "or room made takes waiting conversations at once, and nothing they hold is taken away",
    responses=errors({**_ADMIN_ON_AGENT, 422: "Invalid body or unknown skill group"}),
    dependencies=[require(Role.ADMIN)],
)
async def update_agent(
    body: AgentUpdate, services: ServicesDep, agent_id: Annotated[str, Path(max_length=64)]
) -> AgentPublic:
    if body.skill_groups is not None:
        _refuse_unknown_groups(services, body.skill_groups)
    try:
        view = await run_in_threadpool(
            change_agent,
            services.db,
            agent_id=agent_id,
            name=body.name,
            skill_groups=body.skill_groups,
            max_concurrent=body.max_concurrent,
        )
    except AgentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_UNKNOWN_AGENT) from None
    if body.skill_groups is not None or body.max_concurrent is not None:
        # A group added or a higher capacity: what waits may be theirs now.
        await _dispatch(services, view.skill_groups)
    return await _agent_view(services, agent_id)


@router.post(
    "/{agent_id}/deactivate",
    **operation("agents", "deactivate"),
    response_model=AgentPublic,
    summary="Deactivate an agent who holds no conversation: offline, never assigned, their "
    "token refused and their streams ended",
    responses=errors(
        {**_ADMIN_ON_AGENT, 409: "The agent holds conversations not closed (the detail counts)"}
    ),
    dependencies=[require(Role.ADMIN)],
)
async def deactivate(
    services: ServicesDep, agent_id: Annotated[str, Path(max_length=64)]
) -> AgentPublic:
    try:
        view = await run_in_threadpool(deactivate_agent, services.db, agent_id=agent_id)
    except AgentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_UNKNOWN_AGENT) from None
    except AgentHoldsConversations as holds:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"agent {agent_id!r} holds {holds.held} conversation(s) not closed: "
            "transfer or close them first",
        ) from None
    return _public(view)


@router.post(
    "/{agent_id}/activate",
    **operation("agents", "activate"),
    response_model=AgentCreated,
    summary="Activate a deactivated agent again, with a new token (shown once; the token they "
    "had stays refused); offline until they go online",
    responses=errors(_ADMIN_ON_AGENT),
    dependencies=[require(Role.ADMIN)],
)
async def activate(
    services: ServicesDep, agent_id: Annotated[str, Path(max_length=64)]
) -> AgentCreated:
    return await _new_token(services, agent_id, activate=True)


@router.post(
    "/{agent_id}/token",
    **operation("agents", "rotate_token"),
    response_model=AgentCreated,
    summary="A new token for the agent (shown once): the one they had is refused from now on, "
    "with the stream tickets it asked for",
    responses=_AUTH_ERRORS,
)
async def rotate_token(agent: AgentSelfOrAdmin, services: ServicesDep) -> AgentCreated:
    return await _new_token(services, agent.id, activate=False)


async def _new_token(services: ServicesDep, agent_id: str, *, activate: bool) -> AgentCreated:
    token = new_agent_token()
    try:
        view = await run_in_threadpool(
            replace_agent_token,
            services.db,
            agent_id=agent_id,
            token_hash=hash_token(token),
            activate=activate,
        )
    except AgentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=_UNKNOWN_AGENT) from None
    return _with_token(view, token)


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
    views = await run_in_threadpool(
        agent_conversations, services.db, agent_id=agent.id, state=state, limit=limit
    )
    return [conversation_public(view, staff=True) for view in views]


@router.get(
    "/{agent_id}/events",
    **operation("agents", "list_events"),
    response_model=AgentEventPage,
    summary="The agent's feed: every event of the agent's conversations, in feed order",
    responses=errors({**_AUTH, **BEYOND_NEWEST}),
)
async def list_agent_events(
    agent: AgentSelfOrAdmin,
    services: ServicesDep,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ, description="A feed seq (agent_seq)")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AgentEventPage:
    newest = await run_in_threadpool(newest_feed_seq, services.db, agent_id=agent.id)
    after_seq = resume_after(after_seq, newest=newest)
    # Mapped in the thread too: a page holds up to a thousand events.
    events = await run_in_threadpool(
        lambda: [
            agent_event_public(seq, event)
            for seq, event in agent_feed(
                services.db, agent_id=agent.id, after_seq=after_seq, limit=limit + 1
            )
        ]
    )
    return AgentEventPage(agent_id=agent.id, events=events[:limit], has_more=len(events) > limit)


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
        "`conversation.typing` of the agent's conversations arrives live, without an id. "
        "A browser's EventSource, which sends no headers, passes a stream ticket as `ticket`. "
        "A deactivated agent's stream, or one opened with a token since replaced, ends with a "
        "last `stream.ended` event (`reason`). "
        "The agent's own stream keeps them present: online with none open for the policy's "
        "`agents.presence_timeout`, they go away (`agent.status_changed`, `reason` "
        "`no_connection`, on this feed) until they go online again."
    ),
    responses={
        200: {"content": {"text/event-stream": {}}},
        **errors({**_AUTH, **BEYOND_NEWEST}),
        **too_many_requests("The caller holds the most streams allowed open already"),
    },
)
async def stream_agent_events(
    agent: AgentOfStreamer, principal: StreamPrincipal, services: ServicesDep, start: StreamStart
) -> EventSourceResponse:
    newest = await run_in_threadpool(newest_feed_seq, services.db, agent_id=agent.id)
    return event_stream(
        settings=services.settings,
        hints=services.hints,
        read=agent_log(services.db, agent.id),
        key=agent_stream_key(agent.id),
        after_seq=resume_after(start, newest=newest),
        viewer=principal.id,
        access=stream_access(services, principal),
        # The agent's own workbench keeps them present (a supervisor's too: an agent record);
        # an admin watching their feed does not.
        while_open=None
        if principal.role == Role.ADMIN
        else partial(keep_present, services.db, services.policy, agent.id),
        # Taken last: a refused resume point holds no slot.
        on_close=services.limits.streams.take(principal.role, principal.id),
    )
