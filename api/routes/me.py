"""The caller: who a staff token belongs to, for a workbench signed in with that token alone
(it learns the agent's id, role and groups here, never from a URL)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentPrincipal, ServicesDep, require
from api.routes import operation
from api.schemas import UNAUTHORIZED, CallerPublic, errors
from domain.types import Role
from store.agents import AgentNotFound, view_agent

router = APIRouter()


@router.get(
    "/v1/me",
    **operation("me", "get"),
    response_model=CallerPublic,
    summary="Who the token belongs to: role, id, name and skill groups (staff only)",
    responses=errors({**UNAUTHORIZED, 403: "Staff only (agents, supervisors, admins)"}),
    dependencies=[require(Role.AGENT, Role.SUPERVISOR, Role.ADMIN)],
)
async def get_me(principal: CurrentPrincipal, services: ServicesDep) -> CallerPublic:
    if principal.role == Role.ADMIN:
        groups = sorted(services.policy.current().skill_group_names)
        return CallerPublic(role=Role.ADMIN, id=principal.id, name="Admin", skill_groups=groups)
    try:
        view = await run_in_threadpool(view_agent, services.db, agent_id=principal.id)
    except AgentNotFound:  # deactivated or gone since the door let them in
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="unknown agent") from None
    return CallerPublic(
        role=principal.role, id=view.agent.id, name=view.agent.name, skill_groups=view.skill_groups
    )
