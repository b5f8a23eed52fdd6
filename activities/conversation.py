"""Activities of the conversation workflow. Each is idempotent: it may run twice.

Database work runs in a thread so the worker's event loop stays free; events are written with a
dedupe key so a retried activity writes its event once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.dispatching import assign_and_notify
from domain.policy import Policy, PolicySource, SkillGroup
from domain.types import (
    LEFT_MESSAGE_REASONS,
    NEWER_MESSAGE,
    AssignmentRecord,
    CloseInput,
    ConversationState,
    EventType,
    IdleWarningInput,
    QueuePlacement,
    QueueRequest,
    RatingInvite,
    RatingRecord,
    RatingStatus,
    RequeueInput,
    Role,
    RouteRequest,
    RouteResult,
    Timeouts,
    TransferInput,
    TransferResult,
)
from store.assignment import (
    agent_skill_groups,
    announce,
    join_queue,
    lock_queue,
    release_agent,
    take_capacity,
)
from store.db import Database
from store.events import append_event
from store.models import (
    Agent,
    Assignment,
    Conversation,
    Event,
    Message,
    QueueEntry,
    QueueSkip,
    utcnow,
)

T = TypeVar("T")


def _group(policy: Policy, name: str | None) -> SkillGroup:
    """The policy's group; one removed from the policy since falls back to the default."""
    if name in policy.skill_group_names:
        return policy.group(name)
    return policy.group(policy.default_skill_group)


def _placed(group: SkillGroup, entry: QueueEntry) -> QueuePlacement:
    wait = group.max_queue_wait
    first_reply = group.agent_first_reply_timeout
    return QueuePlacement(
        skill_group=group.name,
        accepted=True,
        queued_at=entry.enqueued_at,
        overflow_to=group.overflow_to,
        max_queue_wait_s=wait.total_seconds() if wait else None,
        first_reply_timeout_s=first_reply.total_seconds() if first_reply else None,
    )


def _transfer_result(
    session: Session, conversation: Conversation, policy: Policy, key: str
) -> TransferResult:
    """What a transfer that already happened did, read back for a retried activity."""
    if conversation.state == ConversationState.QUEUED:
        entry = session.exec(
            select(QueueEntry).where(QueueEntry.conversation_id == conversation.id)
        ).first()
        if entry is not None:
            return TransferResult(
                ok=True, placement=_placed(_group(policy, entry.skill_group), entry)
            )
    assigned = session.exec(
        select(Event.seq).where(
            Event.conversation_id == conversation.id, Event.dedupe_key == f"{key}:assigned"
        )
    ).first()
    return TransferResult(ok=True, agent_id=conversation.agent_id, handover_seq=assigned or 0)


