"""A signal per message, and nothing else per message (issue 20 §1).

- What a message costs the workflow: from a real conversation's history, the commands after a
  run of both sides' messages, per kind. Only a change of the side that wrote last (or the
  agent's first reply) may start a timer; no message runs an activity, local or not, or upserts.
- What messages decide: random interleavings of both sides' messages and pauses, on the
  time-skipping server, give the warnings, idle closes and first-reply requeues a small model
  of the lifecycle (written here) says, at the times it says, to a step of the test's clock.

CI runs a few interleavings; SWITCHBOARD_SOAK=1 runs many more (SWITCHBOARD_SOAK_SEED picks
their seed). The store is not the subject: SQLite alone.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st
from temporalio.api.enums.v1 import EventType as HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from domain.types import EventType
from tests.support.backends import on_sqlite_alone
from tests.support.policy import write_policy
from tests.support.system import StartSystem, System
from workflows.gateway import workflow_id

pytestmark = on_sqlite_alone("db")

SOAK = os.environ.get("SWITCHBOARD_SOAK") == "1"
EXAMPLES = 60 if SOAK else 8
MAX_STEPS = 16 if SOAK else 8

# The model's clock: steps of STEP seconds. The test sends each step's messages on a step's
# boundary, so a timer armed by one falls due on a later boundary (plus the moments the test's
# own work took, far less than a step): the step it falls in is known.
STEP = 30
WARNING_STEPS = 3  # idle_warning_after
CLOSE_STEPS = 2  # idle_close_after
FIRST_REPLY_STEPS = 4  # agent_first_reply_timeout
POLICY = {
    "idle_warning_after": f"{WARNING_STEPS * STEP}s",
    "idle_close_after": f"{CLOSE_STEPS * STEP}s",
    "groups": (
        '[[skill_groups]]\nname = "general"\n'
        f'agent_first_reply_timeout = "{FIRST_REPLY_STEPS * STEP}s"\n'
    ),
}
DECISIONS = (EventType.IDLE_WARNING, EventType.CLOSED, EventType.REQUEUED)

Side = Literal["visitor", "agent"]
Decision = tuple[str, int]  # (the event's type, the agent message it follows: its seq, or 0)


@dataclass
class Chat:
    """Worker + API on the time-skipping server with POLICY, and its agents' tokens (one
    system for every example of a property test: its fixtures are the test's)."""

    system: System
    agents: dict[str, str] = field(default_factory=dict)


@pytest.fixture
async def chat(time_env: WorkflowEnvironment, make_system: StartSystem) -> Chat:
    return Chat(await make_system(time_env, **POLICY))


# --- what a message costs ---------------------------------------------------------------------


def _kinds(history: WorkflowHistory, after: int) -> Counter[str]:
    """The history's events after the first `after`, counted by what they cost."""
    kinds: Counter[str] = Counter()
    for event in history.events[after:]:
        match event.event_type:
            case HistoryEvent.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                kinds["signals"] += 1
            case HistoryEvent.EVENT_TYPE_TIMER_STARTED:
                kinds["timers started"] += 1
            case HistoryEvent.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                kinds["activities"] += 1
            case HistoryEvent.EVENT_TYPE_MARKER_RECORDED:
                name = event.marker_recorded_event_attributes.marker_name
                local = name == "core_local_activity"
                kinds["local activities" if local else f"markers ({name})"] += 1
            case HistoryEvent.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
                kinds["upserts"] += 1
            case HistoryEvent.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
                kinds["memo updates"] += 1
    return kinds


async def test_a_message_costs_its_signal_and_a_flip_one_timer(chat: Chat) -> None:
    system = chat.system
    _agent_id, agent = await system.create_agent()
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    # The first reply is due once the workflow has recorded its agent (the database says
    # active as the assignment commits, before the workflow takes in its signal).
    await system.pending_timer(cid, "first_reply_due_at")
    handle = system.env.client.get_workflow_handle(workflow_id(cid))
    before = len((await handle.fetch_history()).events)

    # Each message its own workflow task; the sides flip to the agent three times (the first
    # reply among them) and back to the visitor twice.
    sides: list[Side] = ["visitor"] * 3 + ["agent"] * 3 + ["visitor"] * 2 + ["agent"] * 2
    sides += ["visitor"] + ["agent"] * 4
    for side in sides:
        token = agent if side == "agent" else visitor
        await system.workflow(cid, seen=await system.say(cid, token, f"a {side} message"))

    assert _kinds(await handle.fetch_history(), before) == {
        "signals": len(sides),
        # The first flip's; it runs on through the visitor's turns (the chat is quicker than
        # the idle warning), and the agent's messages bring the policy's durations (no read).
        "timers started": 1,
    }


async def test_a_policy_edit_applies_to_the_next_countdown_whatever_timer_runs_on(
    chat: Chat,
) -> None:
    """The countdown's timer runs on through the visitor's turn, yet each countdown warns at
    its own durations: a timer that would fire too late for a shortened warning is replaced,
    one that fires too early for a lengthened one re-arms."""
    system = chat.system
    _agent_id, agent = await system.create_agent()
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")

    def warning_after(seconds: int) -> None:
        write_policy(
            system.policy_path,
            idle_warning_after=f"{seconds}s",
            idle_close_after=POLICY["idle_close_after"],
            groups=POLICY["groups"],
        )

    async def at(elapsed: int) -> None:  # seconds since the agent's first reply
        nonlocal now
        await system.env.sleep(elapsed - now)
        now = elapsed

    now = 0
    await system.say(cid, agent, "Hello")  # warning due at 90 s
    await at(10)
    await system.say(cid, visitor, "Hi")  # the timer runs on
    warning_after(30)
    await at(20)
    shortened = await system.say(cid, agent, "Your parcel left today")  # due at 50 s, not 90
    await at(55)
    warned = [(EventType.IDLE_WARNING, shortened)]
    await _decisions_are(system, cid, warned, "the shortened warning, at its own time")

    await at(60)
    await system.say(cid, agent, "Are you there?")  # a countdown of 30 s: its timer due at 90
    await at(65)
    await system.say(cid, visitor, "Yes")
    warning_after(120)
    await at(70)
    lengthened = await system.say(cid, agent, "Good")  # due at 190: the timer re-arms at 90
    await at(180)
    await _decisions_are(system, cid, warned, "no warning when the earlier timer fired")
    await at(195)
    warned.append((EventType.IDLE_WARNING, lengthened))
    await _decisions_are(system, cid, warned, "the lengthened warning, at its own time")


