"""Activities of the conversation workflow: adapters between the workflow and the store.

Each unpacks its input, runs the store's lifecycle write in a thread (so the worker's event
loop stays free), serves the queues a write changed and returns the result. The writes are
idempotent (store/lifecycle.py), so an activity may run twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from dispatcher import assign_and_notify
from domain.errors import ASSIGNED_MEANWHILE, NEWER_MESSAGE
from domain.policy import PolicySource
from domain.types import (
    AssignmentRecord,
    CloseInput,
    IdleWarningInput,
    QueuePlacement,
    QueueRequest,
    RatingInvite,
    RatingRecord,
    RequeueInput,
    RouteRequest,
    RouteResult,
    Timeouts,
    TransferInput,
    TransferResult,
)
from store import lifecycle
from store.db import Database
from store.events import ConversationNotFound
from store.lifecycle import AssignedMeanwhile, ConversationUnassigned, Declined, NewerMessage

T = TypeVar("T")


def _declined(exc: Declined) -> ApplicationError:
    """A decision declined, for the workflow: what was found is in the failure's details."""
    if isinstance(exc, NewerMessage):
        kind, details = NEWER_MESSAGE, [exc.message_id, exc.seq, exc.sender_role]
    else:
        assert isinstance(exc, AssignedMeanwhile)
        kind, details = ASSIGNED_MEANWHILE, [exc.agent_id]
    return ApplicationError(
        str(exc),
        *details,
        type=kind,
        non_retryable=True,
        category=ApplicationErrorCategory.BENIGN,  # a decision, not a fault: no traceback
    )


async def run_store(write: Callable[[], T]) -> T:
    """Run a store write in a thread; a conversation it cannot act on fails for good."""
    try:
        return await asyncio.to_thread(write)
    except ConversationNotFound as exc:
        raise ApplicationError(
            f"conversation {exc} is not in the database", non_retryable=True
        ) from exc
    except ConversationUnassigned as exc:
        raise ApplicationError(f"conversation {exc} has no agent", non_retryable=True) from exc
    except Declined as exc:
        raise _declined(exc) from exc


