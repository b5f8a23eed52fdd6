"""Left messages: taken when a conversation closed out of hours or on overflow; the team that
calls back lists and resolves them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
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
from domain.types import Role
from store.events import ConversationNotFound
from store.left_messages import (
    LeftMessageExists,
    LeftMessageNotFound,
    LeftMessageNotOffered,
    LeftMessageResolved,
    LeftMessageStatus,
    NotYourSkillGroup,
    left_messages,
    record_resolution,
    store_left_message,
)
from store.models import LeftMessage

router = APIRouter(prefix="/v1/left-messages")
# Who calls visitors back: agents and supervisors, of the message's group; admins, of any.
_STAFF_OF_GROUPS = (Role.ADMIN, Role.AGENT, Role.SUPERVISOR)


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
    try:
        message = await run_in_threadpool(
            store_left_message,
            services.db,
            conversation_id=conversation.id,
            content=body.content,
            contact=body.contact,
        )
    except ConversationNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown conversation") from None
    except LeftMessageNotOffered:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="a left message is offered only after an out-of-hours or overflow close",
        ) from None
    except LeftMessageExists:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="a message was left for this conversation already"
        ) from None
    return _public(message)


@router.get(
    "",
    **operation("left_messages", "list"),
    response_model=list[LeftMessagePublic],
    summary="Left messages to call back (agents and supervisors see those of their groups)",
    responses=errors({**UNAUTHORIZED, 403: "Staff only"}),
)
async def list_left_messages(
    principal: CurrentPrincipal,
    services: ServicesDep,
    status_: Annotated[LeftMessageStatus | None, Query(alias="status")] = "open",
    skill_group: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[LeftMessagePublic]:
    if principal.role not in _STAFF_OF_GROUPS:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="staff only")

    messages = await run_in_threadpool(
        left_messages,
        services.db,
        status=status_,
        skill_group=skill_group,
        agent_id=None if principal.role == Role.ADMIN else principal.id,
        limit=limit,
    )
    return [_public(message) for message in messages]


@router.post(
    "/{left_message_id}/resolve",
    **operation("left_messages", "resolve"),
    response_model=LeftMessagePublic,
    summary="Mark a left message handled (called back)",
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Admins, and agents and supervisors of its skill group only",
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
    if principal.role not in _STAFF_OF_GROUPS:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="staff only")

    try:
        message = await run_in_threadpool(
            record_resolution,
            services.db,
            left_message_id=left_message_id,
            by_role=principal.role,
            by_id=principal.id,
            note=body.note,
        )
    except LeftMessageNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown left message") from None
    except NotYourSkillGroup:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="not your skill group") from None
    except LeftMessageResolved:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="resolved already") from None
    return _public(message)