def _refuse_if_written_since(session: Session, conversation_id: str, seq: int) -> None:
    """Invariant 8 for a close because nobody wrote after `seq`: with the conversation's row
    locked (a message being stored commits first, or waits and then finds it closed), refuse
    it if a newer message is stored; the workflow takes that message in and carries on."""
    state = session.execute(
        sa.select(col(Conversation.state))
        .where(col(Conversation.id) == conversation_id)
        .with_for_update()
    ).scalar_one_or_none()
    if state in (None, ConversationState.CLOSED):
        return  # a retry after it committed, or no such conversation: the close reports it
    newer = session.exec(
        select(Message)
        .where(Message.conversation_id == conversation_id, col(Message.seq) > seq)
        .order_by(col(Message.seq).desc())
        .limit(1)
    ).first()
    if newer is not None:
        raise ApplicationError(
            f"message {newer.seq} came after {seq}: not idle",
            newer.id,
            newer.seq,
            newer.sender_role,
            type=NEWER_MESSAGE,
            non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,  # a decision, not a fault: no traceback
        )


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

    @activity.defn(name="route_conversation")
    async def route_conversation(self, request: RouteRequest) -> RouteResult:
        policy = self.policy.current()

        def work() -> RouteResult:
            with self.db.write() as session:
                conversation = _conversation(session, request.conversation_id)
                if conversation.skill_group is None:  # a retry keeps the first decision
                    route = policy.route(conversation.visitor_context())
                    conversation.skill_group = route.skill_group
                    conversation.priority = route.priority
                    conversation.routing_rule = route.rule
                conversation.policy_version = policy.version
                session.add(conversation)
                group = _group(policy, conversation.skill_group)
                hours = group.hours
                is_open = hours is None or hours.is_open(request.at)
                next_opening = None if is_open or hours is None else hours.next_opening(request.at)
                append_event(
                    session,
                    conversation_id=conversation.id,
                    type=EventType.ROUTED,
                    data={
                        "skill_group": group.name,
                        "priority": conversation.priority,
                        "routing_rule": conversation.routing_rule,
                        "open": is_open,
                        "next_opening": next_opening.isoformat() if next_opening else None,
                    },
                    dedupe_key="routed",
                )
                return RouteResult(
                    skill_group=group.name,
                    priority=conversation.priority,
                    rule=conversation.routing_rule,
                    is_open=is_open,
                    next_opening=next_opening,
                    policy_version=policy.version,
                )

        return await self._in_thread(work)

    @activity.defn(name="enter_queue")
    async def enter_queue(self, request: QueueRequest) -> QueuePlacement:
        """Join the group's queue, or move there from another group's (overflow), keeping the
        original enqueue time; refuse when the group is closed or its queue is full."""
        policy = self.policy.current()
        group = _group(policy, request.skill_group)

        def refused(because: str) -> QueuePlacement:
            return QueuePlacement(
                skill_group=group.name,
                accepted=False,
                refused_because=because,
                overflow_to=group.overflow_to,
            )

        changed_queues: list[str] = []

        def work() -> QueuePlacement:
            with self.db.write() as session:
                # Lock our current entry first: an assignment that holds it finishes before us.
                current = session.exec(
                    select(QueueEntry)
                    .where(QueueEntry.conversation_id == request.conversation_id)
                    .with_for_update()
                ).first()
                conversation = _conversation(session, request.conversation_id)
                if conversation.agent_id is not None:
                    return QueuePlacement(
                        skill_group=conversation.skill_group or group.name,
                        accepted=True,
                        agent_id=conversation.agent_id,
                    )
                if current is not None and current.skill_group == group.name:
                    return _placed(group, current)  # a retry after it committed
                if group.hours is not None and not group.hours.is_open(request.at):
                    return refused("closed")
                lock_queue(session, group.name)
                waiting = session.exec(
                    select(sa.func.count())
                    .select_from(QueueEntry)
                    .where(QueueEntry.skill_group == group.name)
                ).one()
                if group.max_queue_length is not None and waiting >= group.max_queue_length:
                    return refused("full")
                origin = current.skill_group if current is not None else request.from_group
                if current is not None:
                    session.delete(current)
                    session.flush()
                    changed_queues.append(current.skill_group)
                changed_queues.append(group.name)
                conversation.policy_version = policy.version
                entry = join_queue(
                    session, conversation, skill_group=group.name, priority=request.priority
                )
                if request.hop == 0:
                    append_event(
                        session,
                        conversation_id=conversation.id,
                        type=EventType.STATE_CHANGED,
                        data={"state": ConversationState.QUEUED, "skill_group": group.name},
                        dedupe_key="state:queued",
                    )
                else:
                    append_event(
                        session,
                        conversation_id=conversation.id,
                        type=EventType.OVERFLOWED,
                        data={"from": origin, "to": group.name, "hop": request.hop},
                        dedupe_key=f"overflow:{request.hop}",
                    )
                return _placed(group, entry)

        placement = await self._in_thread(work)
        await self._in_thread(lambda: announce(self.db, changed_queues))
        if placement.accepted and placement.agent_id is None:
            await assign_and_notify(
                db=self.db, client=self.client, skill_groups=[placement.skill_group]
            )
        return placement

    @activity.defn(name="record_assignment")
    async def record_assignment(self, record: AssignmentRecord) -> None:
        conversation_id = record.conversation_id

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
                    dedupe_key=f"assigned:{record.round}",
                )
                append_event(
                    session,
                    conversation_id=conversation_id,
                    type=EventType.STATE_CHANGED,
                    data={"state": ConversationState.ACTIVE, "agent_id": agent.id},
                    dedupe_key=f"state:active:{record.round}",
                )

        await self._in_thread(work)

    def _back_to_queue(
        self, session: Session, conversation: Conversation, group: SkillGroup, now: datetime
    ) -> QueuePlacement:
        """Release the agent and queue again in `group`, keeping the original enqueue time
        (so it goes ahead of everyone who arrived later)."""
        release_agent(session, conversation.id, now)
        conversation.agent_id = None
        conversation.assigned_at = None
        conversation.state = ConversationState.QUEUED
        session.add(conversation)
        entry = join_queue(
            session, conversation, skill_group=group.name, priority=conversation.priority
        )
        return _placed(group, entry)

    async def _after_requeue(
        self, conversation_id: str, placement: QueuePlacement, freed_agent: str | None
    ) -> None:
        """Tell the queue, serve it, and say in the placement if this one got an agent."""
        await self._in_thread(lambda: announce(self.db, [placement.skill_group]))
        await assign_and_notify(
            db=self.db, client=self.client, skill_groups=[placement.skill_group]
        )
        if freed_agent is not None:
            await self._freed(freed_agent)

        def assigned_agent() -> str | None:
            with self.db.read() as session:
                return _conversation(session, conversation_id).agent_id

        placement.agent_id = await self._in_thread(assigned_agent)

    @activity.defn(name="transfer_conversation")
    async def transfer_conversation(self, transfer: TransferInput) -> TransferResult:
        policy = self.policy.current()
        request = transfer.request
        key = f"transfer:{transfer.round}"

        def work() -> tuple[TransferResult, str | None]:
            now = utcnow()
            with self.db.write() as session:
                conversation = _conversation(session, transfer.conversation_id)
                done = session.exec(
                    select(Event.id).where(
                        Event.conversation_id == conversation.id, Event.dedupe_key == key
                    )
                ).first()
                if done is not None:  # a retry after it committed
                    return _transfer_result(session, conversation, policy, key), None
                from_agent = conversation.agent_id
                if request.to_agent_id is not None:
                    target = session.get(Agent, request.to_agent_id)
                    if target is None:
                        return TransferResult(ok=False, reason="unknown agent"), None
                    if not take_capacity(session, target.id, now):
                        return TransferResult(
                            ok=False, reason=f"agent {target.id} is not online with room"
                        ), None
                    release_agent(session, conversation.id, now)
                    conversation.agent_id = target.id
                    conversation.assigned_at = now
                    conversation.load_released = False
                    session.add(conversation)
                    session.add(
                        Assignment(
                            conversation_id=conversation.id,
                            agent_id=target.id,
                            skill_group=conversation.skill_group or policy.default_skill_group,
                            priority=conversation.priority,
                            enqueued_at=conversation.queued_at or now,
                            assigned_at=now,
                        )
                    )
                    result = TransferResult(ok=True, agent_id=target.id)
                else:
                    assert request.to_skill_group is not None
                    if request.to_skill_group not in policy.skill_group_names:
                        return TransferResult(
                            ok=False, reason=f"unknown skill group {request.to_skill_group!r}"
                        ), None
                    group = policy.group(request.to_skill_group)
                    lock_queue(session, group.name)
                    result = TransferResult(
                        ok=True, placement=self._back_to_queue(session, conversation, group, now)
                    )
                append_event(
                    session,
                    conversation_id=conversation.id,
                    type=EventType.TRANSFERRED,
                    data={
                        "from_agent_id": from_agent,
                        "to_agent_id": request.to_agent_id,
                        "to_skill_group": request.to_skill_group,
                        "by": request.by_id,
                        "note": request.note,
                    },
                    dedupe_key=key,
                    also_to_agents=[from_agent],  # the agent it was transferred out from
                )
                if result.placement is not None:
                    append_event(
                        session,
                        conversation_id=conversation.id,
                        type=EventType.STATE_CHANGED,
                        data={
                            "state": ConversationState.QUEUED,
                            "skill_group": request.to_skill_group,
                        },
                        dedupe_key=f"{key}:queued",
                    )
                else:
                    assigned = append_event(
                        session,
                        conversation_id=conversation.id,
                        type=EventType.ASSIGNED,
                        data={"agent_id": result.agent_id, "transferred": True},
                        dedupe_key=f"{key}:assigned",
                    )
                    result.handover_seq = assigned.seq
                return result, from_agent

        result, freed_agent = await self._in_thread(work)
        if result.ok and result.placement is not None:
            await self._after_requeue(transfer.conversation_id, result.placement, freed_agent)
        elif result.ok and freed_agent is not None:
            await self._freed(freed_agent)
        return result

    async def _freed(self, agent_id: str) -> None:
        """The agent's load dropped: the next waiting conversation gets them at once."""

        def groups() -> list[str]:
            with self.db.read() as session:
                return agent_skill_groups(session, agent_id)

        await assign_and_notify(
            db=self.db, client=self.client, skill_groups=await self._in_thread(groups)
        )

    @activity.defn(name="requeue_unanswered")
    async def requeue_unanswered(self, requeue: RequeueInput) -> QueuePlacement:
        policy = self.policy.current()

        def work() -> QueuePlacement:
            now = utcnow()
            with self.db.write() as session:
                conversation = _conversation(session, requeue.conversation_id)
                group = _group(policy, conversation.skill_group)
                lock_queue(session, group.name)
                existing = session.exec(
                    select(QueueEntry).where(QueueEntry.conversation_id == conversation.id)
                ).first()
                if existing is not None:  # a retry after it committed
                    return _placed(group, existing)
                session.merge(QueueSkip(conversation_id=conversation.id, agent_id=requeue.agent_id))
                placement = self._back_to_queue(session, conversation, group, now)
                append_event(
                    session,
                    conversation_id=conversation.id,
                    type=EventType.REQUEUED,
                    data={"agent_id": requeue.agent_id, "reason": "no_first_reply"},
                    dedupe_key=f"requeued:{requeue.round}",
                    also_to_agents=[requeue.agent_id],  # the agent who lost it
                )
                append_event(
                    session,
                    conversation_id=conversation.id,
                    type=EventType.STATE_CHANGED,
                    data={"state": ConversationState.QUEUED, "skill_group": group.name},
                    dedupe_key=f"requeued:{requeue.round}:queued",
                )
                return placement

        placement = await self._in_thread(work)
        await self._after_requeue(requeue.conversation_id, placement, requeue.agent_id)
        return placement

    @activity.defn(name="send_idle_warning")
    async def send_idle_warning(self, warning: IdleWarningInput) -> str:
        """Tell the visitor; returns when the chat closes (ISO 8601), as the warning said."""
        policy = self.policy.current()
        text = policy.idle_warning_text(timedelta(seconds=warning.idle_close_after_s))

        def work() -> str:
            # A warning held up (the database was down) still gives the visitor the whole time.
            close_at = max(
                warning.close_at, utcnow() + timedelta(seconds=warning.idle_close_after_s)
            )
            with self.db.write() as session:
                event = append_event(
                    session,
                    conversation_id=warning.conversation_id,
                    type=EventType.IDLE_WARNING,
                    data={
                        "sender_role": Role.SYSTEM,
                        "text": text,
                        "close_at": close_at.isoformat(),
                        "after_agent_message_seq": warning.agent_message_seq,
                    },
                    dedupe_key=f"idle_warning:{warning.agent_message_seq}",
                )
                # A retry after it committed answers the time the visitor was told.
                return str(event.data["close_at"])

        return await self._in_thread(work)

    @activity.defn(name="close_conversation")
    async def close_conversation(self, close: CloseInput) -> str | None:
        """Close with the closing message; with `invite_rating`, invite the rating too and
        answer when its window ends (ISO 8601)."""
        policy = self.policy.current()
        rating_expires_at: list[datetime] = []

        left_queue: list[str] = []

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
                    left_queue.append(entry.skill_group)
                if close.silent_after_seq is not None:
                    _refuse_if_written_since(session, close.conversation_id, close.silent_after_seq)
                release_agent(session, close.conversation_id, now)
                conversation = _conversation(session, close.conversation_id)
                text = policy.closing_text(
                    close.reason,
                    skill_group=conversation.skill_group,
                    next_opening=close.next_opening,
                )
                if conversation.state != ConversationState.CLOSED:
                    conversation.policy_version = policy.version
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
                    data={
                        "close_reason": close.reason,
                        "sender_role": Role.SYSTEM,
                        "text": text,
                        "left_message": close.reason in LEFT_MESSAGE_REASONS,
                    },
                    dedupe_key="closed",
                )
                if conversation.agent_id is None:
                    return []
                if close.invite_rating:
                    rating_expires_at.append(
                        self._invite_rating(
                            session, conversation, now + policy.timeouts.rating_window
                        )
                    )
                return agent_skill_groups(session, conversation.agent_id)

        freed_groups = await self._in_thread(work)
        if left_queue:
            await self._in_thread(lambda: announce(self.db, left_queue))
        # The agent's load dropped: the next waiting conversation gets them at once.
        await assign_and_notify(db=self.db, client=self.client, skill_groups=freed_groups)
        return rating_expires_at[0].isoformat() if rating_expires_at else None

    def _invite_rating(
        self, session: Session, conversation: Conversation, expires_at: datetime
    ) -> datetime:
        """Invite the visitor to rate (once); returns when the window ends, as first told."""
        if conversation.rating_status == RatingStatus.NONE:
            conversation.rating_status = RatingStatus.PENDING
            conversation.rating_expires_at = expires_at
            session.add(conversation)
        expires_at = conversation.rating_expires_at or expires_at
        append_event(
            session,
            conversation_id=conversation.id,
            type=EventType.RATING_INVITED,
            data={
                "text": self.policy.current().texts.rating_invite,
                "expires_at": expires_at.isoformat(),
            },
            dedupe_key="rating:invited",
        )
        return expires_at

    @activity.defn(name="invite_rating")
    async def invite_rating(self, invite: RatingInvite) -> None:
        """The invite on its own (conversations from before it came with the close)."""

        def work() -> None:
            with self.db.write() as session:
                conversation = _conversation(session, invite.conversation_id)
                self._invite_rating(session, conversation, invite.expires_at)

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
            self.route_conversation,
            self.transfer_conversation,
            self.requeue_unanswered,
            self.enter_queue,
            self.record_assignment,
            self.send_idle_warning,
            self.close_conversation,
            self.invite_rating,
            self.record_rating,
            self.expire_rating,
        ]
