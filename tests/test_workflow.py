"""The conversation workflow alone: its activities stubbed, on the time-skipping test server.

No API and no database: each stub records its call and answers the result dataclass the test
chose, so every timer path and every race in taking signals in is checked against the
workflow's own decisions (the `snapshot` query and the calls it made), on a fresh task queue.
"""

from __future__ import annotations

import json
import uuid
from base64 import b64decode
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.errors import ASSIGNED_MEANWHILE, NEWER_MESSAGE
from domain.types import (
    AgentAssigned,
    AssignmentRecord,
    CloseInput,
    CloseRequest,
    ConversationFlow,
    ConversationSnapshot,
    IdleCountdown,
    IdleWarningInput,
    MessagePosted,
    QueuePlacement,
    QueueRequest,
    RatingInvite,
    RatingRecord,
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
from tests.support.api import eventually
from workflows import ConversationWorkflow
from workflows.patches import read_older_flags, write_older_flags

TIMEOUTS = Timeouts(idle_warning_after_s=180, idle_close_after_s=120, rating_window_s=3600)
VISITOR = CloseRequest(by_role=Role.VISITOR, by_id="customer-1")


class StubActivities:
    """The workflow's activities by name: each records its argument and answers from the
    placements the test gave (a group not named takes the conversation)."""

    def __init__(self, env: WorkflowEnvironment, **placements: QueuePlacement) -> None:
        self.env = env
        self.placements = placements
        self.calls: list[tuple[str, Any]] = []
        # Activities that decline their next call, as the store does when something newer is
        # stored (invariant 8): the failure the activity raises then.
        self.declines: dict[str, ApplicationError] = {}

    def _called(self, arg: Any) -> None:
        name = activity.info().activity_type
        self.calls.append((name, arg))
        if (declined := self.declines.pop(name, None)) is not None:
            raise declined

    def args(self, name: str) -> list[Any]:
        return [arg for called, arg in self.calls if called == name]

    @activity.defn(name="current_timeouts")
    async def current_timeouts(self) -> Timeouts:
        self._called(None)
        return TIMEOUTS

    @activity.defn(name="route_conversation")
    async def route_conversation(self, request: RouteRequest) -> RouteResult:
        self._called(request)
        return RouteResult("general", priority=0, rule=None, is_open=True, next_opening=None)

    def _placement(self, skill_group: str, at: datetime) -> QueuePlacement:
        placement = self.placements.get(skill_group)
        return replace(placement or QueuePlacement(skill_group, accepted=True), queued_at=at)

    @activity.defn(name="enter_queue")
    async def enter_queue(self, request: QueueRequest) -> QueuePlacement:
        self._called(request)
        return self._placement(request.skill_group, request.at)

    @activity.defn(name="record_assignment")
    async def record_assignment(self, record: AssignmentRecord) -> None:
        self._called(record)

    @activity.defn(name="requeue_unanswered")
    async def requeue_unanswered(self, requeue: RequeueInput) -> QueuePlacement:
        self._called(requeue)
        return self._placement("general", await self.env.get_current_time())

    @activity.defn(name="transfer_conversation")
    async def transfer_conversation(self, transfer: TransferInput) -> TransferResult:
        self._called(transfer)
        return TransferResult(ok=True, agent_id=transfer.request.to_agent_id)

    @activity.defn(name="send_idle_warning")
    async def send_idle_warning(self, warning: IdleWarningInput) -> str:
        self._called(warning)
        return warning.close_at.isoformat()

    @activity.defn(name="close_conversation")
    async def close_conversation(self, close: CloseInput) -> str | None:
        self._called(close)
        if not close.invite_rating:
            return None
        now = await self.env.get_current_time()
        return (now + timedelta(seconds=TIMEOUTS.rating_window_s)).isoformat()

    @activity.defn(name="invite_rating")
    async def invite_rating(self, invite: RatingInvite) -> None:
        self._called(invite)

    @activity.defn(name="record_rating")
    async def record_rating(self, record: RatingRecord) -> None:
        self._called(record)

    @activity.defn(name="expire_rating")
    async def expire_rating(self, conversation_id: str) -> None:
        self._called(conversation_id)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.current_timeouts,
            self.route_conversation,
            self.enter_queue,
            self.record_assignment,
            self.requeue_unanswered,
            self.transfer_conversation,
            self.send_idle_warning,
            self.close_conversation,
            self.invite_rating,
            self.record_rating,
            self.expire_rating,
        ]


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