# --- what messages decide: the model ----------------------------------------------------------


@dataclass
class Model:
    """Today's lifecycle of an active conversation, as far as messages and time decide it, on
    the steps' clock: the agent owes a first reply; the idle countdown runs from the newest
    agent message while the agent has the last word; the warning, then the close."""

    stage: Literal["first_reply", "visitor", "counting", "warned", "closed", "requeued"] = (
        "first_reply"
    )
    agent_since: int = 0  # the step of the newest agent message (counting)
    agent_seq: int = 0  # its seq
    warned_at: int = 0
    decisions: list[Decision] = field(default_factory=list)

    @property
    def over(self) -> bool:
        return self.stage in ("closed", "requeued")

    def time_passes(self, step: int) -> None:
        """Up to the boundary of `step`: the timers due by then fire."""
        if self.stage == "first_reply" and step >= FIRST_REPLY_STEPS:
            self.stage = "requeued"
            self.decisions.append((EventType.REQUEUED, 0))
        if self.stage == "counting" and step >= self.agent_since + WARNING_STEPS:
            self.stage, self.warned_at = "warned", self.agent_since + WARNING_STEPS
            self.decisions.append((EventType.IDLE_WARNING, self.agent_seq))
        if self.stage == "warned" and step >= self.warned_at + CLOSE_STEPS:
            self.stage = "closed"
            self.decisions.append((EventType.CLOSED, 0))

    def message(self, step: int, side: Side, seq: int) -> None:
        if self.over:
            return
        if side == "agent":
            self.stage, self.agent_since, self.agent_seq = "counting", step, seq
        elif self.stage != "first_reply":
            self.stage = "visitor"


Steps = list[list[Side]]
SIDES = st.sampled_from(["visitor", "agent"])


def interleavings() -> st.SearchStrategy[Steps]:
    """Each step: a burst of messages (either side, in any order) or a pause."""
    burst = st.lists(SIDES, max_size=4)
    return st.lists(st.one_of(st.just([]), burst), min_size=1, max_size=MAX_STEPS)


def _steps(steps: Steps) -> Iterator[tuple[int, list[Side]]]:
    """The scenario's steps, then a pause long enough for whatever it left to be decided."""
    yield from enumerate(steps)
    for step in range(len(steps), len(steps) + WARNING_STEPS + CLOSE_STEPS + 1):
        yield step, []


async def _decided(system: System, cid: str) -> list[Decision]:
    decided = []
    for event in await system.events(cid):
        if event["type"] in DECISIONS:
            follows = event["data"].get("after_agent_message_seq", 0) or 0
            decided.append((event["type"], follows))
    return decided


async def _decisions_are(system: System, cid: str, expected: list[Decision], when: str) -> None:
    """What is due falls due in the test's sleep; its activity writes it in real time."""
    waited = 0.0
    while (decided := await _decided(system, cid)) != expected and waited < 10:
        await asyncio.sleep(0.05)
        waited += 0.05
    assert decided == expected, when


async def _play(chat: Chat, steps: Steps) -> None:
    system = chat.system
    # A fresh agent for each interleaving (the least loaded, so likely the one who takes it).
    agent_id, token = await system.create_agent(max_concurrent=10)
    chat.agents[agent_id] = token
    cid, visitor = await system.start_conversation()
    agent = chat.agents[(await system.wait_for_state(cid, None, "active"))["agent_id"]]
    model = Model()
    for step, burst in _steps(steps):
        if step:
            await system.env.sleep(STEP)
            model.time_passes(step)
        await _decisions_are(system, cid, model.decisions, f"step {step} of {steps}")
        if model.over:
            break
        for side in burst:
            seq = await system.say(cid, agent if side == "agent" else visitor, f"{side} {step}")
            model.message(step, side, seq)
    if model.stage != "closed":
        await system.close(cid)  # an admin's: the next interleaving starts afresh


_seeded = seed(int(os.environ.get("SWITCHBOARD_SOAK_SEED", "20"))) if SOAK else (lambda f: f)


@pytest.mark.timeout(3600 if SOAK else 300)
@_seeded
@settings(
    max_examples=EXAMPLES,
    derandomize=not SOAK,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: each example takes seconds
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# The agent writes on while the countdown runs: warned 3 steps after the newer message.
@example(steps=[["agent"], [], ["agent", "agent"], ["visitor"], ["agent"], ["agent"]])
# A warning, the agent again (the close is off), the visitor before the first reply.
@example(steps=[["visitor", "visitor", "agent"], [], [], ["agent"], [], ["agent"]])
@example(steps=[["visitor"], [], ["visitor"]])  # never answered: requeued
@given(steps=interleavings())
async def test_interleaved_messages_decide_as_the_model_says(chat: Chat, steps: Steps) -> None:
    await _play(chat, steps)
