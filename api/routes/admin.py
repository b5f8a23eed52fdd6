"""Ops: the effective policy and its reload, a conversation's live snapshot, the bot's
unanswered questions, and the webhooks' deliveries (their list, and sending one again)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from starlette.concurrency import run_in_threadpool

from api.deps import MAX_INTEGER, ConversationOfCaller, ServicesDep, require
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
    WebhookDeliveriesPublic,
    WebhookDeliveryPublic,
    errors,
)
from domain.policy import NAME_PATTERN, PolicyError, PolicySource
from domain.types import Role
from store import bot, webhooks
from store.models import WebhookDelivery, utcnow

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


def _delivery_public(delivery: WebhookDelivery) -> WebhookDeliveryPublic:
    assert delivery.id is not None
    return WebhookDeliveryPublic(
        id=delivery.id,
        endpoint=delivery.endpoint,
        subject=delivery.subject,
        subject_id=delivery.subject_id,
        seq=delivery.seq,
        type=delivery.type,
        status=delivery.status,
        attempts=delivery.attempts,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at if delivery.status == webhooks.PENDING else None,
        created_at=delivery.at,
        delivered_at=delivery.delivered_at,
    )


@router.get(
    "/webhooks/deliveries",
    **operation("admin", "list_webhook_deliveries"),
    response_model=WebhookDeliveriesPublic,
    summary="The webhooks' deliveries in id order (the oldest first), of a status and an "
    "endpoint if given: attempts, the last error, when the next attempt is due",
    responses=errors({**_ADMIN_ONLY, 422: "A bad status, endpoint, after or limit"}),
)
async def list_webhook_deliveries(
    services: ServicesDep,
    delivery_status: Annotated[
        Literal["pending", "delivered", "failed", "skipped"] | None, Query(alias="status")
    ] = None,
    endpoint: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_INTEGER, description="The last id of the previous page")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> WebhookDeliveriesPublic:
    found = await run_in_threadpool(
        webhooks.list_deliveries,
        services.db,
        status=delivery_status,
        endpoint=endpoint,
        after=after,
        limit=limit + 1,
    )
    return WebhookDeliveriesPublic(
        deliveries=[_delivery_public(delivery) for delivery in found[:limit]],
        has_more=len(found) > limit,
    )


@router.post(
    "/webhooks/deliveries/{delivery_id}/redeliver",
    **operation("admin", "redeliver_webhook"),
    response_model=WebhookDeliveryPublic,
    summary="Send a delivery again now, with its id (a failed one, or one the endpoint lost); "
    "it keeps its place: later ones of its conversation wait for it",
    responses=errors({**_ADMIN_ONLY, 404: "Unknown delivery"}),
)
async def redeliver_webhook(
    services: ServicesDep, delivery_id: Annotated[int, Path(ge=1, le=MAX_INTEGER)]
) -> WebhookDeliveryPublic:
    delivery = await run_in_threadpool(webhooks.redeliver, services.db, delivery_id)
    if delivery is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown delivery")
    return _delivery_public(delivery)
