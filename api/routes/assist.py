"""Staff assist (坐席辅助): the canned replies of the caller's skill groups, found by a word of
theirs and filled for the conversation at hand. (A conversation's SOP comes with the
conversation itself: GET /v1/conversations/{id}, for staff.)

Both come from the policy file as it is now: an edit shows at the next request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentPrincipal, Principal, ServicesDep, groups_of_staff, may_access, require
from api.routes import operation
from api.schemas import UNAUTHORIZED, CannedReplyPage, CannedReplyPublic, errors
from domain.policy import CannedReply, Policy
from domain.types import Role
from store.agents import find_agent
from store.conversations import ConversationView, view_conversation
from store.db import Database
from store.erasure import ERASED
from store.events import ConversationNotFound

router = APIRouter(
    prefix="/v1/canned-replies", dependencies=[require(Role.AGENT, Role.SUPERVISOR, Role.ADMIN)]
)

MAX_QUERY_CHARS = 100
# Replies in one answer: a workbench shows a short list as the agent types.
MAX_CANNED_REPLIES = 50


def _placeholder_values(
    db: Database, view: ConversationView, principal: Principal
) -> dict[str, str | None]:
    """What the conversation fills in: its agent's display name (or the caller's), its
    order id, its customer's name (the `name` attribute the app gave). An erased value is
    no value."""
    conversation = view.conversation
    agent_name = view.agent_name
    if agent_name is None and principal.role == Role.AGENT:
        caller = find_agent(db, agent_id=principal.id)
        agent_name = caller.name if caller is not None else None
    attributes = conversation.attributes or {}
    name = attributes.get("name")
    values = {
        "agent_name": agent_name,
        "order_id": conversation.order_id,
        "customer_name": name.strip() if isinstance(name, str) else None,
    }
    return {key: None if value == ERASED else value for key, value in values.items()}


def _public(
    reply: CannedReply, policy: Policy, values: dict[str, str | None] | None
) -> CannedReplyPublic:
    text, unfilled = reply.text, []
    if values is not None:
        filled = reply.filled(values, policy.canned_reply_fallbacks)
        text, unfilled = filled.text, filled.unfilled
    return CannedReplyPublic(
        shortcut=reply.shortcut,
        title=reply.title,
        text=text,
        skill_groups=reply.skill_groups,
        unfilled=unfilled,
    )


@router.get(
    "",
    **operation("canned_replies", "list"),
    response_model=CannedReplyPage,
    summary="The canned replies of your skill groups (an admin: all) holding `q` in their "
    "shortcut, title or text; with conversation_id, filled for that conversation",
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Staff only; with conversation_id, its agent or an admin",
            404: "Unknown conversation",
        }
    ),
)
async def list_canned_replies(
    principal: CurrentPrincipal,
    services: ServicesDep,
    q: Annotated[
        str,
        Query(
            max_length=MAX_QUERY_CHARS,
            description="Found in the shortcut, title or text, whatever the case (退款, refund)",
        ),
    ] = "",
    conversation_id: Annotated[
        str | None,
        Query(max_length=64, description="Fill the placeholders for this conversation"),
    ] = None,
) -> CannedReplyPage:
    policy = services.policy.current()
    values = None
    if conversation_id is not None:
        try:
            view = await run_in_threadpool(
                view_conversation, services.db, conversation_id=conversation_id
            )
        except ConversationNotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown conversation") from None
        if not may_access(principal, view.conversation):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="not your conversation")
        values = await run_in_threadpool(_placeholder_values, services.db, view, principal)
    groups = await run_in_threadpool(groups_of_staff, services.db, principal)
    found = policy.canned_replies_for(groups, q)
    return CannedReplyPage(
        canned_replies=[_public(reply, policy, values) for reply in found[:MAX_CANNED_REPLIES]],
        has_more=len(found) > MAX_CANNED_REPLIES,
    )
