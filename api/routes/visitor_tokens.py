"""Visitor tokens, minted afresh by the app (after a key rotation, or for a new device)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status

from api.credentials import visitor_access_ended, visitor_access_ends, visitor_token
from api.deps import ServicesDep, load_conversation, require
from api.routes import operation
from api.schemas import UNAUTHORIZED, VisitorTokenPublic, errors
from domain.types import Role
from store.models import Conversation

router = APIRouter(prefix="/v1/conversations")


@router.post(
    "/{conversation_id}/visitor-token",
    **operation("conversations", "mint_visitor_token"),
    response_model=VisitorTokenPublic,
    summary="A fresh token for the conversation's visitor, signed with the current key",
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Only your app's backend",
            404: "Unknown conversation",
            409: "The visitor's access has ended: closed, and the rating window is over",
        }
    ),
    dependencies=[require(Role.APP)],
)
async def mint_visitor_token(
    conversation: Annotated[Conversation, Depends(load_conversation)], services: ServicesDep
) -> VisitorTokenPublic:
    window = services.policy.current().timeouts.rating_window
    if visitor_access_ended(conversation, rating_window=window):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="the visitor's access to this conversation has ended (closed, and its "
            "rating window is over)",
        )
    return VisitorTokenPublic(
        conversation_id=conversation.id,
        visitor_token=visitor_token(services.settings, conversation.id),
        expires_at=visitor_access_ends(conversation, rating_window=window),
    )
