"""Activities of the conversation workflow. Each is idempotent: it may run twice.

Database work runs in a thread so the worker's event loop stays free; events are written with a
dedupe key so a retried activity writes its event once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sqlmodel import Session, select
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.dispatching import assign_and_notify
from domain.policy import PolicySource
from domain.types import (
    CloseInput,
    ConversationState,
    EventType,
    IdleWarningInput,
    QueuePlacement,
    RatingInvite,
    RatingRecord,
    RatingStatus,
    Role,
    Timeouts,
)
from store.assignment import agent_skill_groups, join_queue, release_agent
from store.db import Database
from store.events import append_event
from store.models import Agent, Conversation, QueueEntry, utcnow

T = TypeVar("T")


def _conversation(session: Session, conversation_id: str) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise ApplicationError(
            f"conversation {conversation_id} is not in the database", non_retryable=True
        )
    return conversation


class ConversationActivities:
    def __init__(self, *, db: Database, policy: PolicySource, client: Client) -> None:
        self.db = db
        self.policy = policy
        self.client = client

    async def _in_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.to_thread(work)

    @activity.defn(name="current_timeouts")
    async def current_timeouts(self) -> Timeouts:
        timeouts = self.policy.current().timeouts
        return Timeouts(
            idle_warning_after_s=timeouts.idle_warning_after.total_seconds(),
            idle_close_after_s=timeouts.idle_close_after.total_seconds(),
            rating_window_s=timeouts.rating_window.total_seconds(),
        )

    @activity.defn(name="enter_queue")
    async def enter_queue(self, conversation_id: str) -> QueuePlacement:
        policy = self.policy.current()

        def work() -> QueuePlacement:
            with self.db.write() as session:
                conversation = _conversation(session, conversation_id)
                if conversation.agent_id is None and conversation.state == ConversationState.QUEUED:
                    join_queue(
                        session,
                        conversation,
                        skill_group=conversation.skill_group or policy.default_skill_group,
                        priority=conversation.priority,
                    )
                append_event(
                    session,
                    conversation_id=conversation_id,
                    type=EventType.STATE_CHANGED,
                    data={
                        "state": ConversationState.QUEUED,
                        "skill_group": conversation.skill_group,
                    },
                    dedupe_key="state:queued",
                )
                assert conversation.skill_group is not None
                assert conversation.queued_at is not None
                return QueuePlacement(
                    skill_group=conversation.skill_group,
                    priority=conversation.priority,
                    queued_at=conversation.queued_at,
                )

        placement = await self._in_thread(work)
        await assign_and_notify(
            db=self.db, client=self.client, skill_groups=[placement.skill_group]
        )
        return placement

    @activity.defn(name="record_assignment")
    async def record_assignment(self, conversation_id: str) -> None:
        def work() -> None:
            with self.db.write() as session:
                conversation = _conversation(session, conversation_id)
                agent = session.get(Agent, conversation.agent_id) if conversation.agent_id else None
                if agent is None:
                    raise ApplicationError(
                        f"conversation {conversation_id} has no agent", non_retryable=True
                    )
                if conversation.state == ConversationState.QUEUED:
                    conversation.state = ConversationState.ACTIVE
                    session.add(conversation)
                append_event(
                    session,
                    conversation_id=conversation_id,
                    type=EventType.ASSIGNED,
                    data={"agent_id": agent.id, "agent_name": agent.name},
                    dedupe_key=f"assigned:{agent.id}",
                )
                append_event(
                    session,
                    conversation_id=conversation_id,
                    type=EventType.STATE_CHANGED,
                    data={"state": ConversationState.ACTIVE, "agent_id": agent.id},
                    dedupe_key="state:active",
                )

        await self._in_thread(work)

    @activity.defn(name="send_idle_warning")
    async def send_idle_warning(self, warning: IdleWarningInput) -> None:
        policy = self.policy.current()
        text = policy.idle_warning_text(timedelta(seconds=warning.idle_close_after_s))

        def work() -> None:
            with self.db.write() as session:
                append_event(
                    session,
                    conversation_id=warning.conversation_id,
                    type=EventType.IDLE_WARNING,
                    data={
                        "sender_role": Role.SYSTEM,
                        "text": text,
                        "close_at": warning.close_at.isoformat(),
                        "after_agent_message_seq": warning.agent_message_seq,
                    },
                    dedupe_key=f"idle_warning:{warning.agent_message_seq}",
                )

        await self._in_thread(work)

    @activity.defn(name="close_conversation")
    async def close_conversation(self, close: CloseInput) -> None:
        text = self.policy.current().closing_text(close.reason)

        def work() -> list[str]:
            now = utcnow()
            with self.db.write() as session:
                # Lock order shared with assignment: queue entry, then agent, then conversation.
                entry = session.exec(
                    select(QueueEntry)
                    .where(QueueEntry.conversation_id == close.conversation_id)
                    .with_for_update()
                ).first()
                if entry is not None:
                    session.delete(entry)
                    session.flush()
                release_agent(session, close.conversation_id, now)
                conversation = _conversation(session, close.conversation_id)
                if conversation.state != ConversationState.CLOSED:
                    conversation.state = ConversationState.CLOSED
                    conversation.close_reason = close.reason
                    conversation.closed_by = close.closed_by
                    conversation.closed_at = now
                    conversation.open_customer_key = None
                    session.add(conversation)
                append_event(
                    session,
                    conversation_id=close.conversation_id,
                    type=EventType.STATE_CHANGED,
                    data={"state": ConversationState.CLOSED, "close_reason": close.reason},
                    dedupe_key="state:closed",
                )
                append_event(
                    session,
                    conversation_id=close.conversation_id,
                    type=EventType.CLOSED,
                    data={"close_reason": close.reason, "sender_role": Role.SYSTEM, "text": text},
                    dedupe_key="closed",
                )
                if conversation.agent_id is None:
                    return []
                return agent_skill_groups(session, conversation.agent_id)

        freed_groups = await self._in_thread(work)
        # The agent's load dropped: the next waiting conversation gets them at once.
        await assign_and_notify(db=self.db, client=self.client, skill_groups=freed_groups)

    @activity.defn(name="invite_rating")
    async def invite_rating(self, invite: RatingInvite) -> None:
        text = self.policy.current().texts.rating_invite

        def work() -> None:
            with self.db.write() as session:
                conversation = _conversation(session, invite.conversation_id)
                if conversation.rating_status == RatingStatus.NONE:
                    conversation.rating_status = RatingStatus.PENDING
                    conversation.rating_expires_at = invite.expires_at
                    session.add(conversation)
                append_event(
                    session,
                    conversation_id=invite.conversation_id,
                    type=EventType.RATING_INVITED,
                    data={"text": text, "expires_at": invite.expires_at.isoformat()},
                    dedupe_key="rating:invited",
                )

        await self._in_thread(work)

    @activity.defn(name="record_rating")
    async def record_rating(self, record: RatingRecord) -> None:
        def work() -> None:
            with self.db.write() as session:
                conversation = _conversation(session, record.conversation_id)
                conversation.rating_status = RatingStatus.RATED
                conversation.rating_score = record.rating.score
                conversation.rating_resolved = record.rating.resolved
                conversation.rating_comment = record.rating.comment
                session.add(conversation)
                append_event(
                    session,
                    conversation_id=record.conversation_id,
                    type=EventType.RATING_SUBMITTED,
                    data={"score": record.rating.score, "resolved": record.rating.resolved},
                    dedupe_key="rating:submitted",
                )

        await self._in_thread(work)

    @activity.defn(name="expire_rating")
    async def expire_rating(self, conversation_id: str) -> None:
        def work() -> None:
            with self.db.write() as session:
                conversation = _conversation(session, conversation_id)
                if conversation.rating_status == RatingStatus.PENDING:
                    conversation.rating_status = RatingStatus.EXPIRED
                    session.add(conversation)
                append_event(
                    session,
                    conversation_id=conversation_id,
                    type=EventType.RATING_EXPIRED,
                    data={},
                    dedupe_key="rating:expired",
                )

        await self._in_thread(work)

    def all(self) -> list[Callable[..., object]]:
        return [
            self.current_timeouts,
            self.enter_queue,
            self.record_assignment,
            self.send_idle_warning,
            self.close_conversation,
            self.invite_rating,
            self.record_rating,
            self.expire_rating,
        ]
