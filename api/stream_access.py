"""An open stream keeps its caller's rights only as long as they last (invariant 11): what it
checks, and the reasons its last event gives when they are gone."""

from __future__ import annotations

from enum import StrEnum

from api.credentials import visitor_access_ended
from api.deps import Principal, Services, may_access
from api.streams import AccessCheck
from domain.types import Role
from store.agents import find_agent
from store.conversations import find_conversation


class StreamEnd(StrEnum):
    """Why a stream ended (its last event, `stream.ended`, says it in `reason`)."""

    ACCESS_LOST = "access_lost"  # the conversation is no longer the caller's: transferred away
    TOKEN_EXPIRED = "token_expired"  # the visitor's token ended with the rating window
    AGENT_DISABLED = "agent_disabled"
    TOKEN_REPLACED = "token_replaced"  # the agent's token was rotated: reconnect with the new one


def stream_access(
    services: Services, principal: Principal, *, conversation_id: str | None = None
) -> AccessCheck | None:
    """What a stream of `principal` checks before it shows more: of the conversation, or (no
    `conversation_id`) the agent's own feed. None for an admin: nothing ends theirs."""
    if principal.role == Role.ADMIN:
        return None
    db, policy = services.db, services.policy

    def check() -> StreamEnd | None:
        if principal.role in (Role.AGENT, Role.SUPERVISOR):
            agent = find_agent(db, agent_id=principal.id)
            if agent is None or agent.disabled:
                return StreamEnd.AGENT_DISABLED
            if agent.token_hash != principal.token_hash:
                return StreamEnd.TOKEN_REPLACED
        if conversation_id is None:
            return None
        conversation = find_conversation(db, conversation_id=conversation_id)
        if conversation is None or not may_access(principal, conversation):
            return StreamEnd.ACCESS_LOST
        window = policy.current().timeouts.rating_window
        if principal.role == Role.VISITOR and visitor_access_ended(
            conversation, rating_window=window
        ):
            return StreamEnd.TOKEN_EXPIRED
        return None

    return check
