"""Customers: their conversations, for staff beside the chat; and erasing everything a
customer wrote (admin), as the law lets them ask.

The customer's open conversations are closed first, through their workflows (`admin_closed`,
as an admin's close), so no new text can come in; then each conversation is erased in its own
transaction (store/erasure.py) and the erase is recorded as an admin action. The customer's id
is in no log line (the access line shows the route, not this path) and goes nowhere near
Temporal.

An unknown customer answers 200 with zero counts, as a customer erased before does: whether a
customer ever talked to the service is itself personal data, and a 404 would tell it; a retry
of an erase that succeeded (its answer lost) gets the same shape, erasing nothing new.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentPrincipal, Services, ServicesDep, require
from api.routes import operation
from api.schemas import (
    ENGINE_DOWN,
    UNAUTHORIZED,
    CustomerConversation,
    ErasurePublic,
    errors,
)
from domain.errors import ConversationEnded, EngineUnavailable, UpdateRejected
from domain.types import CloseRequest, ConversationState, Role
from store.conversations import customer_history, find_conversation, serves_customer
from store.erasure import Erased, customer_conversations, erase_conversation, record_erasure
from store.tickets import erase_customer_tickets

router = APIRouter(prefix="/v1/customers")
log = logging.getLogger("switchboard.api")

# A close someone else asked for at the same time is stored within this (or the erase answers
# 503, and its retry finds it closed).
_CLOSE_WAIT_SECONDS = 30.0
_CLOSE_POLL_SECONDS = 0.2

CustomerId = Annotated[
    str, Path(min_length=1, max_length=200, description="Your app's id of the customer")
]


async def _close_for_erasure(services: Services, conversation_id: str, by_id: str) -> bool:
    """Close the open conversation as an admin does, and wait until its close is stored.
    True if this close did it (not a close someone else asked for meanwhile)."""
    closed_here = True
    try:
        await services.temporal.close(
            conversation_id, CloseRequest(by_role=Role.ADMIN, by_id=by_id)
        )
    except UpdateRejected:
        closed_here = False  # closed, or being closed, at someone else's request
    except ConversationEnded as exc:  # no workflow yet: the reconciler starts it, then a retry
        raise EngineUnavailable("a conversation's workflow is not running yet") from exc
    deadline = asyncio.get_running_loop().time() + _CLOSE_WAIT_SECONDS
    while True:
        conversation = await run_in_threadpool(
            find_conversation, services.db, conversation_id=conversation_id
        )
        if conversation is None or conversation.state == ConversationState.CLOSED:
            return closed_here
        if asyncio.get_running_loop().time() > deadline:
            raise EngineUnavailable("a conversation's close was not stored in time")
        await asyncio.sleep(_CLOSE_POLL_SECONDS)


@router.get(
    "/{customer_id}/conversations",
    **operation("customers", "list_conversations"),
    response_model=list[CustomerConversation],
    summary="The customer's conversations, the newest first (each transcript: its /events), "
    "for the agent serving the customer now, supervisors of their groups and admins",
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Not the customer's agent now, nor a supervisor of a group they were served in",
        }
    ),
    dependencies=[require(Role.AGENT, Role.SUPERVISOR, Role.ADMIN)],
)
async def list_customer_conversations(
    customer_id: CustomerId,
    principal: CurrentPrincipal,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[CustomerConversation]:
    # Whether a customer ever talked to the service is theirs to keep: who may not read their
    # history gets the same 403 whether they exist or not.
    if principal.role == Role.AGENT and not await run_in_threadpool(
        serves_customer, services.db, agent_id=principal.id, customer_id=customer_id
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="not a customer you are serving")
    history = await run_in_threadpool(
        customer_history, services.db, customer_id=customer_id, limit=limit
    )
    if principal.role == Role.SUPERVISOR and not any(
        principal.oversees(past.conversation.skill_group) for past in history
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="not a customer of your groups")
    return [
        CustomerConversation(
            id=past.conversation.id,
            channel=past.conversation.channel,
            state=past.conversation.state,
            close_reason=past.conversation.close_reason,
            skill_group=past.conversation.skill_group,
            agent_id=past.conversation.agent_id,
            agent_name=past.agent_name,
            rating_score=past.conversation.rating_score,
            rating_resolved=past.conversation.rating_resolved,
            created_at=past.conversation.created_at,
            closed_at=past.conversation.closed_at,
        )
        for past in history
    ]


@router.post(
    "/{customer_id}/erase",
    **operation("customers", "erase"),
    response_model=ErasurePublic,
    summary="Erase the customer's text: messages, rating comments, left messages, notes and "
    "what the app gave; open conversations are closed first (admin_closed)",
    responses=errors({**UNAUTHORIZED, 403: "Admins only", **ENGINE_DOWN}),
    dependencies=[require(Role.ADMIN)],
)
async def erase_customer(
    customer_id: CustomerId, principal: CurrentPrincipal, services: ServicesDep
) -> ErasurePublic:
    conversations = await run_in_threadpool(
        customer_conversations, services.db, customer_id=customer_id
    )
    closed = 0
    for conversation in conversations:
        if conversation.state != ConversationState.CLOSED:
            closed += await _close_for_erasure(services, conversation.id, principal.id)
    erased = Erased()
    for conversation in conversations:
        erased += await run_in_threadpool(
            erase_conversation,
            services.db,
            conversation_id=conversation.id,
            objects=services.objects,
        )
    # Their tickets' text too (a ticket's customer id stays, as a conversation's does).
    await run_in_threadpool(erase_customer_tickets, services.db, customer_id=customer_id)
    action = await run_in_threadpool(record_erasure, services.db, by_id=principal.id, erased=erased)
    log.info(
        "customer erased by %s: %d conversations, %d messages, %d closed first",
        principal.id,
        erased.conversations,
        erased.messages,
        closed,
    )
    return ErasurePublic(
        conversations=erased.conversations,
        messages=erased.messages,
        closed=closed,
        erased_at=action.at,
    )
