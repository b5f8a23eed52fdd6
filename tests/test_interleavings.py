"""Interleavings (issue 12): random mixes of what happens to conversations, on a dev server that
suggests continue-as-new after a few events or bytes, with the product deployed as processes.

Hypothesis draws the scenarios (seeded: the same ones every run): both sides' messages, some
of them lost (stored as the API stores them, never signalled: the worker's reconciler and the
workflow's own checks must repair that), transfers to agents and groups, closes by the visitor,
the agent or an admin, ratings, pauses in which first-reply timeouts, idle warnings and closes
and rating windows pass, and worker restarts (the worker process killed and started again).
Each side of each conversation acts in order, the sides and conversations at once, up to a
pause (which lets what is under way finish first).

Then every conversation is closed (an admin's close, answered 200 or 409) and must complete,
and the checks follow:
- every update (transfer, close, rating) is answered 2xx or refused 4xx within UPDATE_BOUND,
  its 503s retried as the README asks of clients;
- no run of any workflow accepted an update it never finished;
- no idle warning or idle close follows a newer stored message, no first-reply requeue follows
  a stored reply of the agent (the event log against the message rows);
- every run, each link of the continue-as-new chains included, replays against today's code;
- the database and the workflow agree: state, close reason, agent, rating; and every agent's
  load is back to nothing.

CI runs a few scenarios (a couple of minutes on two cores); SWITCHBOARD_SOAK=1 runs many more,
longer ones (SWITCHBOARD_SOAK_SEED picks their seed).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import httpx
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, seed, settings
from hypothesis import strategies as st
from sqlmodel import col, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from domain.types import EventType, Role
from store.db import Database
from store.messages import ConversationClosed, ConversationNotActive, NotYourConversation
from store.models import Agent, Conversation
from tests.support.api import ApiClient, Visit
from tests.support.data import store_unsignalled
from tests.support.decisions import transcript, wrong_decisions
from tests.support.histories import (
    completed,
    continue_as_new_reasons,
    replay,
    runs,
    standing_still,
    unfinished_updates,
)
from tests.support.processes import Deployment
from tests.support.temporal import address, start_dev_server
from workflows import ConversationWorkflow
from workflows.gateway import workflow_id

pytestmark = pytest.mark.e2e

SOAK = os.environ.get("SWITCHBOARD_SOAK") == "1"
EXAMPLES = 30 if SOAK else 2
MAX_CONVERSATIONS = 4 if SOAK else 2
MAX_STEPS = 40 if SOAK else 14

# Continue-as-new is suggested after 30 events or 5000 bytes (a fresh run starts well below
# both): a conversation goes through several runs, some ended by the count, some by the size
# (a transfer's note is in its update); the statistics count both.
TINY_HISTORY = {
    "limit.historyCount.suggestContinueAsNew": 30,
    "limit.historySize.suggestContinueAsNew": 5000,
}
# A visitor's token ends with the conversation's rating window: then 401.
_ENDED_FOR_THE_VISITOR = {"visitor": (401,)}
TIMEOUTS = {"idle_warning_after": "2s", "idle_close_after": "2s", "rating_window": "3s"}
GROUPS = (
    '[[skill_groups]]\nname = "general"\nagent_first_reply_timeout = "3s"\n'
    '[[skill_groups]]\nname = "after_sales"\n'
)
# Decisions a scenario's statistics count (pytest --hypothesis-show-statistics).
DECISIONS = {EventType.IDLE_WARNING, EventType.REQUEUED, EventType.TRANSFERRED, EventType.CLOSED}
# Idle warning and close, and a second to spare: what a lost signal would mislead has happened.
QUIET = 5.0
# How long an update (or a message) may take to be answered, its 503s retried.
UPDATE_BOUND = 90.0
# How long a closed conversation may take to complete (its rating window is 3 seconds).
SETTLE_BOUND = 90.0


# --- the steps of a scenario ------------------------------------------------------------------

Side = Literal["visitor", "agent"]


@dataclass(frozen=True)
class Say:
    conversation: int
    by: Side
    lost: bool = False  # stored, never signalled


@dataclass(frozen=True)
class Transfer:
    conversation: int
    to_group: str | None = None  # None: to another agent
    target: int = 0  # which of the other agents
    note: int = 0  # the note's length


@dataclass(frozen=True)
class Close:
    conversation: int
    by: Literal["visitor", "agent", "admin"]


@dataclass(frozen=True)
class Rate:
    conversation: int
    score: int = 5


@dataclass(frozen=True)
class Pause:
    """What is under way finishes, then time passes (timers fire)."""

    seconds: float


@dataclass(frozen=True)
class RestartWorker:
    pass


Step = Say | Transfer | Close | Rate | Pause | RestartWorker


@dataclass(frozen=True)
class Scenario:
    conversations: int
    steps: tuple[Step, ...]


def _steps(conversations: int) -> st.SearchStrategy[Step]:
    which = st.integers(0, conversations - 1)
    say = st.builds(Say, which, st.sampled_from(["visitor", "agent", "agent"]), st.booleans())
    transfer = st.builds(
        Transfer,
        which,
        st.sampled_from([None, None, "general", "after_sales"]),
        st.integers(0, 1),
        st.sampled_from([0, 0, 600, 1500]),
    )
    close = st.builds(Close, which, st.sampled_from(["visitor", "agent", "admin"]))
    rate = st.builds(Rate, which, st.integers(1, 5))
    pause = st.builds(Pause, st.sampled_from([0.5, 1.0, 2.0, 3.5]))
    restart = st.just(RestartWorker())
    # Weighted by repetition: mostly messages and pauses.
    return st.one_of(
        say, say, say, say, pause, pause, pause, transfer, transfer, close, rate, restart
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    conversations = draw(st.integers(1, MAX_CONVERSATIONS))
    steps = draw(st.lists(_steps(conversations), min_size=6, max_size=MAX_STEPS))
    return Scenario(conversations, tuple(steps))


# One scenario written out, played first: each kind of step, and what a lost signal misleads
# (an idle warning after the visitor's unsignalled message, a requeue after the agent's).
EVERY_KIND = Scenario(
    2,
    (
        Say(0, "agent"),
        Say(1, "agent", lost=True),
        Pause(0.5),
        Say(0, "visitor", lost=True),
        Pause(3.5),
        Say(0, "visitor"),
        Transfer(0, note=1500),
        RestartWorker(),
        Say(0, "agent"),
        Say(1, "visitor"),
        Transfer(1, to_group="after_sales"),
        Pause(2.0),
        Close(0, "agent"),
        Rate(0, 4),
        Close(1, "visitor"),
    ),
)


# --- the deployment the scenarios play on ------------------------------------------------------


@pytest.fixture(scope="module")
async def tiny_history_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server(dynamic_config=TINY_HISTORY)
    yield env
    await env.shutdown()


@pytest.fixture(scope="module")
def deployment(
    tiny_history_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """An API and a worker process (its reconciler every second) on SQLite."""
    directory = tmp_path_factory.mktemp("interleavings")
    deployed = Deployment(
        directory=directory,
        database_url=f"sqlite:///{directory / 'switchboard.db'}",
        temporal_address=address(tiny_history_env),
        timeouts=TIMEOUTS,
        groups=GROUPS,
    )
    yield deployed
    deployed.stop(faults=True)  # the workers were killed on purpose


@pytest.fixture(scope="module")
def database(deployment: Deployment) -> Iterator[Database]:
    """The deployment's database, as the test reads it (and loses signals in it)."""
    db = Database(deployment.settings.database_url)
    yield db
    db.dispose()


