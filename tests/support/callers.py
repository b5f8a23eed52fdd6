"""Every kind of caller, each with a real credential for a real resource, for the authorization
matrix and the hostile-input tests. `World` makes the resources through the API itself (in
process or over HTTP), so every token is one the API handed out."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tests.support.api import ApiClient, Visit, eventually
from tests.support.policy import DEFAULT_GROUPS

# Nobody is ever served in `callback`: a conversation routed there closes at once with
# `overflow` (whoever is online), and its visitor may leave a message for the group's agents.
CALLBACK_GROUPS = (
    DEFAULT_GROUPS
    + '[[skill_groups]]\nname = "callback"\nmax_queue_length = 0\noverflow_to = "left_message"\n'
)
CALLBACK_ROUTING = '[[routing]]\nwhen = { entry = "callback" }\nskill_group = "callback"\n'

OWNER = "alice"  # holds every conversation, and is an agent of the left messages' group
OTHER_AGENT = "bob"  # online in another group: holds nothing the tests look at
FORMER_AGENT = "frank"  # online in another group: held Alice's conversations, handed them back
DISABLED_AGENT = "dave"  # disabled: his token no longer works
SUPERVISOR = "sue"  # supervises `general` and `callback`: Alice's groups
OTHER_SUPERVISOR = "oscar"  # supervises `after_sales`


class Caller(StrEnum):
    NOBODY = "no token"
    BAD_TOKEN = "a forged visitor token"
    ADMIN = "admin"
    APP = "app"
    OWNER_AGENT = "its agent"
    OTHER_AGENT = "another agent"
    OWN_VISITOR = "its visitor"
    OTHER_VISITOR = "another conversation's visitor"
    FORMER_AGENT = "the agent who handed it back to its agent"
    SUPERVISOR = "a supervisor of its group"
    OTHER_SUPERVISOR = "a supervisor of another group"
    EXPIRED_VISITOR = "a visitor whose rating window has ended"
    DISABLED_AGENT = "a disabled agent"
    UNSIGNED = "a visitor token without its signature"
    UNKNOWN_KEY = "a visitor token signed with a key the API does not hold"
    NOT_ASCII = "a token with bytes outside ASCII"
    LONG_TOKEN = "a token of 4 KiB"


# Whoever sends these is nobody the API knows (401), whatever the route.
UNAUTHENTICATED = frozenset(
    {
        Caller.NOBODY,
        Caller.BAD_TOKEN,
        Caller.EXPIRED_VISITOR,
        Caller.DISABLED_AGENT,
        Caller.UNSIGNED,
        Caller.UNKNOWN_KEY,
        Caller.NOT_ASCII,
        Caller.LONG_TOKEN,
    }
)


class World:
    """Alice (online, in `general` and `callback`), Bob and Frank (online, in `after_sales`),
    Sue (supervisor of Alice's groups) and Oscar (of `after_sales`), and the conversations and
    left messages the tests act on, all made through `api`. With `handed_over`, each
    conversation Alice holds was handed to Frank and back first."""

    def __init__(self, api: ApiClient, *, handed_over: bool = False) -> None:
        self.api = api
        self.handed_over = handed_over
        self.tokens: dict[str, str] = {}

    async def populate(self) -> World:
        agents = (
            (OWNER, ["general", "callback"]),
            (OTHER_AGENT, ["after_sales"]),
            (FORMER_AGENT, ["after_sales"]),
        )
        for agent_id, groups in agents:
            agent = await self.api.create_agent(agent_id, skill_groups=groups, max_concurrent=50)
            self.tokens[agent_id] = agent.token
        supervisors = ((SUPERVISOR, ["general", "callback"]), (OTHER_SUPERVISOR, ["after_sales"]))
        for supervisor_id, groups in supervisors:
            supervisor = await self.api.create_agent(
                supervisor_id, skill_groups=groups, role="supervisor", online=False
            )
            self.tokens[supervisor_id] = supervisor.token
        return self

    async def idle_agent(self) -> str:
        """A new agent of `general`, offline (nothing is assigned to them); their token is
        kept in `tokens`."""
        agent = await self.api.create_agent(online=False)
        self.tokens[agent.id] = agent.token
        return agent.id

    def path(self, template: str, ids: dict[str, str]) -> str:
        """A route's path about a subject's `ids` (its {agent_id}: Alice, unless they name
        another agent)."""
        return template.format(**{"agent_id": OWNER, **ids})

    def its_agent_token(self, ids: dict[str, str]) -> str:
        """The token of the subject's agent: the agent the ids name, or Alice."""
        return self.tokens[ids.get("agent_id", OWNER)]

    async def set_status(self, agent_id: str, status: str) -> None:
        await self.api.set_status(agent_id, None, status)

    async def start(self, **attributes: str) -> Visit:
        return await self.api.start_conversation(**attributes)

    async def view(self, conversation: Visit) -> dict[str, Any]:
        return await self.api.conversation(conversation.conversation_id)

    async def active(self) -> Visit:
        """A conversation Alice holds (the only online agent of `general`)."""
        conversation = await self.start()
        await self.api.wait_for(
            conversation.conversation_id, timeout=30, state="active", agent_id=OWNER
        )
        if self.handed_over:
            for holder, to in ((OWNER, FORMER_AGENT), (FORMER_AGENT, OWNER)):
                handed = await self.api.transfer(
                    conversation.conversation_id, self.tokens[holder], to_agent_id=to
                )
                assert handed.status_code == 200, handed.text
        return conversation

    async def rating_pending(self) -> Visit:
        """A conversation Alice closed: its visitor is invited to rate it."""
        conversation = await self.active()
        closed = await self.api.close(conversation.conversation_id, self.tokens[OWNER])
        assert closed.status_code == 200, closed.text

        async def invited() -> bool:
            return (await self.view(conversation))["rating"]["status"] == "pending"

        await eventually(invited, timeout=30, what=f"{conversation}: rating invited")
        return conversation

    async def overflowed(self) -> Visit:
        """A conversation closed with `overflow`: its visitor may leave a message."""
        conversation = await self.start(entry="callback")
        await self.api.wait_for(conversation.conversation_id, timeout=30, close_reason="overflow")
        return conversation

    async def left_message(self) -> int:
        """An open left message, in the `callback` group (Alice's, not Bob's)."""
        conversation = await self.overflowed()
        left = await self.api.leave_message(*conversation, "Please call me back")
        assert left.status_code == 201, left.text
        return left.json()["id"]

    async def close(self, conversation: Visit) -> None:
        """Closed by an admin (frees Alice's capacity); already closed is fine."""
        response = await self.api.close(conversation.conversation_id)
        assert response.status_code in (200, 409), response.text


def forged_visitor_token(conversation: Visit) -> str:
    """The shape of the conversation's visitor token, with a signature the API never made."""
    signature = conversation.token.rsplit(".", 1)[1]
    return conversation.token.removesuffix(signature) + "0" * len(signature)
