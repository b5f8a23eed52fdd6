"""Ops and supervisors: the effective policy and its reload, a conversation's live snapshot."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from api.deps import ConversationOfCaller, ServicesDep, require
from api.routes import operation
from api.routes.conversations import conversation_view
from api.schemas import ENGINE_DOWN, UNAUTHORIZED, ConversationSupervision, PolicyPublic, errors
from domain.policy import PolicyError, PolicySource
from domain.types import Role

router = APIRouter(prefix="/v1/admin", dependencies=[require(Role.ADMIN)])

_ADMIN_ONLY = {**UNAUTHORIZED, 403: "Admins only"}


def _policy_public(source: PolicySource) -> PolicyPublic:
    policy = source.current()
    return PolicyPublic(
        version=policy.version,
        path=str(source.path),
        loaded_at=source.loaded_at,
        last_error=source.last_error,
        policy=policy.model_dump(mode="json"),
    )


@router.get(
    "/policy",
    **operation("admin", "get_policy"),
    response_model=PolicyPublic,
    summary="The effective policy, its version, and the error of a bad edit it refused",
    responses=errors(_ADMIN_ONLY),
)
async def get_policy(services: ServicesDep) -> PolicyPublic:
    return await run_in_threadpool(_policy_public, services.policy)


@router.post(
    "/policy/reload",
    **operation("admin", "reload_policy"),
    response_model=PolicyPublic,
    summary="Read the policy file now; a bad file is refused (422, with the reason) and the "
    "policy in force stays",
    responses=errors({**_ADMIN_ONLY, 422: "The file is invalid: nothing changed"}),
)
async def reload_policy(services: ServicesDep) -> PolicyPublic:
    try:
        await run_in_threadpool(services.policy.reload)
    except PolicyError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return await run_in_threadpool(_policy_public, services.policy)


@router.get(
    "/conversations/{conversation_id}/snapshot",
    **operation("admin", "get_snapshot"),
    response_model=ConversationSupervision,
    summary="What the conversation's workflow knows now (its pending timers and when they "
    "fire) with its live queue position",
    responses=errors({**_ADMIN_ONLY, 404: "Unknown conversation", **ENGINE_DOWN}),
)
async def conversation_snapshot(
    conversation: ConversationOfCaller, services: ServicesDep
) -> ConversationSupervision:
    snapshot = await services.temporal.snapshot(conversation.id)
    view = await conversation_view(services.db, conversation.id, staff=True)
    return ConversationSupervision(
        workflow=snapshot, queue_position=view.queue_position, estimated_wait=view.estimated_wait
    )