# --- playing a scenario -----------------------------------------------------------------------


@dataclass
class Play:
    """One scenario on the deployment: its agents and conversations, and what it saw."""

    deployment: Deployment
    api: ApiClient
    db: Database
    temporal: Client
    agents: dict[str, str] = field(default_factory=dict)  # id → token
    visits: list[Visit] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # what each request answered, in order
    problems: list[str] = field(default_factory=list)

    async def set_up(self, conversations: int) -> None:
        for groups in (["general"], ["general"], ["after_sales"]):
            agent = await self.api.create_agent(skill_groups=groups, max_concurrent=2)
            self.agents[agent.id] = agent.token
        self.visits = [await self.api.start_conversation() for _ in range(conversations)]
        for visit in self.visits:  # the general agents have room for them all
            await self.api.wait_for_state(visit.conversation_id, None, "active", timeout=60)

    async def request(
        self, what: str, send: Callable[[], Awaitable[httpx.Response]], *allowed: int
    ) -> httpx.Response:
        """Send until answered otherwise than 503 (a client retries those), within
        UPDATE_BOUND; the answer must be one of `allowed`."""
        deadline = time.monotonic() + UPDATE_BOUND
        while True:
            try:
                response = await send()
            except httpx.TimeoutException:
                raise AssertionError(f"{what}: no answer in {UPDATE_BOUND}s") from None
            self.answers.append(f"{what}: {response.status_code}")
            if response.status_code != 503:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still 503 after {UPDATE_BOUND}s")
            await asyncio.sleep(1)
        assert response.status_code in allowed, f"{what}: {response.status_code} {response.text}"
        return response

    async def holder(self, visit: Visit) -> str | None:
        view = await self.api.conversation(visit.conversation_id)
        return view["agent_id"] if view["state"] == "active" else None

    async def say(self, step: Say) -> None:
        visit = self.visits[step.conversation]
        cid = visit.conversation_id
        if step.by == "visitor":
            role, sender, token = Role.VISITOR, f"visitor:{cid}", visit.token
        else:
            holder = await self.holder(visit)
            if holder is None:
                return
            role, sender, token = Role.AGENT, holder, self.agents[holder]
        text = f"{step.by} says {uuid.uuid4().hex[:6]}"
        if step.lost:
            try:
                await asyncio.to_thread(
                    store_unsignalled,
                    self.db,
                    conversation_id=cid,
                    sender_role=role,
                    sender_id=sender,
                    content=text,
                )
            except (ConversationClosed, ConversationNotActive, NotYourConversation):
                return
            event(f"{step.by} message never signalled")
            return
        message_id = uuid.uuid4().hex  # a retry after a 503 sends the same message again
        await self.request(
            f"{cid} {step.by} message",
            lambda: self.api.post_message(cid, token, text, message_id),
            201,
            403,
            409,
            *_ENDED_FOR_THE_VISITOR.get(step.by, ()),
        )

    async def transfer(self, step: Transfer) -> None:
        visit = self.visits[step.conversation]
        holder = await self.holder(visit)
        if step.to_group is not None:
            target = {"to_skill_group": step.to_group}
        else:
            others = [agent_id for agent_id in self.agents if agent_id != holder]
            target = {"to_agent_id": others[step.target % len(others)]}
        token = self.agents[holder] if holder else None  # nobody holds it: the admin tries
        note = "n" * step.note if step.note else None
        await self.request(
            f"{visit.conversation_id} transfer {target}",
            lambda: self.api.transfer(visit.conversation_id, token, note=note, **target),
            200,
            403,
            409,
        )

    async def close(self, step: Close) -> None:
        visit = self.visits[step.conversation]
        if step.by == "visitor":
            token: str | None = visit.token
        elif step.by == "agent":
            holder = await self.holder(visit)
            if holder is None:
                return
            token = self.agents[holder]
        else:
            token = None
        await self.request(
            f"{visit.conversation_id} close by {step.by}",
            lambda: self.api.close(visit.conversation_id, token),
            200,
            403,
            409,
            *_ENDED_FOR_THE_VISITOR.get(step.by, ()),
        )

    async def rate(self, step: Rate) -> None:
        visit = self.visits[step.conversation]
        await self.request(
            f"{visit.conversation_id} rating",
            lambda: self.api.rate(*visit, step.score),
            201,
            409,
            *_ENDED_FOR_THE_VISITOR["visitor"],
        )

    async def restart_worker(self) -> None:
        await asyncio.to_thread(self.deployment.kill, "worker-0")
        await asyncio.to_thread(self.deployment.restart_worker)
        event("worker restarted")

    async def run(self, step: Step) -> None:
        match step:
            case Say():
                await self.say(step)
            case Transfer():
                await self.transfer(step)
            case Close():
                await self.close(step)
            case Rate():
                await self.rate(step)
            case RestartWorker():
                await self.restart_worker()
            case Pause():
                raise AssertionError("pauses hold the dispatch of steps, they run in no lane")

    @staticmethod
    def lane(step: Step) -> str:
        """Steps of one lane run in order; lanes run at once."""
        match step:
            case Say(conversation=c, by="visitor") | Close(conversation=c, by="visitor"):
                return f"visitor-{c}"
            case Rate(conversation=c):
                return f"visitor-{c}"
            case Say(conversation=c) | Transfer(conversation=c) | Close(conversation=c):
                return f"staff-{c}"
        return "worker"

    async def play(self, steps: tuple[Step, ...]) -> None:
        lanes: dict[str, asyncio.Task[None]] = {}

        async def after(previous: asyncio.Task[None] | None, step: Step) -> None:
            if previous is not None:
                await previous
            await self.run(step)

        async with asyncio.TaskGroup() as group:
            for step in steps:
                if isinstance(step, Pause):
                    await asyncio.gather(*lanes.values())
                    lanes.clear()
                    await asyncio.sleep(step.seconds)
                    continue
                lane = self.lane(step)
                lanes[lane] = group.create_task(after(lanes.get(lane), step))

    async def settle(self) -> None:
        """Every conversation closed (by the admin, if it was not) and its workflow completed."""
        await asyncio.sleep(QUIET)
        for visit in self.visits:
            await self.request(
                f"{visit.conversation_id} closed at the end",
                lambda visit=visit: self.api.close(visit.conversation_id),
                200,
                409,
            )
        for visit in self.visits:
            handle = self.temporal.get_workflow_handle(workflow_id(visit.conversation_id))
            await completed(handle, timeout=SETTLE_BOUND)

    async def check(self) -> None:
        for visit in self.visits:
            cid = visit.conversation_id
            log = await asyncio.to_thread(transcript, self.db, cid)
            self.problems += wrong_decisions(log)
            for decision in {e.type for e in log.events} & DECISIONS:
                event(f"decided: {decision}")
            histories = await runs(self.temporal, cid)
            await replay(histories)
            for history in histories:
                for reason in continue_as_new_reasons(history):
                    event(f"continued as new: {reason}")
                for update in unfinished_updates(history):
                    self.problems.append(f"{cid}: {update} never finished in its run")
            handle = self.temporal.get_workflow_handle(workflow_id(cid))
            known = await handle.query(ConversationWorkflow.snapshot)
            with self.db.read() as session:
                row = session.get(Conversation, cid)
            assert row is not None
            stored = (row.state, row.close_reason, row.agent_id, row.rating_status)
            told = (known.state, known.close_reason, known.agent_id, known.rating_status)
            event(f"closed: {row.close_reason}, rating {row.rating_status}")
            if stored != told or await handle.result() != row.close_reason:
                self.problems.append(f"{cid}: the database says {stored}, the workflow {told}")
        with self.db.read() as session:
            loads = {
                agent.id: agent.active_count
                for agent in session.exec(select(Agent).where(col(Agent.id).in_(self.agents)))
            }
        if any(loads.values()):
            self.problems.append(f"agents' loads not given back: {loads}")

    async def tear_down(self) -> None:
        """The scenario's agents go offline: the next scenario's conversations are not theirs."""
        for agent_id in self.agents:
            await self.api.set_status(agent_id, None, "offline")


