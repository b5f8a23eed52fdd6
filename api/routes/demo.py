"""The demo's backend (development only: production has no such route, nor the /demo/ page).

The demo page (web/demo/) plays an app's site; this route plays its backend. A real backend
signs its customer in and starts the conversation with the app key; this one starts it for
the customer id the form names, with the configured app key, so the key never reaches the
browser: the page gets the visitor token alone and hands it to the widget."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import Principal, ServicesDep
from api.routes.conversations import start_conversation
from api.schemas import ConversationCreate, ConversationCreated
from domain.types import Role

DEMO_CONVERSATIONS = "/demo/conversations"

router = APIRouter()


@router.post(
    DEMO_CONVERSATIONS,
    status_code=status.HTTP_201_CREATED,
    response_model=ConversationCreated,
    # A development aid, not part of the API's contract: no client is generated for it.
    include_in_schema=False,
)
async def start_demo_conversation(
    body: ConversationCreate, services: ServicesDep, response: Response
) -> ConversationCreated:
    """POST /v1/conversations as the app's backend does it (the same limits, the customer's
    open conversation answered with 200): anyone may ask, since only a development API has it."""
    return await start_conversation(body, Principal(Role.APP, "app"), services, response)