class ConversationActivities:
    def __init__(self, *, db: Database, policy: PolicySource, client: Client) -> None:
        self.db = db
        self.policy = policy
        self.client = client

    async def _store(self, write: Callable[[], T]) -> T:
        return await run_store(write)

    async def _serve(self, skill_groups: list[str]) -> None:
        """Assign waiting conversations of these groups (a queue grew, or an agent's load
        dropped) and tell their workflows."""
        await assign_and_notify(db=self.db, client=self.client, skill_groups=skill_groups)

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
        return await self._store(
            lambda: lifecycle.route_conversation(
                db=self.db, policy=policy, conversation_id=request.conversation_id, at=request.at
            )
        )

    @activity.defn(name="enter_queue")
    async def enter_queue(self, request: QueueRequest) -> QueuePlacement:
        """Join the group's queue, or move there from another group's (overflow), keeping the
        original enqueue time; refuse when the group is closed or its queue is full."""
        policy = self.policy.current()
        placement = await self._store(
            lambda: lifecycle.enter_queue(
                db=self.db,
                policy=policy,
                conversation_id=request.conversation_id,
                skill_group=request.skill_group,
                priority=request.priority,
                at=request.at,
                hop=request.hop,
                from_group=request.from_group,
            )
        )
        if placement.accepted and placement.agent_id is None:
            await self._serve([placement.skill_group])
        return placement

    @activity.defn(name="record_assignment")
    async def record_assignment(self, record: AssignmentRecord) -> None:
        await self._store(
            lambda: lifecycle.record_assignment(
                db=self.db, conversation_id=record.conversation_id, round=record.round
            )
        )

    async def _after_requeue(
        self, conversation_id: str, placement: QueuePlacement, freed_groups: list[str]
    ) -> None:
        """Serve the queue, then the freed agent's groups, and say in the placement if this one
        got an agent."""
        await self._serve([placement.skill_group])
        await self._serve(freed_groups)
        placement.agent_id = await self._store(
            lambda: lifecycle.conversation_agent(db=self.db, conversation_id=conversation_id)
        )

    @activity.defn(name="transfer_conversation")
    async def transfer_conversation(self, transfer: TransferInput) -> TransferResult:
        policy = self.policy.current()
        request = transfer.request
        outcome = await self._store(
            lambda: lifecycle.transfer(
                db=self.db,
                policy=policy,
                conversation_id=transfer.conversation_id,
                round=transfer.round,
                by_id=request.by_id,
                to_agent_id=request.to_agent_id,
                to_skill_group=request.to_skill_group,
                note=request.note,
            )
        )
        result = outcome.result
        if result.placement is not None:
            await self._after_requeue(
                transfer.conversation_id, result.placement, outcome.freed_groups
            )
        else:
            await self._serve(outcome.freed_groups)
        return result

    @activity.defn(name="requeue_unanswered")
    async def requeue_unanswered(self, requeue: RequeueInput) -> QueuePlacement:
        policy = self.policy.current()
        outcome = await self._store(
            lambda: lifecycle.requeue_unanswered(
                db=self.db,
                policy=policy,
                conversation_id=requeue.conversation_id,
                agent_id=requeue.agent_id,
                round=requeue.round,
            )
        )
        await self._after_requeue(requeue.conversation_id, outcome.result, outcome.freed_groups)
        return outcome.result

    @activity.defn(name="send_idle_warning")
    async def send_idle_warning(self, warning: IdleWarningInput) -> str:
        """Tell the visitor; returns when the chat closes (ISO 8601), as the warning said."""
        policy = self.policy.current()
        close_at = await self._store(
            lambda: lifecycle.record_idle_warning(
                db=self.db,
                policy=policy,
                conversation_id=warning.conversation_id,
                agent_message_seq=warning.agent_message_seq,
                close_at=warning.close_at,
                idle_close_after=timedelta(seconds=warning.idle_close_after_s),
            )
        )
        return close_at.isoformat()

    @activity.defn(name="close_conversation")
    async def close_conversation(self, close: CloseInput) -> str | None:
        """Close with the closing message; with `invite_rating`, invite the rating too and
        answer when its window ends (ISO 8601)."""
        policy = self.policy.current()
        outcome = await self._store(
            lambda: lifecycle.close_conversation(
                db=self.db,
                policy=policy,
                conversation_id=close.conversation_id,
                reason=close.reason,
                closed_by=close.closed_by,
                next_opening=close.next_opening,
                invite_rating=close.invite_rating,
                silent_after_seq=close.silent_after_seq,
                overflowed_from=close.overflowed_from,
                overflow_hop=close.overflow_hop,
                unless_assigned=close.unless_assigned,
            )
        )
        await self._serve(outcome.freed_groups)
        return outcome.result.isoformat() if outcome.result else None

    @activity.defn(name="invite_rating")
    async def invite_rating(self, invite: RatingInvite) -> None:
        """The invite on its own (conversations from before it came with the close)."""
        policy = self.policy.current()
        await self._store(
            lambda: lifecycle.invite_rating(
                db=self.db,
                policy=policy,
                conversation_id=invite.conversation_id,
                expires_at=invite.expires_at,
            )
        )

    @activity.defn(name="record_rating")
    async def record_rating(self, record: RatingRecord) -> None:
        rating = record.rating
        await self._store(
            lambda: lifecycle.record_rating(
                db=self.db,
                conversation_id=record.conversation_id,
                score=rating.score,
                resolved=rating.resolved,
                comment=rating.comment,
            )
        )

    @activity.defn(name="expire_rating")
    async def expire_rating(self, conversation_id: str) -> None:
        await self._store(
            lambda: lifecycle.expire_rating(db=self.db, conversation_id=conversation_id)
        )

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
