"""Every kind of caller, each with a real credential for a real resource, for the authorization
matrix and the hostile-input tests. `World` makes the resources through the API itself (in
process or over HTTP), so every token is one the API handed out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from tests.utils import ADMIN, APP, DEFAULT_GROUPS, bearer, eventually

# Nobody is ever served in `callback`: a conversation routed there closes at once with
# `overflow` (whoever is online), and its visitor may leave a message for the group's agents.
CALLBACK_GROUPS = (
    DEFAULT_GROUPS
    + '[[skill_groups]]\nname = "callback"\nmax_queue_length = 0\noverflow_to = "left_message"\n'
)
CALLBACK_ROUTING = '[[routing]]\nwhen = { entry = "callback" }\nskill_group = "callback"\n'

ADMIN_TOKEN = ADMIN["Authorization"].removeprefix("Bearer ")
APP_KEY = APP["Authorization"].removeprefix("Bearer ")
OWNER = "alice"  # holds every conversation, and is an agent of the left messages' group
OTHER_AGENT = "bob"  # online in another group: holds nothing the tests look at


class Caller(StrEnum):
    NOBODY = "no token"
    BAD_TOKEN = "a forged visitor token"
    ADMIN = "admin"
    APP = "app"
    OWNER_AGENT = "its agent"
    OTHER_AGENT = "another agent"
    OWN_VISITOR = "its visitor"
    OTHER_VISITOR = "another conversation's visitor"


@dataclass(frozen=True)
class Conversation:
    id: str
    visitor_token: str


class World:
    """Alice (online, in `general` and `callback`), Bob (online, in `after_sales`), and the
    conversations and left messages the tests act on, all made through `http`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.tokens: dict[str, str] = {}

    async def _ok(self, method: str, url: str, token: str, body: Any = None) -> dict[str, Any]:
        response = await self.http.request(method, url, headers=bearer(token), json=body)
        assert response.is_success, (method, url, response.status_code, response.text)
        return response.json()

    async def populate(self) -> World:
        for agent_id, groups in ((OWNER, ["general", "callback"]), (OTHER_AGENT, ["after_sales"])):
            body = {
                "id": agent_id,
                "name": agent_id.title(),
                "skill_groups": groups,
                "max_concurrent": 50,
            }
            self.tokens[agent_id] = (await self._ok("POST", "/v1/agents", ADMIN_TOKEN, body))[
                "token"
            ]
            await self.set_status(agent_id, "online")
        return self

    async def set_status(self, agent_id: str, status: str) -> None:
        await self._ok("PUT", f"/v1/agents/{agent_id}/status", ADMIN_TOKEN, {"status": status})

    async def start(self, **attributes: str) -> Conversation:
        body = {"customer_id": f"customer-{uuid.uuid4().hex[:10]}", **attributes}
        created = await self._ok("POST", "/v1/conversations", APP_KEY, body)
        return Conversation(created["id"], created["visitor_token"])

    async def view(self, conversation: Conversation) -> dict[str, Any]:
        return await self._ok("GET", f"/v1/conversations/{conversation.id}", ADMIN_TOKEN)

    async def _until(self, conversation: Conversation, what: str, **expected: Any) -> None:
        async def check() -> bool:
            body = await self.view(conversation)
            return all(body[key] == value for key, value in expected.items())

        await eventually(check, timeout=30, what=f"{conversation.id} {what}")

    async def active(self) -> Conversation:
        """A conversation Alice holds (the only online agent of `general`)."""
        conversation = await self.start()
        await self._until(conversation, "to be Alice's", state="active", agent_id=OWNER)
        return conversation

    async def rating_pending(self) -> Conversation:
        """A conversation Alice closed: its visitor is invited to rate it."""
        conversation = await self.active()
        await self._ok("POST", f"/v1/conversations/{conversation.id}/close", self.tokens[OWNER])

        async def invited() -> bool:
            return (await self.view(conversation))["rating"]["status"] == "pending"

        await eventually(invited, timeout=30, what=f"{conversation.id}: rating invited")
        return conversation

    async def overflowed(self) -> Conversation:
        """A conversation closed with `overflow`: its visitor may leave a message."""
        conversation = await self.start(entry="callback")
        await self._until(conversation, "to overflow", close_reason="overflow")
        return conversation

    async def left_message(self) -> int:
        """An open left message, in the `callback` group (Alice's, not Bob's)."""
        conversation = await self.overflowed()
        left = await self._ok(
            "POST",
            f"/v1/conversations/{conversation.id}/left-message",
            conversation.visitor_token,
            {"content": "Please call me back"},
        )
        return left["id"]

    async def close(self, conversation: Conversation) -> None:
        """Closed by an admin (frees Alice's capacity); already closed is fine."""
        response = await self.http.post(
            f"/v1/conversations/{conversation.id}/close", headers=bearer(ADMIN_TOKEN)
        )
        assert response.status_code in (200, 409), response.text


def forged_visitor_token(conversation: Conversation) -> str:
    """The shape of the conversation's visitor token, with a signature the API never made."""
    signature = conversation.visitor_token.rsplit(".", 1)[1]
    return conversation.visitor_token.removesuffix(signature) + "0" * len(signature)