def _worker(env: WorkflowEnvironment, stubs: StubActivities, task_queue: str) -> Worker:
    # No sticky cache: a test may stop its worker and start another on the same queue.
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[ConversationWorkflow],
        activities=stubs.all(),
        max_cached_workflows=0,
    )


async def _start(env: WorkflowEnvironment, task_queue: str) -> WorkflowHandle[Any, str]:
    return await env.client.start_workflow(
        ConversationWorkflow.run,
        ConversationFlow(conversation_id="c1", channel="web"),
        id=f"conversation-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
    )


async def _seen(
    handle: WorkflowHandle[Any, str], check: Callable[[ConversationSnapshot], bool], what: str
) -> ConversationSnapshot:
    """The snapshot once the workflow has taken in what the test sent (polled: it may lag)."""

    async def now() -> ConversationSnapshot | None:
        snapshot = await handle.query(ConversationWorkflow.snapshot)
        return snapshot if check(snapshot) else None

    return await eventually(now, what=what)


async def _with_agent(handle: WorkflowHandle[Any, str], agent_id: str) -> ConversationSnapshot:
    await _seen(handle, lambda s: s.queued_at is not None, "the conversation in the queue")
    await handle.signal(ConversationWorkflow.agent_assigned, AgentAssigned(agent_id))
    return await _seen(
        handle, lambda s: s.state == "active" and s.agent_id == agent_id, f"active with {agent_id}"
    )


def _posted(seq: int, sender_role: str) -> MessagePosted:
    return MessagePosted(message_id=seq, seq=seq, sender_role=sender_role)


async def _warned(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, str]
) -> tuple[ConversationSnapshot, ConversationSnapshot]:
    """Alice serves it and writes (seq 5); the visitor stays silent past the idle warning.
    The snapshots while counting down and once warned."""
    await _with_agent(handle, "alice")
    await handle.signal(ConversationWorkflow.message_posted, _posted(5, Role.AGENT))
    counting = await _seen(handle, lambda s: s.idle_warning_at is not None, "the countdown")
    await env.sleep(185)  # idle_warning_after is 3 minutes
    warned = await _seen(handle, lambda s: s.idle_close_at is not None, "the warning")
    return counting, warned


