"""Left messages: taken when a conversation closed out of hours or on overflow; the team that
calls back lists and resolves them."""

from __future__ import annotations

from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from api.deps import (
    MAX_INTEGER,
    ConversationOfCaller,
    CurrentPrincipal,
    ServicesDep,
    require,
)
from api.routes import operation
from api.routes.conversations import conversation_router
from api.schemas import (
    UNAUTHORIZED,
    LeftMessageCreate,
    LeftMessagePublic,
    LeftMessageResolve,
    errors,
)
from domain.types import LEFT_MESSAGE_REASONS, ConversationState, EventType, Role
from store.assignment import agent_skill_groups
from store.events import append_event
from store.models import LeftMessage, utcnow

router = APIRouter(prefix="/v1/left-messages")


def _public(message: LeftMessage) -> LeftMessagePublic:
    assert message.id is not None
    return LeftMessagePublic.model_validate(message, from_attributes=True)


@conversation_router.post(
    "/{conversation_id}/left-message",
    **operation("left_messages", "leave"),
    status_code=status.HTTP_201_CREATED,
    response_model=LeftMessagePublic,
    summary="Leave a message after an out-of-hours or overflow close (its visitor, once)",
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Not your conversation, or not its visitor",
            404: "Unknown conversation",
            409: "No left message is offered, or one was left already",
        }
    ),
    dependencies=[require(Role.VISITOR)],
)
async def leave_message(
    body: LeftMessageCreate, conversation: ConversationOfCaller, services: ServicesDep
) -> LeftMessagePublic:
    if (
        conversation.state != ConversationState.CLOSED
        or conversation.close_reason not in LEFT_MESSAGE_REASONS
    ):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="a left message is offered only after an out-of-hours or overflow close",
        )

    def write() -> LeftMessage:
        with services.db.write() as session:
            message = LeftMessage(
                conversation_id=conversation.id,
                customer_id=conversation.customer_id,
                skill_group=conversation.skill_group,
                content=body.content,
                contact=body.contact,
            )
            session.add(message)
            session.flush()
            append_event(
                session,
                conversation_id=conversation.id,
                type=EventType.LEFT_MESSAGE_CREATED,
                data={"left_message_id": message.id},
            )
            return message

    try:
        message = await run_in_threadpool(write)
    except sa.exc.IntegrityError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="a message was left for this conversation already"
        ) from None
    return _public(message)


@router.get(
    "",
    **operation("left_messages", "list"),
    response_model=list[LeftMessagePublic],
    summary="Left messages to call back (an agent sees those of their skill groups)",
    responses=errors({**UNAUTHORIZED, 403: "Admins and agents only"}),
)
async def list_left_messages(
    principal: CurrentPrincipal,
    services: ServicesDep,
    status_: Annotated[Literal["open", "resolved"] | None, Query(alias="status")] = "open",
    skill_group: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[LeftMessagePublic]:
    if principal.role not in (Role.ADMIN, Role.AGENT):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="admins and agents only")

    def read() -> list[LeftMessagePublic]:
        with services.db.read() as session:
            query = select(LeftMessage).order_by(col(LeftMessage.created_at))
            if status_ is not None:
                query = query.where(LeftMessage.status == status_)
            if skill_group is not None:
                query = query.where(LeftMessage.skill_group == skill_group)
            if principal.role == Role.AGENT:
                groups = agent_skill_groups(session, principal.id)
                query = query.where(col(LeftMessage.skill_group).in_(groups))
            return [_public(m) for m in session.exec(query.limit(limit))]

    return await run_in_threadpool(read)


@router.post(
    "/{left_message_id}/resolve",
    **operation("left_messages", "resolve"),
    response_model=LeftMessagePublic,
    summary="Mark a left message handled (called back)",
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Admins and agents of its skill group only",
            404: "Unknown left message",
            409: "Resolved already",
        }
    ),
)
async def resolve_left_message(
    left_message_id: Annotated[int, Path(ge=1, le=MAX_INTEGER)],
    body: LeftMessageResolve,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> LeftMessagePublic:
    if principal.role not in (Role.ADMIN, Role.AGENT):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="admins and agents only")

    def write() -> LeftMessage:
        with services.db.write() as session:
            message = session.get(LeftMessage, left_message_id)
            if message is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown left message")
            if principal.role == Role.AGENT and message.skill_group not in agent_skill_groups(
                session, principal.id
            ):
                raise HTTPException(status.HTTP_403_FORBIDDEN, detail="not your skill group")
            if message.status == "resolved":
                raise HTTPException(status.HTTP_409_CONFLICT, detail="resolved already")
            message.status = "resolved"
            message.resolved_at = utcnow()
            message.resolved_by = principal.id
            message.resolution_note = body.note
            session.add(message)
            append_event(
                session,
                conversation_id=message.conversation_id,
                type=EventType.LEFT_MESSAGE_RESOLVED,
                data={"left_message_id": message.id, "resolved_by": principal.id},
            )
            return message

    return _public(await run_in_threadpool(write))
