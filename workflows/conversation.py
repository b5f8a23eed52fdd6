"""One workflow per conversation: queue → agent → idle countdown → close → rating.

The workflow is the single authority on state transitions. It learns of messages and of its
agent by signal, takes close and rating requests as validated updates, and does all I/O through
activities (called by name, so this module never imports the database layer).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.types import (
        LEFT_MESSAGE,
        MAX_OVERFLOW_HOPS,
        NEWER_MESSAGE,
        SA_AGENT,
        SA_CHANNEL,
        SA_CLOSE_REASON,
        SA_CLOSED_AT,
        SA_OVERFLOW_HOPS,
        SA_PRIORITY,
        SA_QUEUED_AT,
        SA_SKILL_GROUP,
        SA_STATE,
        AgentAssigned,
        AssignmentRecord,
        CloseInput,
        CloseReason,
        CloseRequest,
        ConversationFlow,
        ConversationSnapshot,
        ConversationState,
        IdleCountdown,
        IdleWarningInput,
        MessagePosted,
        QueuePlacement,
        QueueRequest,
        RatingInvite,
        RatingRecord,
        RatingStatus,
        RatingSubmission,
        RequeueInput,
        Role,
        RouteRequest,
        RouteResult,
        Timeouts,
        TransferInput,
        TransferRequest,
        TransferResult,
    )

# Database outages must delay decisions, never drop them: retry without a limit.
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
_ACTIVITY_TIMEOUT = timedelta(seconds=30)
# Every activity is a short database write (and perhaps a signal to another conversation). Those
# that follow from what history already holds (the start, a signal, a timer that fired) run as
# local activities, inside the workflow task that needs them, not as tasks of their own that go
# round the server: an idle auto-close with its rating invite is one workflow task, not three
# (bench/ B3). If that task is lost (a worker or the server dies), its retry runs them again,
# and they are idempotent. What follows from an update (a close or transfer someone asked for)
# stays a regular activity: the update is in history only once its workflow task completes, and
# a local activity would write its effects before that; a lost task would leave the database
# ahead of the workflow. Conversations started before this ran every one as an activity.
LOCAL_ACTIVITIES = "local-activities"
AGENT_WROTE_BEFORE_ACTIVE = "agent-wrote-before-active"

INVALID_STATE = "InvalidState"
FORBIDDEN = "Forbidden"


@workflow.defn(name="Conversation")
class ConversationWorkflow:
    @workflow.init
    def __init__(self, flow: ConversationFlow) -> None:
        self.flow = flow
        self._transfer_result: TransferResult | None = None

    @workflow.run
    async def run(self, flow: ConversationFlow) -> str:
        # A transfer to a group or a missed first reply takes an active conversation back to
        # the queue; everything else moves forward.
        while self.flow.state != ConversationState.CLOSED:
            if self.flow.state == ConversationState.QUEUED:
                await self._wait_in_queue()
            else:
                await self._converse()
        await self._rating_phase()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.flow.close_reason or ""

    # --- phases --------------------------------------------------------------------------

    async def _wait_in_queue(self) -> None:
        flow = self.flow
        if not flow.routed:
            route: RouteResult = await self._activity(
                "route_conversation",
                RouteRequest(flow.conversation_id, workflow.now()),
                RouteResult,
            )
            flow.routed = True
            flow.skill_group = route.skill_group
            flow.priority = route.priority
            flow.routing_rule = route.rule
            flow.policy_version = route.policy_version
            if not route.is_open:
                await self._close(CloseReason.OUT_OF_HOURS, next_opening=route.next_opening)
                return
            await self._join(route.skill_group)
        while flow.state == ConversationState.QUEUED:

            def woken() -> bool:
                return (
                    flow.agent_id is not None
                    or flow.close_request is not None
                    or self._continue_as_new_due()
                )

            timed_out = False
            if flow.max_queue_wait_s is not None and flow.in_group_since is not None:
                deadline = flow.in_group_since + timedelta(seconds=flow.max_queue_wait_s)
                timed_out = not await self._sleep_until(deadline, woken)
            else:
                await workflow.wait_condition(woken)
            if flow.close_request is not None and flow.agent_id is not None:
                # Its agent came in the same breath (the visitor may have seen them already):
                # a close by whoever asked, not an abandoned wait.
                await self._close(_reason_for(flow.close_request))
            elif flow.close_request is not None:
                by_admin = flow.close_request.by_role == Role.ADMIN
                await self._close(CloseReason.ADMIN_CLOSED if by_admin else CloseReason.ABANDONED)
            elif flow.agent_id is not None:
                flow.state = ConversationState.ACTIVE
            elif timed_out:
                await self._overflow(flow.overflow_to)
            else:
                await self._continue_as_new()

    async def _join(self, skill_group: str) -> None:
        """Queue in this group, or overflow on along the policy's chain to a left message."""
        flow = self.flow
        from_group = flow.skill_group if flow.overflow_hops else None
        while True:
            placement: QueuePlacement = await self._activity(
                "enter_queue",
                QueueRequest(
                    conversation_id=flow.conversation_id,
                    skill_group=skill_group,
                    priority=flow.priority,
                    at=workflow.now(),
                    hop=flow.overflow_hops,
                    from_group=from_group,
                ),
                QueuePlacement,
            )
            if placement.agent_id is not None:
                flow.agent_id = placement.agent_id  # served while it was being moved
                return
            if placement.accepted:
                self._placed(placement)
                return
            if not self._may_overflow_to(placement.overflow_to):
                await self._close(CloseReason.OVERFLOW)
                return
            flow.overflow_hops += 1
            assert placement.overflow_to is not None
            from_group, skill_group = skill_group, placement.overflow_to

    def _placed(self, placement: QueuePlacement) -> None:
        flow = self.flow
        flow.state = ConversationState.QUEUED
        flow.skill_group = placement.skill_group
        flow.queued_at = placement.queued_at
        flow.in_group_since = workflow.now()
        flow.max_queue_wait_s = placement.max_queue_wait_s
        flow.overflow_to = placement.overflow_to
        flow.first_reply_timeout_s = placement.first_reply_timeout_s
        self._publish()

    async def _overflow(self, target: str | None) -> None:
        if not self._may_overflow_to(target):
            await self._close(CloseReason.OVERFLOW)
            return
        assert target is not None
        self.flow.overflow_hops += 1
        await self._join(target)

    def _may_overflow_to(self, target: str | None) -> bool:
        return (
            target is not None
            and target != LEFT_MESSAGE
            and self.flow.overflow_hops < MAX_OVERFLOW_HOPS
        )

    async def _converse(self) -> None:
        flow = self.flow
        if not flow.assignment_recorded:
            flow.assignment_round += 1
            # No fresh start here: the way back to the queue made it (`_back_in_queue`), and
            # the agent may have written already (the database says active once the assignment
            # commits): their message keeps the countdown it started.
            await self._activity(
                "record_assignment",
                AssignmentRecord(flow.conversation_id, flow.assignment_round),
                None,
            )
            flow.assignment_recorded = True
            if flow.first_reply_timeout_s:
                flow.first_reply_due_at = workflow.now() + timedelta(
                    seconds=flow.first_reply_timeout_s
                )
            self._publish()
        while flow.close_request is None:
            if self._continue_as_new_due():
                await self._continue_as_new()
            if flow.transfer_request is not None:
                await self._transfer(flow.transfer_request)
                if flow.state != ConversationState.ACTIVE:
                    return
                continue
            countdown = flow.countdown

            def moved(countdown: IdleCountdown = countdown) -> bool:
                # A newer message replaces the countdown object; a close request ends it.
                return (
                    flow.countdown is not countdown
                    or flow.close_request is not None
                    or flow.transfer_request is not None
                    or self._continue_as_new_due()
                )

            if countdown.agent_message_seq == 0:
                due = flow.first_reply_due_at
                if due is None or flow.agent_replied:
                    await workflow.wait_condition(moved)
                elif not await self._sleep_until(due, moved) and not flow.agent_replied:
                    await self._requeue_unanswered()
                    return
            elif not countdown.warned:
                timeouts = await self._timeouts()
                assert countdown.armed_at is not None
                countdown.warning_at = countdown.armed_at + timedelta(
                    seconds=timeouts.idle_warning_after_s
                )
                countdown.close_after_s = timeouts.idle_close_after_s
                if await self._sleep_until(countdown.warning_at, moved):
                    continue
                await self._send_idle_warning(countdown)
            else:
                assert countdown.close_at is not None
                if await self._sleep_until(countdown.close_at, moved):
                    continue
                flow.close_request = CloseRequest(by_role=Role.SYSTEM, by_id="idle_countdown")
                if await self._close_idle(countdown):
                    return
                flow.close_request = None
        await self._close(_reason_for(flow.close_request))

    async def _close_idle(self, countdown: IdleCountdown) -> bool:
        """Close for inactivity, unless a message newer than the countdown's was stored by the
        time the close is written (held up by an outage, say): then take that message in as
        its signal would and carry on (invariant 8). True if closed."""
        try:
            quiet_since = countdown.agent_message_seq
            await self._close(CloseReason.IDLE_TIMEOUT, silent_after_seq=quiet_since)
        except (ActivityError, ApplicationError) as exc:
            # A local activity's failure comes as it was raised, a regular one's as its cause.
            failure = exc.cause if isinstance(exc, ActivityError) else exc
            if not (isinstance(failure, ApplicationError) and failure.type == NEWER_MESSAGE):
                raise
            message_id, seq, sender_role = failure.details
            self.message_posted(MessagePosted(message_id, seq, sender_role))
            return False
        return True

    async def _requeue_unanswered(self) -> None:
        """The agent never answered: back to the queue near its head, and not to them again."""
        flow = self.flow
        assert flow.agent_id is not None
        placement: QueuePlacement = await self._activity(
            "requeue_unanswered",
            RequeueInput(flow.conversation_id, flow.agent_id, flow.assignment_round),
            QueuePlacement,
        )
        self._back_in_queue(placement)

    async def _transfer(self, request: TransferRequest) -> None:
        flow = self.flow
        result: TransferResult = await self._activity(
            "transfer_conversation",
            TransferInput(flow.conversation_id, request, flow.assignment_round),
            TransferResult,
            requested=True,
        )
        self._transfer_result = result
        flow.transfer_request = None
        if not result.ok:
            return
        if result.agent_id is not None:
            flow.agent_id = result.agent_id
            flow.assignment_round += 1
            # A message newer than the handover (a greater seq) is the new agent's or the
            # visitor's: one the new agent wrote while the handover was being recorded keeps
            # the countdown it started. Anything older is the past: a fresh start.
            if not (result.handover_seq and flow.countdown.agent_message_seq > result.handover_seq):
                flow.agent_replied = False
                flow.countdown = IdleCountdown()
            flow.first_reply_due_at = None
            # The new agent must answer in time too (histories from before this rule replay
            # without it).
            if (
                flow.first_reply_timeout_s
                and not flow.agent_replied
                and workflow.patched("first-reply-after-transfer")
            ):
                flow.first_reply_due_at = workflow.now() + timedelta(
                    seconds=flow.first_reply_timeout_s
                )
            self._publish()
        else:
            assert result.placement is not None
            self._back_in_queue(result.placement)

    def _back_in_queue(self, placement: QueuePlacement) -> None:
        flow = self.flow
        flow.assignment_recorded = False
        flow.first_reply_due_at = None
        flow.agent_replied = False
        flow.countdown = IdleCountdown()
        # Served again already? (An assignment signal sent meanwhile found us still active.)
        flow.agent_id = placement.agent_id
        self._placed(placement)

    async def _send_idle_warning(self, countdown: IdleCountdown) -> None:
        close_after_s = countdown.close_after_s
        if close_after_s is None or not workflow.patched(LOCAL_ACTIVITIES):
            # Conversations from before read the policy again here, a local activity of its own.
            close_after_s = (await self._timeouts()).idle_close_after_s
        close_at = workflow.now() + timedelta(seconds=close_after_s)
        told = await self._activity(
            "send_idle_warning",
            IdleWarningInput(
                conversation_id=self.flow.conversation_id,
                agent_message_seq=countdown.agent_message_seq,
                close_at=close_at,
                idle_close_after_s=close_after_s,
            ),
            None,
        )
        countdown.warned = True
        # Close when the warning said: later than planned if it went out late (retried through
        # a database outage), so the visitor gets the whole time. (None: an older history.)
        countdown.close_at = datetime.fromisoformat(told) if isinstance(told, str) else close_at

    async def _close(
        self,
        reason: str,
        next_opening: datetime | None = None,
        *,
        silent_after_seq: int | None = None,
    ) -> None:
        flow = self.flow
        request = flow.close_request
        # An agent served it: the rating invite goes out with the closing message (one write).
        invite = flow.agent_id is not None and workflow.patched(LOCAL_ACTIVITIES)
        rating_expires_at = await self._activity(
            "close_conversation",
            CloseInput(
                conversation_id=flow.conversation_id,
                reason=reason,
                closed_by=request.by_id if request else None,
                next_opening=next_opening,
                invite_rating=invite,
                silent_after_seq=silent_after_seq,
            ),
            None,
            requested=request is not None and request.by_role != Role.SYSTEM,
        )
        if invite and isinstance(rating_expires_at, str):
            flow.rating_expires_at = datetime.fromisoformat(rating_expires_at)
            flow.rating_status = RatingStatus.PENDING
        flow.state = ConversationState.CLOSED
        flow.close_reason = reason
        flow.closed_at = workflow.now()
        flow.countdown = IdleCountdown()
        self._publish()

    async def _rating_phase(self) -> None:
        flow = self.flow
        if flow.agent_id is None:
            return  # nobody served it: nothing to rate (a left message may follow instead)
        if flow.rating_status == RatingStatus.NONE:
            timeouts = await self._timeouts()
            expires_at = workflow.now() + timedelta(seconds=timeouts.rating_window_s)
            await self._activity(
                "invite_rating", RatingInvite(flow.conversation_id, expires_at), None
            )
            flow.rating_expires_at = expires_at
            flow.rating_status = RatingStatus.PENDING
        if flow.rating_status == RatingStatus.PENDING:
            assert flow.rating_expires_at is not None
            await self._sleep_until(flow.rating_expires_at, lambda: flow.rating is not None)
            if flow.rating is not None:
                await self._activity(
                    "record_rating",
                    RatingRecord(flow.conversation_id, flow.rating),
                    None,
                    requested=True,
                )
                flow.rating_status = RatingStatus.RATED
            else:
                await self._activity("expire_rating", flow.conversation_id, None)
                flow.rating_status = RatingStatus.EXPIRED

    # --- signals, updates, queries --------------------------------------------------------

    @workflow.signal
    def message_posted(self, message: MessagePosted) -> None:
        flow = self.flow
        if message.seq <= flow.last_message_seq:
            return  # a duplicate, or older than what we already know: the latest message decides
        flow.last_message_seq = message.seq
        flow.last_message_role = message.sender_role
        flow.last_activity_at = workflow.now()
        # An agent's message proves the database has the conversation active with them, even
        # where this workflow has yet to take in its assignment (the signals of both came in
        # one task: a task lost with a dead server, retried).
        assigned = (
            flow.state == ConversationState.QUEUED
            and flow.agent_id is not None
            and message.sender_role == Role.AGENT
            and workflow.patched(AGENT_WROTE_BEFORE_ACTIVE)
        )
        if flow.state == ConversationState.ACTIVE or assigned:
            if message.sender_role == Role.AGENT:
                flow.agent_replied = True
                flow.countdown = IdleCountdown(
                    agent_message_seq=message.seq, armed_at=workflow.now()
                )
            else:
                flow.countdown = IdleCountdown()
        self._describe()

    @workflow.signal
    def agent_assigned(self, assigned: AgentAssigned) -> None:
        if self.flow.agent_id is None and self.flow.state == ConversationState.QUEUED:
            self.flow.agent_id = assigned.agent_id

    @workflow.update
    async def close(self, request: CloseRequest) -> str:
        flow = self.flow
        flow.close_request = request
        # Answer once the closing message and (if an agent served it) the rating invite are out.
        await workflow.wait_condition(
            lambda: (
                flow.state == ConversationState.CLOSED
                and (flow.agent_id is None or flow.rating_status != RatingStatus.NONE)
            )
        )
        return flow.close_reason or ""

    @close.validator
    def _validate_close(self, request: CloseRequest) -> None:
        flow = self.flow
        if flow.state == ConversationState.CLOSED or flow.close_request is not None:
            raise ApplicationError("the conversation is already closed", type=INVALID_STATE)
        if request.by_role == Role.AGENT and request.by_id != flow.agent_id:
            raise ApplicationError("not your conversation", type=FORBIDDEN)

    @workflow.update
    async def transfer(self, request: TransferRequest) -> str:
        self.flow.transfer_request = request
        await workflow.wait_condition(lambda: self.flow.transfer_request is None)
        result = self._transfer_result
        if result is None or not result.ok:
            reason = result.reason if result else "the transfer did not happen"
            raise ApplicationError(reason or "the transfer did not happen", type=INVALID_STATE)
        return result.agent_id or (result.placement.skill_group if result.placement else "")

    @transfer.validator
    def _validate_transfer(self, request: TransferRequest) -> None:
        flow = self.flow
        if flow.state != ConversationState.ACTIVE or flow.close_request is not None:
            raise ApplicationError(
                "only an active conversation can be transferred", type=INVALID_STATE
            )
        if flow.transfer_request is not None:
            raise ApplicationError("a transfer is under way", type=INVALID_STATE)
        if request.by_role == Role.AGENT and request.by_id != flow.agent_id:
            raise ApplicationError("not your conversation", type=FORBIDDEN)
        if (request.to_agent_id is None) == (request.to_skill_group is None):
            raise ApplicationError("give to_agent_id or to_skill_group", type="InvalidInput")
        if request.to_agent_id is not None and request.to_agent_id == flow.agent_id:
            raise ApplicationError(
                "the conversation is with that agent already", type=INVALID_STATE
            )

    @workflow.update
    async def submit_rating(self, rating: RatingSubmission) -> str:
        self.flow.rating = rating
        await workflow.wait_condition(lambda: self.flow.rating_status != RatingStatus.PENDING)
        if self.flow.rating_status != RatingStatus.RATED:
            raise ApplicationError("the rating window has passed", type=INVALID_STATE)
        return self.flow.rating_status

    @submit_rating.validator
    def _validate_rating(self, rating: RatingSubmission) -> None:
        flow = self.flow
        if flow.rating_status == RatingStatus.RATED or flow.rating is not None:
            raise ApplicationError("the conversation is already rated", type=INVALID_STATE)
        if flow.rating_status != RatingStatus.PENDING:
            raise ApplicationError("no rating invite is pending", type=INVALID_STATE)
        if flow.rating_expires_at is not None and workflow.now() >= flow.rating_expires_at:
            raise ApplicationError("the rating window has passed", type=INVALID_STATE)
        if not 1 <= rating.score <= 5:
            raise ApplicationError("score must be 1 to 5", type="InvalidInput")

    @workflow.query
    def snapshot(self) -> ConversationSnapshot:
        flow = self.flow
        timers = self._pending_timers()
        return ConversationSnapshot(
            conversation_id=flow.conversation_id,
            state=flow.state,
            channel=flow.channel,
            skill_group=flow.skill_group,
            priority=flow.priority,
            routing_rule=flow.routing_rule,
            policy_version=flow.policy_version,
            overflow_hops=flow.overflow_hops,
            agent_id=flow.agent_id,
            close_reason=flow.close_reason,
            rating_status=flow.rating_status,
            queued_at=flow.queued_at,
            last_message_seq=flow.last_message_seq,
            last_activity_at=flow.last_activity_at,
            closed_at=flow.closed_at,
            overflow_at=timers.get("queue overflow"),
            first_reply_due_at=timers.get("agent first reply"),
            idle_warning_at=timers.get("idle warning"),
            idle_close_at=timers.get("idle auto-close"),
            rating_expires_at=timers.get("rating expiry"),
        )

    # --- helpers ---------------------------------------------------------------------------

    async def _activity(
        self, name: str, arg: object, result_type: type | None, *, requested: bool = False
    ) -> object:
        """Run an activity; `requested`: it carries out an update (see LOCAL_ACTIVITIES)."""
        if not requested and workflow.patched(LOCAL_ACTIVITIES):
            return await workflow.execute_local_activity(
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=_ACTIVITY_TIMEOUT,
                retry_policy=_RETRY,
            )
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=_ACTIVITY_TIMEOUT,
            retry_policy=_RETRY,
        )

    async def _timeouts(self) -> Timeouts:
        return await workflow.execute_local_activity(
            "current_timeouts",
            result_type=Timeouts,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=_RETRY,
        )

    async def _sleep_until(self, deadline: datetime, woken: Callable[[], bool]) -> bool:
        """Wait for `woken()` or the deadline (a durable timer). True if woken first."""
        self._describe()  # the supervisor sees the timer that is about to run
        remaining = (deadline - workflow.now()).total_seconds()
        if remaining <= 0:
            return woken()
        try:
            await workflow.wait_condition(woken, timeout=remaining)
        except TimeoutError:
            return woken()
        return True

    def _continue_as_new_due(self) -> bool:
        return workflow.info().is_continue_as_new_suggested()

    async def _continue_as_new(self) -> None:
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self.flow)

    def _publish(self) -> None:
        """Keep the supervisor's search attributes current (never customer text)."""
        flow = self.flow
        optional = (
            (SA_SKILL_GROUP, flow.skill_group),
            (SA_AGENT, flow.agent_id),
            (SA_CLOSE_REASON, flow.close_reason),
        )
        updates: list[SearchAttributeUpdate] = [
            SA_STATE.value_set(flow.state),
            SA_CHANNEL.value_set(flow.channel),
            SA_PRIORITY.value_set(flow.priority),
            *(key.value_set(value) if value else key.value_unset() for key, value in optional),
        ]
        if flow.queued_at:
            updates.append(SA_QUEUED_AT.value_set(flow.queued_at))
        if flow.overflow_hops:
            updates.append(SA_OVERFLOW_HOPS.value_set(flow.overflow_hops))
        if flow.closed_at:
            updates.append(SA_CLOSED_AT.value_set(flow.closed_at))
        workflow.upsert_search_attributes(updates)
        self._describe()

    def _pending_timers(self) -> dict[str, datetime]:
        """The durable timers this conversation waits on now, by what they do, with when."""
        flow = self.flow
        countdown = flow.countdown
        timers: dict[str, datetime | None] = {}
        if flow.state == ConversationState.QUEUED and flow.max_queue_wait_s and flow.in_group_since:
            timers["queue overflow"] = flow.in_group_since + timedelta(
                seconds=flow.max_queue_wait_s
            )
        if flow.state == ConversationState.ACTIVE:
            if countdown.agent_message_seq == 0 and not flow.agent_replied:
                timers["agent first reply"] = flow.first_reply_due_at
            elif countdown.agent_message_seq and not countdown.warned:
                timers["idle warning"] = countdown.warning_at
            elif countdown.warned:
                timers["idle auto-close"] = countdown.close_at
        if flow.rating_status == RatingStatus.PENDING:
            timers["rating expiry"] = flow.rating_expires_at
        return {name: at for name, at in timers.items() if at is not None}

    def _describe(self) -> None:
        """The Temporal UI's current details: where the conversation stands, in markdown.
        Never customer text or personal data."""
        flow = self.flow
        lines = [f"**{flow.state}** · {flow.channel} · {flow.skill_group or 'routing'}"]
        if flow.agent_id:
            lines.append(f"- agent: **{flow.agent_id}**")
        if flow.state == ConversationState.QUEUED and flow.queued_at:
            lines.append(f"- waiting since {_clock(flow.queued_at)}")
        if flow.last_activity_at:
            lines.append(
                f"- last message: {_clock(flow.last_activity_at)} ({flow.last_message_role})"
            )
        if flow.closed_at:
            lines.append(f"- closed {_clock(flow.closed_at)}: {flow.close_reason}")
        rule = "default group" if flow.routing_rule is None else f"rule {flow.routing_rule}"
        lines.append(
            f"- routing: {rule} · priority {flow.priority} · overflow hops {flow.overflow_hops}"
        )
        lines += [f"- timer: {name} at {_clock(at)}" for name, at in self._pending_timers().items()]
        if flow.policy_version:
            lines.append(f"- policy {flow.policy_version}")
        workflow.set_current_details("\n".join(lines))


def _clock(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def _reason_for(request: CloseRequest) -> str:
    if request.by_role == Role.AGENT:
        return CloseReason.AGENT_CLOSED
    if request.by_role == Role.ADMIN:
        return CloseReason.ADMIN_CLOSED
    return CloseReason.VISITOR_CLOSED
