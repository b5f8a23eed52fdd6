"""Left messages: what a visitor leaves when a conversation closed out of hours or on overflow,
and their resolution by the team that calls back."""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from sqlmodel import col, select

from domain.types import LEFT_MESSAGE_REASONS, ConversationState, EventType, Role
from store.assignment import agent_skill_groups
from store.db import Database
from store.events import ConversationNotFound, append_event
from store.models import Conversation, LeftMessage, utcnow

LeftMessageStatus = Literal["open", "resolved"]


class LeftMessageNotOffered(Exception):
    """Only a conversation closed out of hours or on overflow takes a left message."""


class LeftMessageExists(Exception):
    """A message was left for this conversation already."""


class LeftMessageNotFound(LookupError):
    pass


class NotYourSkillGroup(Exception):
    """An agent may see and resolve only the left messages of their skill groups."""


class LeftMessageResolved(Exception):
    """Resolved already."""


def store_left_message(
    db: Database, *, conversation_id: str, content: str, contact: str | None = None
) -> LeftMessage:
    """Store the visitor's message and its `left_message.created` event, once per
    conversation. Unknown → ConversationNotFound; not closed out of hours or on overflow, or
    erased (its customer asked to be forgotten) → LeftMessageNotOffered; one left already →
    LeftMessageExists."""
    try:
        with db.write() as session:
            # Locked: an erase of the conversation (store/erasure.py) commits first, or after.
            conversation = session.get(Conversation, conversation_id, with_for_update=True)
            if conversation is None:
                raise ConversationNotFound(conversation_id)
            if (
                conversation.state != ConversationState.CLOSED
                or conversation.close_reason not in LEFT_MESSAGE_REASONS
                or conversation.erased_at is not None
            ):
                raise LeftMessageNotOffered(conversation_id)
            message = LeftMessage(
                conversation_id=conversation_id,
                customer_id=conversation.customer_id,
                skill_group=conversation.skill_group,
                content=content,
                contact=contact,
            )
            session.add(message)
            session.flush()
            append_event(
                session,
                conversation_id=conversation_id,
                type=EventType.LEFT_MESSAGE_CREATED,
                data={"left_message_id": message.id},
            )
            return message
    except sa.exc.IntegrityError:  # the unique conversation_id: a concurrent one won
        raise LeftMessageExists(conversation_id) from None


def left_messages(
    db: Database,
    *,
    status: LeftMessageStatus | None = "open",
    skill_group: str | None = None,
    agent_id: str | None = None,
    limit: int = 100,
) -> list[LeftMessage]:
    """Left messages, oldest first; with `agent_id`, those of the agent's skill groups only."""
    query = select(LeftMessage).order_by(col(LeftMessage.created_at))
    if status is not None:
        query = query.where(LeftMessage.status == status)
    if skill_group is not None:
        query = query.where(LeftMessage.skill_group == skill_group)
    with db.read() as session:
        if agent_id is not None:
            groups = agent_skill_groups(session, agent_id)
            query = query.where(col(LeftMessage.skill_group).in_(groups))
        return list(session.exec(query.limit(limit)))


def record_resolution(
    db: Database, *, left_message_id: int, by_role: Role, by_id: str, note: str | None = None
) -> LeftMessage:
    """Mark it handled, with its `left_message.resolved` event. Unknown → LeftMessageNotFound;
    an agent not in its skill group → NotYourSkillGroup; resolved before →
    LeftMessageResolved."""
    with db.write() as session:
        message = session.get(LeftMessage, left_message_id)
        if message is None:
            raise LeftMessageNotFound(left_message_id)
        if by_role != Role.ADMIN and message.skill_group not in agent_skill_groups(session, by_id):
            raise NotYourSkillGroup(left_message_id)
        if message.status == "resolved":
            raise LeftMessageResolved(left_message_id)
        message.status = "resolved"
        message.resolved_at = utcnow()
        message.resolved_by = by_id
        message.resolution_note = note
        session.add(message)
        append_event(
            session,
            conversation_id=message.conversation_id,
            type=EventType.LEFT_MESSAGE_RESOLVED,
            data={"left_message_id": message.id},
            staff_data={"resolved_by": by_id},
        )
        return message
