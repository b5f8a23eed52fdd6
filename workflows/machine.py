"""What the conversation workflow does: routing → (bot →) queue → agent → idle countdown →
close → rating. Its handlers (workflows/conversation.py) call in here.

The workflow is the single authority on state transitions. It learns of messages and of its
agent by signal, takes close, transfer and rating requests as validated updates, and does all
I/O through activities (called by name, so this module never imports the database layer).

The sandbox imports this module once, not afresh for every workflow run (each cached run
would keep its own copy of every code object here: bench/ B4, the worker's memory). So it
holds no state of its own, reads no clock or randomness but Temporal's, and imports only
what is pure.

Where it stands is its stage (`Stage`, in the flow; a client sees the stage's state: bot,
queued, active or closed). The run loop dispatches on the stage and waits for its timer;
signals, updates and timers move it on, only thus:

    stage                 event                                 next stage
    ROUTING               in service hours, a group takes it    QUEUED (ASSIGNED: served at once)
    ROUTING               out of hours, or no group takes it    CLOSED out_of_hours | overflow
    ROUTING               agent_assigned                        ROUTING, its agent noted
    ROUTING               the rule names a bot (open or not)    BOT
    BOT                   visitor message                       BOT, answered (once: the
                                                                bot's answer is stored with it)
    BOT                   the bot hands off (转人工)             ROUTING, then as ROUTING's
                                                                first two rows
    BOT                   bot idle close timer                  CLOSED bot_resolved | idle_timeout
    BOT                   bot idle close timer, a newer message BOT, that message answered
                          stored meanwhile (the close declined)
    BOT                   close                                 CLOSED visitor_closed
                                                                | admin_closed
    QUEUED                agent_assigned                        ASSIGNED
    QUEUED                queue overflow timer                  QUEUED in the next group
                                                                | CLOSED overflow
                                                                | ASSIGNED (served meanwhile)
    QUEUED                the group closes (on_closing "close") CLOSED out_of_hours
                                                                | ASSIGNED (served meanwhile)
    QUEUED                close                                 CLOSED abandoned | admin_closed
    ASSIGNED              the assignment recorded               AWAITING_FIRST_REPLY
                                                                (COUNTING_DOWN: the agent wrote)
    ASSIGNED              the agent's message (the same task)   ASSIGNED, the countdown armed
    ASSIGNED              close                                 CLOSED by whoever asked
    AWAITING_FIRST_REPLY  first-reply timer                     QUEUED | ASSIGNED (not to them)
    AWAITING_FIRST_REPLY  first-reply timer, their reply stored COUNTING_DOWN | VISITOR_WROTE_LAST
                          (the requeue declined)                (as the newest message says)
    AWAITING_FIRST_REPLY  visitor message                       AWAITING_FIRST_REPLY (nothing done)
    COUNTING_DOWN         agent message                         COUNTING_DOWN, its timer running
                                                                on (it re-arms when it fires)
    active *              agent message (in other stages)       COUNTING_DOWN (afresh)
    VISITOR_WROTE_LAST    visitor message                       VISITOR_WROTE_LAST (nothing done)
    VISITOR_WROTE_LAST,
    COUNTING_DOWN, WARNED visitor message                       VISITOR_WROTE_LAST
    COUNTING_DOWN         idle warning timer                    WARNED, the warning pushed
    COUNTING_DOWN         idle warning timer, a newer agent     COUNTING_DOWN, the timer re-armed
                          message heard of                      from that message
    COUNTING_DOWN         idle warning timer, a newer message   as that message's signal
                          stored meanwhile (the warning declined)
    WARNED                auto-close timer                      CLOSED idle_timeout
    WARNED                auto-close timer, a newer message     as that message's signal
                          stored meanwhile (the close declined)
    active *              transfer to an agent                  AWAITING_FIRST_REPLY (the same
                                                                if the new agent wrote already)
    active *              transfer to a group                   QUEUED | ASSIGNED
    active *              close                                 CLOSED agent_closed
                                                                | visitor_closed | admin_closed
    QUEUED, CLOSED        a transfer accepted while active      the same, the transfer refused
    QUEUED, ASSIGNED,
    active *              continue-as-new suggested             the same, in a new run, once
                                                                every pending request is handled
    CLOSED                rating invite, then rating | expiry   (the workflow completes)

    * AWAITING_FIRST_REPLY, VISITOR_WROTE_LAST, COUNTING_DOWN, WARNED: the state is active.

A signal moves the stage at once; a decision once its activity has written it, except the
assignment's record: its stage begins as the record starts, so that a message meanwhile is
taken as in an active conversation (the database says active once the record commits). A
decision taken because nothing happened (the timers') is declined by its activity when
something newer is stored (invariant 8): the workflow then goes on as that fact's lost signal
would have had it (`_resume_from`).

A message signal is a decision only where it changes the side that wrote last (or is the
agent's first reply). Any other message updates the flow alone: no activity, upsert, details or
timer (bench/ B1c counts them; tests/test_message_decisions.py). Even a change of side costs
little: the agent's message carries the policy's idle durations (no read), and the idle
countdown's timer runs on through the visitor's turn: when the agent writes again before it
fires, it serves the new countdown, which it re-arms from the newest agent message when it
fires. A conversation pays for about one timer per idle warning's worth of chatting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from domain.errors import (
    ASSIGNED_MEANWHILE,
    FORBIDDEN,
    INVALID_INPUT,
    INVALID_STATE,
    NEWER_MESSAGE,
)
from domain.types import (
    LEFT_MESSAGE,
    MAX_OVERFLOW_HOPS,
    TEAM_ROLES,
    AgentAssigned,
    AssignmentRecord,
    BotTurnRequest,
    BotTurnResult,
    CloseInput,
    CloseReason,
    CloseRequest,
    ConversationFlow,
    ConversationSnapshot,
    ConversationState,
    HandOffRequest,
    IdleCountdown,
    IdleWarningInput,
    MessagePosted,
    OnClosing,
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
    Stage,
    Timeouts,
    TransferInput,
    TransferRequest,
    TransferResult,
)
from workflows import supervision
from workflows.patches import (
    AGENT_WROTE_BEFORE_ACTIVE,
    CLOSE_AT_CLOSING,
    FIRST_REPLY_AFTER_TRANSFER,
    IDLE_TIMER_RUNS_ON,
    LOCAL_ACTIVITIES,
    MESSAGE_DECISIONS,
    REQUESTS_FIRST,
    read_older_flags,
    write_older_flags,
)

# Database outages must delay decisions, never drop them: retry without a limit.
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
_ACTIVITY_TIMEOUT = timedelta(seconds=30)
# The bot's answer: a webhook's attempts (30 s each at most, 5 of them) and their pauses.
_BOT_TIMEOUT = timedelta(minutes=3)
# What an activity found when it declined a decision taken because nothing happened.
_DECLINED = (NEWER_MESSAGE, ASSIGNED_MEANWHILE)
_LEAST_TIMER_S = 0.001


@dataclass
class _IdleTimer:
    """The idle countdown's timer, which runs on through the visitor's turn: it was started for
    the agent message `armed_for`, to fire `warning_after_s` after it."""

    task: asyncio.Task[None]
    armed_for: int
    warning_after_s: float


class ConversationMachine:
    """The conversation's state machine: `flow` is all its state (what continue-as-new
    carries on). The workflow class adds the handlers."""

    flow: ConversationFlow
    _transfer_result: TransferResult | None

    def _begin(self, flow: ConversationFlow) -> None:
        """The workflow's state from its input (a new conversation's, or the last run's)."""
        read_older_flags(flow)
        flow.customer_id = ""  # an older API's input named the customer: not carried on
        self.flow = flow
        self._transfer_result: TransferResult | None = None
        self._idle_timer: _IdleTimer | None = None

    async def _live(self) -> str:
        """Every stage in turn, to the close and the rating: the close reason."""
        # Decided once a run, in its first task (a run older code began keeps its commands to
        # its end; the marker before any local activity: the SDK's query replay trips on a
        # patch first met after one in the same task).
        self._message_decisions()
        self._timer_runs_on()
        while True:
            self._refuse_transfer_out_of_turn()
            match self.flow.stage:
                case Stage.ROUTING:
                    await self._route()
                case Stage.BOT:
                    await self._bot_phase()
                case Stage.QUEUED | Stage.ASSIGNED:
                    await self._wait_in_queue()
                case (
                    Stage.AWAITING_FIRST_REPLY
                    | Stage.VISITOR_WROTE_LAST
                    | Stage.COUNTING_DOWN
                    | Stage.WARNED
                ):
                    await self._attend()
                case Stage.CLOSED:
                    break
        self._refuse_transfer_out_of_turn()
        await self._rating_phase()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.flow.close_reason or ""

    # --- stages ----------------------------------------------------------------------------

    def _enter(self, stage: Stage) -> None:
        self.flow.stage = stage
        self.flow.state = stage.state

    async def _route(self) -> None:
        """ROUTING: the routing rule picks the group, the service hours say if it is open."""
        flow = self.flow
        route: RouteResult = await self._activity(
            "route_conversation", RouteRequest(flow.conversation_id, workflow.now()), RouteResult
        )
        flow.skill_group = route.skill_group
        flow.priority = route.priority
        flow.routing_rule = route.rule
        flow.policy_version = route.policy_version
        if route.bot is not None:
            # The bot answers first, in service hours or not (out of them a hand-off offers the
            # left message); a visitor who stays silent is let go after a while.
            flow.bot = route.bot
            flow.bot_idle_close_s = route.bot_idle_close_s
            flow.last_activity_at = flow.last_activity_at or workflow.now()
            self._enter(Stage.BOT)
            self._publish()
            return
        await self._to_group(route)

    async def _to_group(self, route: RouteResult) -> None:
        """Queue in the routed group if it is open; else close, offering a left message."""
        if not route.is_open:
            await self._close(CloseReason.OUT_OF_HOURS, next_opening=route.next_opening)
            return
        await self._join(route.skill_group)

    async def _bot_phase(self) -> None:
        """BOT: the bot answers each visitor message (read from the database, answered once);
        a close asked for; a hand-off (转人工) routes it on to a person; a visitor silent for
        the policy's while is let go (bot_resolved, or idle_timeout after a miss)."""
        flow = self.flow

        def woken() -> bool:
            return (
                flow.last_message_seq > flow.bot_answered_seq
                or flow.close_request is not None
                or self._continue_as_new_due()
            )

        if flow.close_request is not None:
            await self._close(_reason_for(flow.close_request))
        elif flow.last_message_seq > flow.bot_answered_seq:
            await self._bot_answer()
        elif self._continue_as_new_due():
            await self._continue_as_new()
        else:
            deadline = supervision.bot_close_at(flow)
            assert deadline is not None
            if not await self._sleep_until(deadline, woken):
                await self._close_bot_idle()

    async def _bot_answer(self) -> None:
        flow = self.flow
        # Every message heard of by now was stored before its signal: the activity reads it.
        heard = flow.last_message_seq
        result: BotTurnResult = await self._activity(
            "answer_visitor",
            BotTurnRequest(flow.conversation_id, flow.bot or "", flow.bot_answered_seq),
            BotTurnResult,
            timeout=_BOT_TIMEOUT,
        )
        if result.answered_seq > flow.bot_answered_seq:
            flow.bot_missed = result.missed
        # Past what the activity read: every message heard of before it began, and any whose
        # signal is late or lost. One heard of meanwhile waits for the next turn.
        flow.bot_answered_seq = max(result.answered_seq, heard)
        flow.last_message_seq = max(flow.last_message_seq, flow.bot_answered_seq)
        flow.bot_last_seq = max(flow.bot_last_seq, result.last_seq)
        flow.bot_idle_close_s = result.idle_close_after_s
        if result.handoff_reason is None:
            self._describe()
            return
        flow.handoff_reason = result.handoff_reason
        flow.handoff_group = result.handoff_group
        # Routed again: to the queue, as any conversation (its agent's signal is taken as in
        # routing, should it come before the placement).
        self._enter(Stage.ROUTING)
        route: RouteResult = await self._activity(
            "hand_off",
            HandOffRequest(
                flow.conversation_id, result.handoff_reason, result.handoff_group, workflow.now()
            ),
            RouteResult,
        )
        flow.skill_group = route.skill_group
        flow.policy_version = route.policy_version
        await self._to_group(route)

    async def _close_bot_idle(self) -> None:
        """BOT, the visitor silent → CLOSED bot_resolved (the bot's last answer understood) or
        idle_timeout (a miss, or nothing asked); unless a message newer than what the workflow
        knows is stored (its signal lost or late): then the bot answers it."""
        flow = self.flow
        resolved = flow.bot_last_seq > 0 and not flow.bot_missed
        flow.close_request = CloseRequest(by_role=Role.SYSTEM, by_id="bot")
        try:
            await self._close(
                CloseReason.BOT_RESOLVED if resolved else CloseReason.IDLE_TIMEOUT,
                silent_after_seq=max(flow.bot_last_seq, flow.last_message_seq),
            )
        except (ActivityError, ApplicationError) as exc:
            _message_id, seq, _sender_role = _declined(exc).details
            flow.close_request = None
            flow.last_message_seq = max(flow.last_message_seq, seq)
            flow.last_activity_at = workflow.now()

    async def _wait_in_queue(self) -> None:
        """QUEUED or ASSIGNED: until the agent, a close, the overflow timer, the group's
        closing (if it closes its queue) or continue-as-new, whichever comes first."""
        flow = self.flow

        def woken() -> bool:
            return (
                flow.stage == Stage.ASSIGNED
                or flow.close_request is not None
                or self._continue_as_new_due()
            )

        overflow_at = None
        if flow.max_queue_wait_s is not None and flow.in_group_since is not None:
            overflow_at = flow.in_group_since + timedelta(seconds=flow.max_queue_wait_s)
        closing_at = self._closing_at()
        deadline = min((at for at in (overflow_at, closing_at) if at is not None), default=None)
        timed_out = False
        if deadline is not None:
            timed_out = not await self._sleep_until(deadline, woken)
        else:
            await workflow.wait_condition(woken)
        if flow.close_request is not None and flow.stage == Stage.ASSIGNED:
            # Its agent came in the same breath (the visitor may have seen them already): a
            # close by whoever asked, not an abandoned wait.
            await self._close(_reason_for(flow.close_request))
        elif flow.close_request is not None:
            by_team = flow.close_request.by_role in TEAM_ROLES
            await self._close(CloseReason.ADMIN_CLOSED if by_team else CloseReason.ABANDONED)
        elif flow.stage == Stage.ASSIGNED:
            await self._take_assignment()
        elif timed_out and deadline == closing_at:
            await self._close_at_closing()
        elif timed_out:
            await self._overflow(flow.overflow_to)
        else:
            await self._continue_as_new()

    def _closing_at(self) -> datetime | None:
        """When the queue wait ends because its group closes (on_closing "close"), if it does."""
        flow = self.flow
        if flow.on_closing != OnClosing.CLOSE or flow.group_closes_at is None:
            return None
        # Conversations that queued before waited on through the closing.
        return flow.group_closes_at if workflow.patched(CLOSE_AT_CLOSING) else None

    async def _close_at_closing(self) -> None:
        """QUEUED, its group's hours ended → CLOSED out_of_hours, with when it opens again and a
        left message offered; unless an agent took it meanwhile (the close declined): then it
        is theirs, as if their signal had come (invariant 8)."""
        flow = self.flow
        try:
            await self._close(
                CloseReason.OUT_OF_HOURS,
                next_opening=flow.group_next_opening,
                unless_assigned=True,
            )
        except (ActivityError, ApplicationError) as exc:
            self._resume_from(_declined(exc))

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
                self._enter(Stage.ASSIGNED)
                return
            if placement.accepted:
                self._placed(placement)
                return
            if not self._may_overflow_to(placement.overflow_to):
                await self._close_for_overflow(overflowed_from=skill_group)
                return
            flow.overflow_hops += 1
            assert placement.overflow_to is not None
            from_group, skill_group = skill_group, placement.overflow_to

    def _placed(self, placement: QueuePlacement) -> None:
        flow = self.flow
        # Assigned already if its agent's signal came while the placement was being made.
        self._enter(Stage.ASSIGNED if flow.agent_id is not None else Stage.QUEUED)
        flow.skill_group = placement.skill_group
        flow.queued_at = placement.queued_at
        flow.in_group_since = workflow.now()
        flow.max_queue_wait_s = placement.max_queue_wait_s
        flow.overflow_to = placement.overflow_to
        flow.group_closes_at = placement.closes_at
        flow.on_closing = placement.on_closing
        flow.group_next_opening = placement.next_opening
        flow.first_reply_timeout_s = placement.first_reply_timeout_s
        self._publish()

    async def _overflow(self, target: str | None) -> None:
        if not self._may_overflow_to(target):
            await self._close_for_overflow(overflowed_from=self.flow.skill_group)
            return
        assert target is not None
        self.flow.overflow_hops += 1
        await self._join(target)

    async def _close_for_overflow(self, *, overflowed_from: str | None) -> None:
        """Nobody took it in time, and there is no group left to try: CLOSED overflow (a left
        message is offered), unless an agent has taken it by the time the close is written."""
        try:
            await self._close(
                CloseReason.OVERFLOW, overflowed_from=overflowed_from, unless_assigned=True
            )
        except (ActivityError, ApplicationError) as exc:
            self._resume_from(_declined(exc))

    def _may_overflow_to(self, target: str | None) -> bool:
        return (
            target is not None
            and target != LEFT_MESSAGE
            and self.flow.overflow_hops < MAX_OVERFLOW_HOPS
        )

    async def _take_assignment(self) -> None:
        """ASSIGNED → active: record the assignment (its events, the database's state) and set
        the first reply due. No fresh start: the way back to the queue made it, and the agent
        may have written already (their message came with the assignment's signal)."""
        flow = self.flow
        wrote = flow.countdown.agent_message_seq > 0
        self._enter(Stage.COUNTING_DOWN if wrote else Stage.AWAITING_FIRST_REPLY)
        flow.assignment_round += 1
        await self._activity(
            "record_assignment", AssignmentRecord(flow.conversation_id, flow.assignment_round), None
        )
        if flow.first_reply_timeout_s:
            flow.first_reply_due_at = workflow.now() + timedelta(seconds=flow.first_reply_timeout_s)
        self._publish()

    async def _attend(self) -> None:
        """An active stage: what someone asked for first, then the stage's timer."""
        flow = self.flow
        if flow.close_request is not None:
            await self._close(_reason_for(flow.close_request))
            return
        if self._continue_as_new_due() and not (
            flow.transfer_request is not None and workflow.patched(REQUESTS_FIRST)
        ):
            await self._continue_as_new()
        if flow.transfer_request is not None:
            await self._transfer(flow.transfer_request)
            return
        countdown = flow.countdown

        def moved(countdown: IdleCountdown = countdown) -> bool:
            # A newer message replaces the countdown object; a request ends the wait.
            return (
                flow.countdown is not countdown
                or flow.close_request is not None
                or flow.transfer_request is not None
                or self._continue_as_new_due()
            )

        match flow.stage:
            case Stage.AWAITING_FIRST_REPLY if flow.first_reply_due_at is not None:
                if not await self._sleep_until(flow.first_reply_due_at, moved):
                    await self._requeue_unanswered()
            case Stage.AWAITING_FIRST_REPLY | Stage.VISITOR_WROTE_LAST:
                await workflow.wait_condition(moved)
            case Stage.COUNTING_DOWN if self._timer_runs_on():
                await self._arm(countdown)
                if await self._idle_timer_fired(countdown, moved):
                    await self._send_idle_warning(countdown)
            case Stage.COUNTING_DOWN:
                armed_for = countdown.agent_message_seq
                warning_at = await self._arm(countdown)
                if not await self._sleep_until(warning_at, moved) and await self._warning_due(
                    countdown, armed_for, moved
                ):
                    await self._send_idle_warning(countdown)
            case Stage.WARNED:
                assert countdown.close_at is not None
                if not await self._sleep_until(countdown.close_at, moved):
                    await self._close_idle(countdown)

    async def _arm(self, countdown: IdleCountdown) -> datetime:
        """When the countdown's warning is due: its newest agent message + idle_warning_after,
        the durations the policy gave when the countdown started (its agent message brought
        them, or they are read now: an ops edit applies to the next countdown; older code read
        them each time it restarted)."""
        unread = countdown.warning_after_s is None or countdown.close_after_s is None
        if unread or not self._message_decisions():
            timeouts = await self._timeouts()
            countdown.warning_after_s = timeouts.idle_warning_after_s
            countdown.close_after_s = timeouts.idle_close_after_s
        countdown.warning_at = _warning_at(countdown)
        return countdown.warning_at

    async def _idle_timer_fired(self, countdown: IdleCountdown, moved: Callable[[], bool]) -> bool:
        """Wait for the warning's time: True when it has come for the countdown's newest agent
        message, False if something ended the wait first (the timer runs on). A timer still
        running from an earlier countdown serves when it fires no later than this one's warning
        (its durations no longer: decided on durations and the order of messages, never on
        clock readings, which a replay need not reproduce); once it fires for an older message
        a timer is started for the newest (always one, however near)."""
        warning_after_s = countdown.warning_after_s
        assert warning_after_s is not None  # armed
        while True:
            timer = self._idle_timer
            if timer is not None and (timer.task.done() or timer.warning_after_s > warning_after_s):
                if not timer.task.done():
                    timer.task.cancel()  # the policy was shortened since: it would fire late
                timer = self._idle_timer = None
            if timer is None:
                warning_at = _warning_at(countdown)
                remaining = max((warning_at - workflow.now()).total_seconds(), _LEAST_TIMER_S)
                timer = self._idle_timer = _IdleTimer(
                    task=asyncio.create_task(asyncio.sleep(remaining)),
                    armed_for=countdown.agent_message_seq,
                    warning_after_s=warning_after_s,
                )
            self._describe()  # the supervisor sees the timer that is about to run
            running = timer.task
            await workflow.wait_condition(lambda running=running: running.done() or moved())
            if moved():
                return False
            self._idle_timer = None
            if timer.armed_for == countdown.agent_message_seq:
                return True

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.task.cancel()
            self._idle_timer = None

    async def _warning_due(
        self, countdown: IdleCountdown, armed_for: int, moved: Callable[[], bool]
    ) -> bool:
        """The warning's timer fired: the warning is due, unless the agent wrote again
        meanwhile; then a timer re-armed for their newest message (always one, however near:
        the time a message's signal was taken in is not one a replay reproduces, when that task
        gave no command). False if something ended the wait first."""
        while countdown.agent_message_seq != armed_for:
            armed_for = countdown.agent_message_seq
            countdown.warning_at = _warning_at(countdown)
            self._describe()  # the supervisor sees the timer that is about to run
            remaining = (countdown.warning_at - workflow.now()).total_seconds()
            try:
                await workflow.wait_condition(moved, timeout=max(remaining, _LEAST_TIMER_S))
            except TimeoutError:
                pass
            if moved():
                return False
        return True

    async def _close_idle(self, countdown: IdleCountdown) -> None:
        """WARNED, auto-close timer → CLOSED idle_timeout, unless a message newer than the
        countdown's was stored by the time the close is written (its signal lost or late):
        then carry on from that message (invariant 8)."""
        flow = self.flow
        flow.close_request = CloseRequest(by_role=Role.SYSTEM, by_id="idle_countdown")
        try:
            await self._close(
                CloseReason.IDLE_TIMEOUT, silent_after_seq=countdown.agent_message_seq
            )
        except (ActivityError, ApplicationError) as exc:
            failure = _declined(exc)
            flow.close_request = None
            self._resume_from(failure)

    async def _requeue_unanswered(self) -> None:
        """The agent never answered: back to the queue near its head, and not to them again."""
        flow = self.flow
        assert flow.agent_id is not None
        try:
            placement: QueuePlacement = await self._activity(
                "requeue_unanswered",
                RequeueInput(flow.conversation_id, flow.agent_id, flow.assignment_round),
                QueuePlacement,
            )
        except (ActivityError, ApplicationError) as exc:
            self._resume_from(_declined(exc))  # they did answer: its signal was lost or late
            return
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
        if result.agent_id is None:
            assert result.placement is not None
            self._back_in_queue(result.placement)
            return
        flow.agent_id = result.agent_id
        flow.assignment_round += 1
        # A message newer than the handover (a greater seq) is the new agent's or the
        # visitor's: one the new agent wrote while the handover was being recorded keeps the
        # countdown it started. Anything older is the past: a fresh start.
        if not (result.handover_seq and flow.countdown.agent_message_seq > result.handover_seq):
            self._enter(Stage.AWAITING_FIRST_REPLY)
            flow.countdown = IdleCountdown()
        flow.first_reply_due_at = None
        # The new agent must answer in time too.
        if (
            flow.first_reply_timeout_s
            and flow.stage == Stage.AWAITING_FIRST_REPLY
            and workflow.patched(FIRST_REPLY_AFTER_TRANSFER)
        ):
            flow.first_reply_due_at = workflow.now() + timedelta(seconds=flow.first_reply_timeout_s)
        self._publish()

    def _back_in_queue(self, placement: QueuePlacement) -> None:
        flow = self.flow
        flow.first_reply_due_at = None
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
        warned_after_seq = countdown.agent_message_seq
        try:
            told = await self._activity(
                "send_idle_warning",
                IdleWarningInput(
                    conversation_id=self.flow.conversation_id,
                    agent_message_seq=warned_after_seq,
                    close_at=close_at,
                    idle_close_after_s=close_after_s,
                ),
                None,
            )
        except (ActivityError, ApplicationError) as exc:
            if self.flow.countdown is countdown:  # else a newer message's signal came meanwhile
                self._resume_from(_declined(exc))
            return
        if self.flow.countdown is countdown and countdown.agent_message_seq == warned_after_seq:
            self._enter(Stage.WARNED)  # no newer message meanwhile
        elif self.flow.countdown is countdown:
            # The agent wrote again while the warning went out: count down afresh from that.
            self.flow.countdown = IdleCountdown(
                agent_message_seq=countdown.agent_message_seq,
                armed_at=countdown.armed_at,
                warning_after_s=countdown.warning_after_s,
                close_after_s=countdown.close_after_s,
            )
        # Close when the warning said: later than planned if it went out late (retried through
        # a database outage), so the visitor gets the whole time. (None: an older worker.)
        countdown.close_at = datetime.fromisoformat(told) if isinstance(told, str) else close_at

    async def _close(
        self,
        reason: str,
        next_opening: datetime | None = None,
        *,
        silent_after_seq: int | None = None,
        overflowed_from: str | None = None,
        unless_assigned: bool = False,
    ) -> None:
        """Close, with the closing message; an activity error if it was declined (the
        silence or the wait it is for has ended: see `_resume_from`). `overflowed_from`: an
        overflow into a left message from this group, a hop too."""
        flow = self.flow
        request = flow.close_request
        hop = flow.overflow_hops + 1 if overflowed_from is not None else 0
        # An agent served it (or the bot alone, if the policy says): the rating invite goes out
        # with the closing message (one write).
        served = flow.agent_id is not None or (flow.bot is not None and flow.handoff_reason is None)
        invite = served and workflow.patched(LOCAL_ACTIVITIES)
        rating_expires_at = await self._activity(
            "close_conversation",
            CloseInput(
                conversation_id=flow.conversation_id,
                reason=reason,
                closed_by=request.by_id if request else None,
                next_opening=next_opening,
                invite_rating=invite,
                silent_after_seq=silent_after_seq,
                overflowed_from=overflowed_from,
                overflow_hop=hop,
                unless_assigned=unless_assigned,
            ),
            None,
            requested=request is not None and request.by_role != Role.SYSTEM,
        )
        if overflowed_from is not None:
            flow.overflow_hops = hop
        # (None: an older worker, which did not invite; the rating phase does.)
        if invite and isinstance(rating_expires_at, str):
            flow.rating_expires_at = datetime.fromisoformat(rating_expires_at)
            flow.rating_status = RatingStatus.PENDING
        self._enter(Stage.CLOSED)
        flow.close_reason = reason
        flow.closed_at = workflow.now()
        flow.countdown = IdleCountdown()
        self._stop_idle_timer()
        self._publish()

    async def _rating_phase(self) -> None:
        flow = self.flow
        if flow.agent_id is None and flow.rating_status == RatingStatus.NONE:
            # Nobody served it (a left message may follow instead), or the bot alone and the
            # policy asks no rating of it: nothing to rate.
            return
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

    # --- what the handlers do (workflows/conversation.py) --------------------------------

    def _take_message(self, message: MessagePosted) -> None:
        """A message was stored: the latest one decides what the idle countdown does. Only a
        change of the side that wrote last, or the agent's first reply, is a decision; any other
        message is taken into the flow alone."""
        flow = self.flow
        if message.seq <= flow.last_message_seq or message.sender_role == Role.BOT:
            # A duplicate, or older than what we already know: the latest message decides. The
            # bot's own messages are its activity's, which the workflow heard the seqs of.
            return
        before = (flow.stage, flow.last_message_role)
        flow.last_message_seq = message.seq
        flow.last_message_role = message.sender_role
        flow.last_activity_at = workflow.now()
        by_agent = message.sender_role == Role.AGENT
        match flow.stage:
            case Stage.COUNTING_DOWN if by_agent and self._message_decisions():
                # The countdown runs on: when its timer fires it re-arms from this message.
                flow.countdown.agent_message_seq = message.seq
                flow.countdown.armed_at = workflow.now()
                return
            case (
                Stage.AWAITING_FIRST_REPLY
                | Stage.VISITOR_WROTE_LAST
                | Stage.COUNTING_DOWN
                | Stage.WARNED
            ) if by_agent:
                flow.countdown = IdleCountdown(
                    agent_message_seq=message.seq, armed_at=workflow.now()
                )
                if self._timer_runs_on():
                    # The durations its sender read (None from an older one: read them then).
                    flow.countdown.warning_after_s = message.idle_warning_after_s
                    flow.countdown.close_after_s = message.idle_close_after_s
                self._enter(Stage.COUNTING_DOWN)
            case Stage.AWAITING_FIRST_REPLY | Stage.VISITOR_WROTE_LAST if self._message_decisions():
                return  # the visitor again: nothing to decide
            case Stage.AWAITING_FIRST_REPLY:
                # Older code: a new countdown object woke the wait, which waited again for the
                # same deadline (a timer cancelled and started afresh).
                flow.countdown = IdleCountdown()
            case Stage.VISITOR_WROTE_LAST | Stage.COUNTING_DOWN | Stage.WARNED:
                flow.countdown = IdleCountdown()
                self._enter(Stage.VISITOR_WROTE_LAST)
            case Stage.ROUTING | Stage.QUEUED | Stage.ASSIGNED if (
                by_agent
                and flow.agent_id is not None
                and workflow.patched(AGENT_WROTE_BEFORE_ACTIVE)
            ):
                # An agent's message proves the database has the conversation active with
                # them, though this workflow has yet to take in its assignment (the signals of
                # both came in one task: a task lost with a dead server, retried). Recording
                # the assignment moves on to COUNTING_DOWN.
                flow.countdown = IdleCountdown(
                    agent_message_seq=message.seq, armed_at=workflow.now()
                )
        if (flow.stage, flow.last_message_role) != before or not self._message_decisions():
            self._describe()

    def _take_agent(self, assigned: AgentAssigned) -> None:
        """The dispatcher gave the conversation an agent."""
        flow = self.flow
        match flow.stage:
            case Stage.QUEUED:
                flow.agent_id = assigned.agent_id
                self._enter(Stage.ASSIGNED)
            case Stage.ROUTING if flow.agent_id is None:
                flow.agent_id = assigned.agent_id  # its placement, once made, says ASSIGNED

    async def _closed_at_request(self, request: CloseRequest) -> str:
        """A close asked for: answered once it is done."""
        flow = self.flow
        flow.close_request = request
        # Answer once the closing message and (if an agent served it) the rating invite are out.
        await workflow.wait_condition(
            lambda: (
                flow.stage == Stage.CLOSED
                and (flow.agent_id is None or flow.rating_status != RatingStatus.NONE)
            )
        )
        return flow.close_reason or ""

    def _check_close(self, request: CloseRequest) -> None:
        flow = self.flow
        if flow.stage == Stage.CLOSED or flow.close_request is not None:
            raise ApplicationError("the conversation is already closed", type=INVALID_STATE)
        if request.by_role == Role.AGENT and request.by_id != flow.agent_id:
            raise ApplicationError("not your conversation", type=FORBIDDEN)

    async def _transferred_at_request(self, request: TransferRequest) -> str:
        """A transfer asked for: the main loop carries it out between its decisions."""
        self.flow.transfer_request = request
        await workflow.wait_condition(lambda: self.flow.transfer_request is None)
        result = self._transfer_result
        if result is None or not result.ok:
            reason = result.reason if result else "the transfer did not happen"
            raise ApplicationError(reason or "the transfer did not happen", type=INVALID_STATE)
        return result.agent_id or (result.placement.skill_group if result.placement else "")

    def _check_transfer(self, request: TransferRequest) -> None:
        flow = self.flow
        if flow.stage.state != ConversationState.ACTIVE or flow.close_request is not None:
            raise ApplicationError(
                "only an active conversation can be transferred", type=INVALID_STATE
            )
        if flow.transfer_request is not None:
            raise ApplicationError("a transfer is under way", type=INVALID_STATE)
        if request.by_role == Role.AGENT and request.by_id != flow.agent_id:
            raise ApplicationError("not your conversation", type=FORBIDDEN)
        if (request.to_agent_id is None) == (request.to_skill_group is None):
            raise ApplicationError("give to_agent_id or to_skill_group", type=INVALID_INPUT)
        if request.to_agent_id is not None and request.to_agent_id == flow.agent_id:
            raise ApplicationError(
                "the conversation is with that agent already", type=INVALID_STATE
            )

    async def _rated_at_request(self, rating: RatingSubmission) -> str:
        """A rating given: answered once the rating phase took (or refused) it."""
        self.flow.rating = rating
        await workflow.wait_condition(lambda: self.flow.rating_status != RatingStatus.PENDING)
        if self.flow.rating_status != RatingStatus.RATED:
            raise ApplicationError("the rating window has passed", type=INVALID_STATE)
        return self.flow.rating_status

    def _check_rating(self, rating: RatingSubmission) -> None:
        flow = self.flow
        if flow.rating_status == RatingStatus.RATED or flow.rating is not None:
            raise ApplicationError("the conversation is already rated", type=INVALID_STATE)
        if flow.rating_status != RatingStatus.PENDING:
            raise ApplicationError("no rating invite is pending", type=INVALID_STATE)
        if flow.rating_expires_at is not None and workflow.now() >= flow.rating_expires_at:
            raise ApplicationError("the rating window has passed", type=INVALID_STATE)
        if not 1 <= rating.score <= 5:
            raise ApplicationError("score must be 1 to 5", type=INVALID_INPUT)

    def _snapshot(self) -> ConversationSnapshot:
        return supervision.snapshot(self.flow)

    # --- helpers ---------------------------------------------------------------------------

    async def _activity(
        self,
        name: str,
        arg: object,
        result_type: type | None,
        *,
        requested: bool = False,
        timeout: timedelta = _ACTIVITY_TIMEOUT,
    ) -> object:
        """Run an activity; `requested`: it carries out an update.

        Every activity is a short database write (and perhaps a signal to another
        conversation). Those that follow from what history already holds (the start, a signal,
        a timer that fired) run as local activities, inside the workflow task that needs them,
        not as tasks of their own that go round the server: an idle auto-close with its rating
        invite is one workflow task, not three (bench/ B3). If that task is lost (a worker or
        the server dies), its retry runs them again, and they are idempotent. What follows from
        an update (a close or transfer someone asked for) stays a regular activity: the update
        is in history only once its workflow task completes, and a local activity would write
        its effects before that; a lost task would leave the database ahead of the workflow."""
        if not requested and workflow.patched(LOCAL_ACTIVITIES):
            return await workflow.execute_local_activity(
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=timeout,
                retry_policy=_RETRY,
            )
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=timeout,
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

    def _resume_from(self, found: ApplicationError) -> None:
        """A decision taken because nothing happened was declined: something newer is stored,
        its signal lost or late. Carry on from what the activity found, as the signal would
        have had it (invariant 8)."""
        flow = self.flow
        if found.type == ASSIGNED_MEANWHILE:
            (agent_id,) = found.details
            flow.agent_id = agent_id
            self._enter(Stage.ASSIGNED)
            return
        # The newest message stored, and the agent has answered (a countdown ran, or their
        # reply was found): the visitor's turn, or the visitor must answer the agent.
        _message_id, seq, sender_role = found.details
        flow.last_message_seq = max(flow.last_message_seq, seq)
        flow.last_message_role = sender_role
        if sender_role == Role.AGENT:
            known = flow.countdown
            armed_at = workflow.now()
            if (
                seq == known.agent_message_seq
                and known.armed_at is not None
                and self._message_decisions()
            ):
                armed_at = known.armed_at  # its signal came: counted from when it did
            flow.countdown = IdleCountdown(agent_message_seq=seq, armed_at=armed_at)
            self._enter(Stage.COUNTING_DOWN)
        else:
            flow.countdown = IdleCountdown()
            self._enter(Stage.VISITOR_WROTE_LAST)
        self._describe()

    def _refuse_transfer_out_of_turn(self) -> None:
        """A transfer accepted while the conversation was active that finds it no longer is
        (a requeue or a close came first): answered, never left waiting."""
        flow = self.flow
        if flow.transfer_request is None or flow.stage.state == ConversationState.ACTIVE:
            return
        if not workflow.patched(REQUESTS_FIRST):
            return
        gone = "closed" if flow.stage == Stage.CLOSED else "back in the queue"
        self._transfer_result = TransferResult(
            ok=False, reason=f"the conversation is {gone}: not transferred"
        )
        flow.transfer_request = None

    def _message_decisions(self) -> bool:
        """Messages decide only where the side that wrote last changes (conversations that
        began under older code keep its commands: workflows/patches.py)."""
        return workflow.patched(MESSAGE_DECISIONS)

    def _timer_runs_on(self) -> bool:
        """The idle countdown's timer runs on through the visitor's turn, and an agent's message
        brings the countdown its durations (runs older code began keep theirs)."""
        return workflow.patched(IDLE_TIMER_RUNS_ON)

    def _continue_as_new_due(self) -> bool:
        return workflow.info().is_continue_as_new_suggested()

    async def _continue_as_new(self) -> None:
        """Carry on in a new run, once every request is answered. A request that comes while
        the last ones finish is handled first: its handler waits for the run loop, so waiting
        for it here would wait for ever."""
        flow = self.flow
        if workflow.patched(REQUESTS_FIRST):

            def pending() -> bool:
                return flow.close_request is not None or flow.transfer_request is not None

            await workflow.wait_condition(lambda: pending() or workflow.all_handlers_finished())
            if pending():
                return
        else:
            await workflow.wait_condition(workflow.all_handlers_finished)
        write_older_flags(flow)
        workflow.continue_as_new(flow)

    def _publish(self) -> None:
        """Keep the supervisor's search attributes current."""
        workflow.upsert_search_attributes(supervision.search_attributes(self.flow))
        self._describe()

    def _describe(self) -> None:
        workflow.set_current_details(supervision.details(self.flow))


def _declined(exc: ActivityError | ApplicationError) -> ApplicationError:
    """What an activity found when it declined a decision; any other failure is raised on. (A
    local activity's failure comes as it was raised, a regular one's as its cause.)"""
    failure = exc.cause if isinstance(exc, ActivityError) else exc
    if isinstance(failure, ApplicationError) and failure.type in _DECLINED:
        return failure
    raise exc


def _warning_at(countdown: IdleCountdown) -> datetime:
    """When the idle warning is due: the newest agent message's time + idle_warning_after."""
    assert countdown.armed_at is not None and countdown.warning_after_s is not None
    return countdown.armed_at + timedelta(seconds=countdown.warning_after_s)


def _reason_for(request: CloseRequest) -> str:
    if request.by_role == Role.AGENT:
        return CloseReason.AGENT_CLOSED
    if request.by_role in TEAM_ROLES:
        return CloseReason.ADMIN_CLOSED
    return CloseReason.VISITOR_CLOSED