async def test_a_queue_wait_overflows_along_the_chain_to_a_left_message(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    stubs = StubActivities(
        time_env,
        general=QueuePlacement(
            "general", accepted=True, max_queue_wait_s=60, overflow_to="after_sales"
        ),
        after_sales=QueuePlacement(
            "after_sales", accepted=True, max_queue_wait_s=60, overflow_to="left_message"
        ),
    )
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        waiting = await _seen(handle, lambda s: s.overflow_at is not None, "the overflow timer")
        assert waiting.skill_group == "general"

        assert await handle.result() == "overflow"

        entered = stubs.args("enter_queue")
        assert [(q.skill_group, q.hop, q.from_group) for q in entered] == [
            ("general", 0, None),
            ("after_sales", 1, "general"),
        ]
        assert waiting.overflow_at is not None and entered[1].at >= waiting.overflow_at
        [closed] = stubs.args("close_conversation")
        assert (closed.reason, closed.invite_rating) == ("overflow", False)
        # The hop into the left message is the second: its event is written with the close.
        assert (closed.overflowed_from, closed.overflow_hop) == ("after_sales", 2)
        ended = await handle.query(ConversationWorkflow.snapshot)
        assert (ended.state, ended.overflow_hops, ended.rating_status) == ("closed", 2, "none")
        assert not stubs.args("expire_rating") and not stubs.args("invite_rating")


async def _waiting_in_a_group_that_closes(
    env: WorkflowEnvironment, on_closing: str
) -> tuple[StubActivities, datetime, datetime]:
    """Stubs whose general group closes in 10 minutes (opening again a day later) and would
    overflow to a left message after an hour: the closing and the next opening."""
    now = await env.get_current_time()
    closes_at, next_opening = now + timedelta(minutes=10), now + timedelta(days=1)
    general = QueuePlacement(
        "general",
        accepted=True,
        max_queue_wait_s=3600,
        overflow_to="left_message",
        closes_at=closes_at,
        on_closing=on_closing,
        next_opening=next_opening,
    )
    return StubActivities(env, general=general), closes_at, next_opening


async def test_a_wait_in_a_group_that_closes_ends_out_of_hours_before_its_overflow(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    stubs, closes_at, next_opening = await _waiting_in_a_group_that_closes(time_env, "close")
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        waiting = await _seen(handle, lambda s: s.closing_at is not None, "the closing timer")
        assert waiting.closing_at == closes_at
        assert waiting.overflow_at is not None and waiting.overflow_at > closes_at

        assert await handle.result() == "out_of_hours"
        [closed] = stubs.args("close_conversation")
        assert (closed.reason, closed.next_opening, closed.unless_assigned) == (
            "out_of_hours",
            next_opening,
            True,
        )
        assert len(stubs.args("enter_queue")) == 1  # closed, not overflowed


async def test_a_wait_in_a_group_that_keeps_its_queue_goes_on_through_the_closing(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    stubs, _closes_at, _next_opening = await _waiting_in_a_group_that_closes(time_env, "keep")
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        waiting = await _seen(handle, lambda s: s.overflow_at is not None, "the overflow timer")
        assert waiting.closing_at is None
        assert await handle.result() == "overflow"  # an hour later, not at the closing
        [closed] = stubs.args("close_conversation")
        assert (closed.reason, closed.unless_assigned) == ("overflow", True)


async def test_a_conversation_an_agent_took_as_its_group_closed_stays_with_them(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    stubs, _closes_at, _next_opening = await _waiting_in_a_group_that_closes(time_env, "close")
    # Assigned in the database; the signal has not come.
    stubs.declines["close_conversation"] = _taken_meanwhile("alice")
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        await _seen(handle, lambda s: s.closing_at is not None, "the closing timer")
        await time_env.sleep(660)
        served = await _seen(handle, lambda s: s.state == "active", "alice's assignment")
        assert (served.agent_id, served.close_reason) == ("alice", None)
        assert stubs.args("record_assignment") == [AssignmentRecord("c1", 1)]
        await handle.signal(ConversationWorkflow.agent_assigned, AgentAssigned("alice"))  # late
        assert await handle.execute_update(ConversationWorkflow.close, VISITOR) == "visitor_closed"


async def test_an_agent_who_never_replies_loses_the_conversation_to_the_next(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    stubs = StubActivities(
        time_env, general=QueuePlacement("general", accepted=True, first_reply_timeout_s=120)
    )
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        await _with_agent(handle, "alice")
        await _seen(handle, lambda s: s.first_reply_due_at is not None, "alice's first reply due")
        assert stubs.args("record_assignment") == [AssignmentRecord("c1", 1)]

        await time_env.sleep(130)
        requeued = await _seen(handle, lambda s: s.state == "queued", "the requeue")
        assert requeued.agent_id is None and requeued.first_reply_due_at is None
        assert stubs.args("requeue_unanswered") == [RequeueInput("c1", "alice", 1)]

        await _with_agent(handle, "bob")
        await _seen(handle, lambda s: s.first_reply_due_at is not None, "bob's first reply due")
        assert stubs.args("record_assignment")[-1] == AssignmentRecord("c1", 2)
        await handle.signal(ConversationWorkflow.message_posted, _posted(4, Role.AGENT))
        answered = await _seen(handle, lambda s: s.last_message_seq == 4, "bob's answer")
        assert answered.first_reply_due_at is None and answered.idle_warning_at is not None
        assert await handle.execute_update(ConversationWorkflow.close, VISITOR) == "visitor_closed"


async def test_the_agent_a_conversation_is_transferred_to_owes_a_first_reply(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    stubs = StubActivities(
        time_env, general=QueuePlacement("general", accepted=True, first_reply_timeout_s=120)
    )
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        await _with_agent(handle, "alice")
        await handle.signal(ConversationWorkflow.message_posted, _posted(4, Role.AGENT))
        await _seen(handle, lambda s: s.idle_warning_at is not None, "alice's countdown")

        to_bob = TransferRequest(by_role=Role.AGENT, by_id="alice", to_agent_id="bob")
        assert await handle.execute_update(ConversationWorkflow.transfer, to_bob) == "bob"
        moved = await handle.query(ConversationWorkflow.snapshot)
        assert (moved.agent_id, moved.idle_warning_at) == ("bob", None)  # a fresh start
        assert moved.first_reply_due_at is not None
        assert stubs.args("transfer_conversation") == [TransferInput("c1", to_bob, round=1)]


async def test_an_unanswered_agent_message_warns_closes_and_the_rating_expires(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    stubs = StubActivities(time_env)
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        counting, warned = await _warned(time_env, handle)
        assert counting.last_activity_at is not None
        assert counting.idle_warning_at == counting.last_activity_at + timedelta(seconds=180)
        [warning] = stubs.args("send_idle_warning")
        assert (warning.agent_message_seq, warning.idle_close_after_s) == (5, 120)
        assert warned.idle_close_at == warning.close_at and warned.idle_warning_at is None

        assert await handle.result() == "idle_timeout"  # the clock skips to each timer
        [closed] = stubs.args("close_conversation")
        assert (closed.reason, closed.closed_by, closed.invite_rating) == (
            "idle_timeout",
            "idle_countdown",
            True,
        )
        assert stubs.args("expire_rating") == ["c1"]
        ended = await handle.query(ConversationWorkflow.snapshot)
        assert (ended.state, ended.close_reason, ended.rating_status) == (
            "closed",
            "idle_timeout",
            "expired",
        )


async def test_a_visitor_message_after_the_warning_cancels_the_auto_close(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    stubs = StubActivities(time_env)
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        _counting, warned = await _warned(time_env, handle)

        await handle.signal(ConversationWorkflow.message_posted, _posted(6, Role.VISITOR))
        answered = await _seen(handle, lambda s: s.last_message_seq == 6, "the visitor's answer")
        assert answered.idle_warning_at is None and answered.idle_close_at is None

        await time_env.sleep(300)  # long past the auto-close the warning announced
        assert warned.idle_close_at is not None
        assert await time_env.get_current_time() > warned.idle_close_at
        agent = CloseRequest(by_role=Role.AGENT, by_id="alice")
        assert await handle.execute_update(ConversationWorkflow.close, agent) == "agent_closed"
        assert [close.reason for close in stubs.args("close_conversation")] == ["agent_closed"]
        assert len(stubs.args("send_idle_warning")) == 1


async def test_a_rating_within_the_window_is_recorded(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    stubs = StubActivities(time_env)
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        await _with_agent(handle, "alice")
        assert await handle.execute_update(ConversationWorkflow.close, VISITOR) == "visitor_closed"
        invited = await handle.query(ConversationWorkflow.snapshot)
        assert invited.rating_status == "pending" and invited.rating_expires_at is not None

        await time_env.sleep(1800)
        rating = RatingSubmission(score=4, resolved=True)
        assert await handle.execute_update(ConversationWorkflow.submit_rating, rating) == "rated"
        assert await handle.result() == "visitor_closed"
        assert stubs.args("record_rating") == [RatingRecord("c1", rating)]
        assert not stubs.args("expire_rating")


async def _counts_down_from(
    handle: WorkflowHandle[Any, str], stubs: StubActivities, seq: int
) -> None:
    """The agent's message started the idle countdown: warning, auto-close, rating expiry."""
    counting = await _seen(handle, lambda s: s.idle_warning_at is not None, "the countdown")
    assert (counting.state, counting.agent_id) == ("active", "alice")
    assert await handle.result() == "idle_timeout"
    assert [warning.agent_message_seq for warning in stubs.args("send_idle_warning")] == [seq]
    assert len(stubs.args("record_assignment")) == 1


async def test_an_assignment_and_the_agents_first_message_in_one_task_start_the_countdown(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    """Both signals come before any worker runs, so the first task takes them in together
    with the start (the dev-server fault test's race: a task lost with a dead server)."""
    stubs = StubActivities(time_env)
    handle = await _start(time_env, task_queue)
    await handle.signal(ConversationWorkflow.agent_assigned, AgentAssigned("alice"))
    await handle.signal(ConversationWorkflow.message_posted, _posted(3, Role.AGENT))
    async with _worker(time_env, stubs, task_queue):
        await _counts_down_from(handle, stubs, 3)


async def test_a_queued_conversation_takes_in_its_agent_and_their_message_together(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    """Queued first; then, with no worker running, the assignment and the agent's message."""
    stubs = StubActivities(time_env)
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        await _seen(handle, lambda s: s.queued_at is not None, "the conversation in the queue")
    await handle.signal(ConversationWorkflow.agent_assigned, AgentAssigned("alice"))
    await handle.signal(ConversationWorkflow.message_posted, _posted(3, Role.AGENT))
    async with _worker(time_env, stubs, task_queue):
        await _counts_down_from(handle, stubs, 3)


# --- flows that older code wrote ------------------------------------------------------------

ACTIVE_WITH_AGENT = {
    Stage.ASSIGNED,
    Stage.AWAITING_FIRST_REPLY,
    Stage.VISITOR_WROTE_LAST,
    Stage.COUNTING_DOWN,
    Stage.WARNED,
    Stage.CLOSED,
}


CONVERTER = DataConverter.default.payload_converter


def _read(fields: dict[str, Any]) -> ConversationFlow:
    """A flow's fields as the data converter reads them from the wire (JSON)."""
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(fields).encode())
    [flow] = CONVERTER.from_payloads([payload], [ConversationFlow])
    return flow


# The bot's stage came after the stages: no code that wrote the older flags has a bot flow.
@pytest.mark.parametrize("stage", [stage for stage in Stage if stage != Stage.BOT])
def test_every_stage_survives_a_trip_through_the_older_flags(stage: Stage) -> None:
    armed = stage in (Stage.COUNTING_DOWN, Stage.WARNED)
    flow = ConversationFlow(
        conversation_id="c1",
        channel="web",
        stage=stage,
        state=stage.state,
        agent_id="alice" if stage in ACTIVE_WITH_AGENT else None,
        countdown=IdleCountdown(agent_message_seq=5 if armed else 0),
    )
    write_older_flags(flow)
    fields = json.loads(CONVERTER.to_payloads([flow])[0].data)
    del fields["stage"]  # as code before the stages wrote it
    older = _read(fields)
    assert older.stage == Stage.ROUTING
    read_older_flags(older)
    assert older.stage == stage
    assert replace(older, stage=stage) == flow


def test_a_flow_continued_by_code_before_the_stages_reads_its_stage() -> None:
    """The recorded run that continued as new under the flags: its agent wrote last."""
    path = Path(__file__).parent / "histories" / "continued_as_new.v3.json"
    started = json.loads(path.read_text())["events"][0]
    payload = started["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    fields = json.loads(b64decode(payload["data"]))
    assert "stage" not in fields and fields["routed"] and fields["agent_replied"]
    flow = _read(fields)
    read_older_flags(flow)
    assert flow.stage == Stage.COUNTING_DOWN
    assert flow.countdown.agent_message_seq == fields["last_message_seq"]


def _taken_meanwhile(agent_id: str) -> ApplicationError:
    return ApplicationError(
        "taken meanwhile", agent_id, type=ASSIGNED_MEANWHILE, non_retryable=True
    )


def _found_newer(seq: int, sender_role: str) -> ApplicationError:
    return ApplicationError(
        "a newer message is stored", seq, seq, sender_role, type=NEWER_MESSAGE, non_retryable=True
    )


async def test_a_requeue_declined_for_a_stored_reply_goes_on_from_that_reply(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    """Alice's reply (seq 6) was stored but its signal lost: the requeue finds it and declines;
    the workflow takes it in as the signal would have (the countdown runs), requeues nobody."""
    stubs = StubActivities(
        time_env, general=QueuePlacement("general", accepted=True, first_reply_timeout_s=120)
    )
    stubs.declines["requeue_unanswered"] = _found_newer(6, Role.AGENT)
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        await _with_agent(handle, "alice")
        await time_env.sleep(130)
        going_on = await _seen(handle, lambda s: s.last_message_seq == 6, "the stored reply")
        assert (going_on.state, going_on.agent_id) == ("active", "alice")
        assert going_on.idle_warning_at is not None and going_on.first_reply_due_at is None
        await time_env.sleep(185)  # and the countdown it began warns in time
        await _seen(handle, lambda s: s.idle_close_at is not None, "the warning")
        assert [w.agent_message_seq for w in stubs.args("send_idle_warning")] == [6]
        assert len(stubs.args("requeue_unanswered")) == 1


async def test_an_idle_warning_declined_for_a_newer_visitor_message_stops_the_countdown(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The visitor answered (seq 7) but the signal was lost: no warning, no close; the
    visitor wrote last, so nothing counts down until the agent writes again."""
    stubs = StubActivities(time_env)
    stubs.declines["send_idle_warning"] = _found_newer(7, Role.VISITOR)
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        await _with_agent(handle, "alice")
        await handle.signal(ConversationWorkflow.message_posted, _posted(5, Role.AGENT))
        await _seen(handle, lambda s: s.idle_warning_at is not None, "the countdown")
        await time_env.sleep(185)
        stopped = await _seen(handle, lambda s: s.last_message_seq == 7, "the stored reply")
        assert (stopped.state, stopped.idle_warning_at, stopped.idle_close_at) == (
            "active",
            None,
            None,
        )
        await time_env.sleep(3600)
        assert (await handle.query(ConversationWorkflow.snapshot)).state == "active"
        assert len(stubs.args("send_idle_warning")) == 1 and not stubs.args("close_conversation")
        await handle.signal(ConversationWorkflow.message_posted, _posted(8, Role.AGENT))
        await _seen(handle, lambda s: s.idle_warning_at is not None, "a countdown from seq 8")


async def test_an_overflow_close_declined_for_an_agent_takes_that_agent(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The wait ran out towards a left message, but alice was assigned in the database just
    before (her signal on its way): the close declines and the conversation is hers."""
    stubs = StubActivities(
        time_env,
        general=QueuePlacement(
            "general", accepted=True, max_queue_wait_s=60, overflow_to="left_message"
        ),
    )
    stubs.declines["close_conversation"] = _taken_meanwhile("alice")
    async with _worker(time_env, stubs, task_queue):
        handle = await _start(time_env, task_queue)
        await _seen(handle, lambda s: s.overflow_at is not None, "the overflow timer")
        await time_env.sleep(70)
        served = await _seen(handle, lambda s: s.state == "active", "alice's conversation")
        assert served.agent_id == "alice" and served.close_reason is None
        [declined] = stubs.args("close_conversation")
        assert (declined.reason, declined.unless_assigned) == ("overflow", True)
        assert stubs.args("record_assignment") == [AssignmentRecord("c1", 1)]