def _first(failure: BaseException) -> BaseException:
    """The first failure inside (a lane's, out of the task group's exception group)."""
    while isinstance(failure, BaseExceptionGroup):
        failure = failure.exceptions[0]
    return failure


_seeded = seed(int(os.environ.get("SWITCHBOARD_SOAK_SEED", "12"))) if SOAK else (lambda f: f)


@pytest.mark.timeout(7200 if SOAK else 900)
@_seeded
@settings(
    max_examples=EXAMPLES,
    derandomize=not SOAK,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: each example takes tens of seconds
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)
@example(EVERY_KIND)
@given(scenario=scenarios())
async def test_no_interleaving_leaves_a_conversation_stuck_or_decided_wrongly(
    tiny_history_env: WorkflowEnvironment,
    deployment: Deployment,
    database: Database,
    scenario: Scenario,
) -> None:
    async with deployment.client(timeout=UPDATE_BOUND) as api:
        play = Play(deployment, api, database, tiny_history_env.client)
        await play.set_up(scenario.conversations)
        try:
            await play.play(scenario.steps)
            await play.settle()
            await play.check()
        except (AssertionError, ExceptionGroup) as failed:
            stuck, wrong = [], []
            for cid, _token in play.visits:
                stuck.append(
                    await standing_still(play.temporal.get_workflow_handle(workflow_id(cid)))
                )
                wrong += wrong_decisions(await asyncio.to_thread(transcript, database, cid))
            raise AssertionError(
                f"{_first(failed)}\nworkflows: {stuck}\ndecided against the stored truth: "
                f"{wrong}\nanswers: {play.answers}"
            ) from failed
        finally:
            await play.tear_down()
        assert not play.problems, "\n".join(play.problems)
