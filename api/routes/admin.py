"""Ops and supervisors: the effective policy and its reload, a conversation's live snapshot."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from api.deps import ConversationOfCaller, ServicesDep, require
from api.routes import operation
from api.routes.conversations import conversation_view
from api.schemas import (
    ENGINE_DOWN,
    UNAUTHORIZED,
    ConversationSupervision,
    IsoTime,
    PolicyPublic,
    UnansweredPublic,
    UnansweredQuestion,
    errors,
)
from domain.policy import PolicyError, PolicySource
from domain.types import Role
from store import bot
from store.models import utcnow

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


@router.get(
    "/bot/unanswered",
    **operation("admin", "get_unanswered_questions"),
    response_model=UnansweredPublic,
    summary="The questions the bot did not understand, the most asked first (the text stays "
    "in the database; an erased transcript's are gone)",
    responses=errors({**_ADMIN_ONLY, 422: "A bad `since` or `limit`"}),
)
async def unanswered_questions(
    services: ServicesDep,
    since: Annotated[
        IsoTime | None,
        Query(description="From when (ISO 8601 with its zone); default: the last 7 days"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> UnansweredPublic:
    start = since or utcnow() - timedelta(days=7)
    found = await run_in_threadpool(bot.unanswered, services.db, since=start, limit=limit)
    return UnansweredPublic(
        since=start,
        questions=[
            UnansweredQuestion(
                question=item.question, count=item.count, last_asked_at=item.last_asked_at
            )
            for item in found
        ],
    )
