"""Determinism: conversations' histories replay against today's workflow code, to the same end.

Each scenario runs on the time-skipping test server (real worker, API and database; the dev
server for one that stops its worker, and for a conversation that continues as new); its
history is replayed at once and must end as the scenario did (close reason, rating status). The
histories recorded by earlier versions of the workflow (tests/histories/*.json) replay too, to
the end their scenario names: a change to the workflow that would break conversations already
running must go behind `workflow.patched` (workflows/patches.py lists them all). Record a
version's histories with

    SWITCHBOARD_RECORD_HISTORIES=1 .venv/bin/pytest tests/test_replay.py -k "scenario or continued"

and keep the old files: each is a version conversations may still be running.
"""

from __future__ import annotations

import json
import os
import re
from base64 import b64decode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    Replayer,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from domain.types import MessagePosted, Role
from store.db import Database
from tests.support.api import ADMIN, bearer
from tests.support.backends import on_sqlite_alone
from tests.support.policy import CLOSING_AT_23_59, DEFAULT_GROUPS, the_next_closing
from tests.support.system import StartSystem, System, assigned_while_no_worker_runs
from workflows import ConversationWorkflow
from workflows.gateway import workflow_id
from workflows.patches import (
    AGENT_WROTE_BEFORE_ACTIVE,
    DEPRECATED,
    IDLE_TIMER_RUNS_ON,
    LOCAL_ACTIVITIES,
    MESSAGE_DECISIONS,
    PATCH_IDS,
)

HISTORIES = Path(__file__).parent / "histories"
RECORD = os.environ.get("SWITCHBOARD_RECORD_HISTORIES") == "1"
# The part of a recorded file's name that says which workflow code made it. v3: the code of
# 238e4fa, whose flow had no stage; v4: with the stages (only the continued conversation, whose
# input carries one: the other inputs are fresh starts, as in v3); v5: requests answered before
# continue-as-new (the continued conversation, which reaches that patch) and the close at the
# group's closing (only the scenario that takes it); v6: messages that decide nothing cost no
# command (only the scenario whose messages meet a countdown and a first reply due); v7: the
# idle countdown's timer runs on through the visitor's turn, the agent's messages bring the
# policy's durations (that scenario again).
VERSION = "v7"

Skip = Callable[[float], Awaitable[None]]
FIRST_REPLY_IN_2_MINUTES = '[[skill_groups]]\nname = "general"\nagent_first_reply_timeout = "2m"\n'


@dataclass(frozen=True)
class Ending:
    close_reason: str
    rating_status: str


@dataclass(frozen=True)
class Scenario:
    play: Callable[[System, Skip], Awaitable[str]]
    ending: Ending
    groups: str = DEFAULT_GROUPS  # the policy's skill groups (TOML)
    # On the dev server, in real time, with second-long timers: for a scenario that stops its
    # worker (the time-skipping server keeps the stopped worker's sticky queue for ever).
    dev_server: bool = False


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    close_reason: str, rating_status: str, *, groups: str = DEFAULT_GROUPS, dev_server: bool = False
) -> Callable[[Callable[[System, Skip], Awaitable[str]]], Callable[[System, Skip], Awaitable[str]]]:
    """Register a scenario and the end it must reach (live and on every replay of it)."""

    def register(
        play: Callable[[System, Skip], Awaitable[str]],
    ) -> Callable[[System, Skip], Awaitable[str]]:
        SCENARIOS[play.__name__] = Scenario(
            play, Ending(close_reason, rating_status), groups, dev_server
        )
        return play

    return register


async def _active(system: System) -> tuple[str, str, str, str]:
    agent_id, agent = await system.create_agent()
    conversation_id, visitor = await system.start_conversation()
    await system.wait_for_state(conversation_id, visitor, "active")
    return agent_id, agent, conversation_id, visitor


async def _post(system: System, path: str, token: str, body: dict[str, object]) -> None:
    response = await system.http.post(path, headers=bearer(token), json=body)
    assert response.status_code in (200, 201), response.text


@scenario("idle_timeout", "expired")
async def idle_timeout_rating_expired(system: System, skip: Skip) -> str:
    _agent_id, agent, cid, visitor = await _active(system)
    await system.post_message(cid, visitor, "Hi")
    await system.post_message(cid, agent, "Hello, how can I help?")
    await skip(400)  # the idle warning, then the auto-close
    await system.wait_for_event(cid, visitor, "rating.invited")
    await skip(3700)  # the rating window passes
    return cid


@scenario("agent_closed", "rated")
async def agent_closed_rated(system: System, skip: Skip) -> str:
    _agent_id, agent, cid, visitor = await _active(system)
    await system.post_message(cid, visitor, "Where is my parcel?")
    await system.post_message(cid, agent, "On its way, it arrives tomorrow.")
    await _post(system, f"/v1/conversations/{cid}/close", agent, {})
    await _post(system, f"/v1/conversations/{cid}/rating", visitor, {"score": 5, "resolved": True})
    return cid


@scenario("visitor_closed", "expired")
async def transferred_then_visitor_closed(system: System, skip: Skip) -> str:
    _first_id, first, cid, visitor = await _active(system)
    second_id, second = await system.create_agent()
    await system.post_message(cid, visitor, "I need a refund")
    await system.post_message(cid, first, "Let me pass you to a colleague")
    await _post(system, f"/v1/conversations/{cid}/transfer", first, {"to_agent_id": second_id})
    await system.post_message(cid, second, "Hello, I can refund it")
    await skip(60)  # within the idle countdown the second agent's message started
    await _post(system, f"/v1/conversations/{cid}/close", visitor, {})
    await skip(3700)
    return cid


@scenario("abandoned", "none")
async def abandoned_in_queue(system: System, skip: Skip) -> str:
    cid, visitor = await system.start_conversation()
    await system.wait_for_event(cid, visitor, "queue.position_changed")
    await system.post_message(cid, visitor, "Anyone there?")
    await _post(system, f"/v1/conversations/{cid}/close", visitor, {})
    return cid


@scenario("idle_timeout", "expired", dev_server=True)
async def agent_wrote_with_its_assignment(system: System, skip: Skip) -> str:
    """The assignment's signal and the agent's first message reach the workflow in one task
    (no worker runs while both are sent; in production a task lost with a dead server): the
    agent wrote last, so the idle countdown runs and closes the chat."""
    (cid, visitor), _agent = await assigned_while_no_worker_runs(system)
    # Their message as the API signals it (the database says active once the lost task's
    # assignment record committed; storing it is not what this scenario is about).
    await system.env.client.get_workflow_handle(workflow_id(cid)).signal(
        "message_posted", MessagePosted(message_id=1, seq=99, sender_role=Role.AGENT)
    )
    await system.start_worker()
    await system.wait_for_event(cid, visitor, "conversation.idle_warning")
    await system.wait_for_event(cid, None, "rating.expired")  # the visitor's token has ended
    return cid


@scenario("agent_closed", "rated", groups=FIRST_REPLY_IN_2_MINUTES)
async def unanswered_then_requeued(system: System, skip: Skip) -> str:
    """The first agent never answers: back to the queue, served by the next one."""
    await system.create_agent(max_concurrent=1)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    second_id, second = await system.create_agent(max_concurrent=1)
    await skip(130)  # the first reply was due after 2 minutes
    await system.wait_for_event(cid, visitor, "conversation.requeued")
    assert (await system.wait_for_state(cid, None, "active"))["agent_id"] == second_id
    await system.post_message(cid, second, "Sorry for the wait!")
    await _post(system, f"/v1/conversations/{cid}/close", second, {})
    await _post(system, f"/v1/conversations/{cid}/rating", visitor, {"score": 4})
    return cid


@scenario("visitor_closed", "expired", groups=FIRST_REPLY_IN_2_MINUTES)
async def transferred_to_an_agent_who_answers_in_time(system: System, skip: Skip) -> str:
    """The agent a conversation is transferred to has a first reply due too."""
    _first_id, first, cid, visitor = await _active(system)
    await system.post_message(cid, first, "Hello!")
    second_id, second = await system.create_agent()
    await _post(system, f"/v1/conversations/{cid}/transfer", first, {"to_agent_id": second_id})
    await skip(60)
    await system.post_message(cid, second, "Hello, I take it from here")
    await _post(system, f"/v1/conversations/{cid}/close", visitor, {})
    await skip(3700)
    return cid


@scenario("idle_timeout", "expired", groups=FIRST_REPLY_IN_2_MINUTES)
async def both_sides_chatting(system: System, skip: Skip) -> str:
    """Messages in every stage a message can meet while active: the visitor's before the first
    reply, the agent's further ones while the countdown runs and after its warning."""
    _agent_id, agent, cid, visitor = await _active(system)

    async def say(token: str, content: str) -> None:  # each message a workflow task of its own
        await system.workflow(cid, seen=await system.say(cid, token, content))

    await say(visitor, "Hello?")
    await say(visitor, "Is anyone there?")
    await say(agent, "Hello, one moment")
    await say(agent, "Looking it up")
    await skip(60)
    await say(agent, "Found it")  # the warning is due 3 minutes after this one
    await say(visitor, "Thanks")
    await say(visitor, "And the invoice?")
    await say(agent, "Sent")
    await say(agent, "Anything else?")
    await skip(185)
    await system.wait_for_event(cid, visitor, "conversation.idle_warning")
    await say(agent, "Still there?")  # the close is off, a warning due again
    await skip(400)
    await system.wait_for_event(cid, visitor, "rating.invited")
    await skip(3700)
    return cid


@scenario(
    "overflow",
    "none",
    groups=(
        '[[skill_groups]]\nname = "general"\nmax_queue_wait = "1m"\noverflow_to = "after_sales"\n'
        '[[skill_groups]]\nname = "after_sales"\nmax_queue_wait = "1m"\n'
        'overflow_to = "left_message"\n'
    ),
)
async def overflowed_to_a_left_message(system: System, skip: Skip) -> str:
    """Nobody serves it: the queue wait overflows to the next group, then to a left message."""
    cid, visitor = await system.start_conversation()
    await system.wait_for_event(cid, visitor, "queue.position_changed")
    await skip(70)
    await system.wait_for_event(cid, None, "conversation.overflowed")
    await skip(70)
    await system.wait_for_event(cid, visitor, "conversation.closed")
    return cid


@scenario(
    "out_of_hours",
    "none",
    groups='[[skill_groups]]\nname = "general"\non_closing = "close"\n' + CLOSING_AT_23_59,
)
async def queued_when_its_group_closes(system: System, skip: Skip) -> str:
    """Nobody serves it before the group's hours end: closed out of hours at the closing."""
    closing = await the_next_closing(system.env)
    cid, visitor = await system.start_conversation()
    await system.wait_for_event(cid, visitor, "queue.position_changed")
    await skip((closing - await system.env.get_current_time()).total_seconds() + 30)
    await system.wait_for_event(cid, visitor, "conversation.closed")
    return cid


# --- replaying, and what a replay ends with --------------------------------------------------


class _EndingCatcher(Interceptor):
    """Catches what each replayed run of the workflow ends with."""

    def __init__(self) -> None:
        self.endings: list[Ending] = []

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        endings = self.endings

        class Inbound(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                def ended(result: object) -> None:
                    flow = workflow.instance().flow
                    endings.append(Ending(str(result), str(flow.rating_status)))

                try:
                    result = await super().execute_workflow(input)
                except workflow.ContinueAsNewError:
                    ended(CONTINUED_AS_NEW)  # a run of a longer chain: it carried on
                    raise
                ended(result)
                return result

        return Inbound


async def replayed_ending(history: WorkflowHistory) -> Ending:
    """Replay one completed run with today's code; the end that code reaches."""
    catcher = _EndingCatcher()
    await Replayer(workflows=[ConversationWorkflow], interceptors=[catcher]).replay_workflow(
        history
    )
    assert len(catcher.endings) == 1, "the replayed run did not complete"
    return catcher.endings[0]


def _record(name: str, history: WorkflowHistory) -> None:
    path = HISTORIES / f"{name}.{VERSION}.json"
    path.write_text(re.sub(r"conversation-[0-9a-z]+", "conversation-recorded", history.to_json()))


SECOND_LONG = {"idle_warning_after": "1s", "idle_close_after": "1s", "rating_window": "2s"}


async def _play_and_replay(
    name: str,
    env: WorkflowEnvironment,
    db: Database,
    make_system: StartSystem,
) -> None:
    played = SCENARIOS[name]
    timeouts = SECOND_LONG if played.dev_server else {}
    system = await make_system(env, groups=played.groups, **timeouts)
    cid = await played.play(system, env.sleep)
    handle = env.client.get_workflow_handle(workflow_id(cid))
    assert await handle.result() == played.ending.close_reason
    body = (await system.http.get(f"/v1/conversations/{cid}", headers=ADMIN)).json()
    assert (body["state"], body["close_reason"], body["rating"]["status"]) == (
        "closed",
        played.ending.close_reason,
        played.ending.rating_status,
    )
    history = await handle.fetch_history()
    assert await replayed_ending(history) == played.ending
    if RECORD and db.is_sqlite:
        _record(name, history)


# A history is the workflow's, whichever database its activities wrote to.
@on_sqlite_alone("db")
@pytest.mark.parametrize("name", [name for name, s in SCENARIOS.items() if not s.dev_server])
async def test_scenario_replays(name: str, time_env, db, make_system) -> None:
    await _play_and_replay(name, time_env, db, make_system)


@on_sqlite_alone("db")
@pytest.mark.parametrize("name", [name for name, s in SCENARIOS.items() if s.dev_server])
async def test_scenario_on_the_dev_server_replays(name: str, dev_env, db, make_system) -> None:
    await _play_and_replay(name, dev_env, db, make_system)


CONTINUED = "continued_as_new"
CONTINUED_ENDING = Ending("idle_timeout", "expired")
# The chain's run before the last: it ends by continuing as new, the requests answered first.
CONTINUING = "continuing_as_new"
CONTINUED_AS_NEW = "continued as new"
CONTINUING_ENDING = Ending(CONTINUED_AS_NEW, "none")


@on_sqlite_alone("db")
async def test_a_continued_conversation_replays(short_history_env, db, make_system) -> None:
    """A chatty conversation continues as new mid-conversation: every run replays, and the last
    one (its input the whole state of an active conversation) ends as the conversation did."""
    env = short_history_env
    system = await make_system(env, **SECOND_LONG)
    _agent_id, agent, cid, visitor = await _active(system)
    await system.post_message(cid, agent, "Hello, how can I help?")
    for index in range(60):  # the visitor writes last: no countdown while they chat on
        await system.post_message(cid, visitor, f"question {index}")
    await system.post_message(cid, agent, "Anything else?")
    handle = env.client.get_workflow_handle(workflow_id(cid))
    assert await handle.result() == CONTINUED_ENDING.close_reason
    # The runs, last first: each names the one it continued.
    histories = [await handle.fetch_history()]
    while (
        previous := histories[-1]
        .events[0]
        .workflow_execution_started_event_attributes.continued_execution_run_id
    ):
        histories.append(
            await env.client.get_workflow_handle(workflow_id(cid), run_id=previous).fetch_history()
        )
    assert len(histories) > 1, "never continued as new"
    assert await replayed_ending(histories[0]) == CONTINUED_ENDING
    for earlier in histories[1:]:
        assert await replayed_ending(earlier) == CONTINUING_ENDING
    if RECORD:
        _record(CONTINUED, histories[0])
        _record(CONTINUING, histories[1])


RECORDED = {path.stem: path.read_text() for path in sorted(HISTORIES.glob("*.json"))}
# Histories recorded by workflow code that ended otherwise than today's would: the code before
# 'agent-wrote-before-active' never took in the agent's message, no countdown ran, so the
# visitor closed the chat.
ENDINGS_OF_OLDER_CODE = {
    "agent_wrote_with_its_assignment.v2": Ending("visitor_closed", "expired"),
}


def _ending_of(name: str) -> Ending:
    scenario_name = name.rsplit(".", 1)[0]
    if name in ENDINGS_OF_OLDER_CODE:
        return ENDINGS_OF_OLDER_CODE[name]
    if scenario_name == CONTINUED:
        return CONTINUED_ENDING
    if scenario_name == CONTINUING:
        return CONTINUING_ENDING
    return SCENARIOS[scenario_name].ending


def test_histories_are_recorded() -> None:
    recorded = {name.rsplit(".", 1)[0] for name in RECORDED}
    assert recorded >= {*SCENARIOS, CONTINUED, CONTINUING}, "a scenario has no recorded history"


@pytest.mark.parametrize("name", RECORDED)
async def test_recorded_history_replays_to_its_end(name: str) -> None:
    history = WorkflowHistory.from_json("conversation-recorded", RECORDED[name])
    assert await replayed_ending(history) == _ending_of(name)


def patch_markers(history_json: str) -> set[str]:
    """The ids of the `workflow.patched` markers in a recorded history."""
    found = set()
    for event in json.loads(history_json)["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker["markerName"] == "core_patch":
            data = marker["details"]["patch-data"]["payloads"][0]["data"]
            found.add(json.loads(b64decode(data))["id"])
    return found


def test_every_patch_is_in_a_recorded_history() -> None:
    """Each patch's new branch replays in some recorded history, and no history holds a marker
    the registry has forgotten."""
    markers = {name: patch_markers(text) for name, text in RECORDED.items()}
    found = set().union(*markers.values())
    assert PATCH_IDS <= found, f"no recorded history takes {sorted(PATCH_IDS - found)}"
    assert found <= PATCH_IDS | {patch.name for patch in DEPRECATED}


# Histories recorded before a patch that reach its `workflow.patched` call: its old branch.
OLD_BRANCHES = {
    LOCAL_ACTIVITIES: "agent_closed_rated.v1",
    AGENT_WROTE_BEFORE_ACTIVE: "agent_wrote_with_its_assignment.v2",
    MESSAGE_DECISIONS: "both_sides_chatting.v5",
    IDLE_TIMER_RUNS_ON: "both_sides_chatting.v6",
}


@pytest.mark.parametrize("patch_id", OLD_BRANCHES)
def test_the_newest_patches_old_branches_are_recorded(patch_id: str) -> None:
    assert patch_id not in patch_markers(RECORDED[OLD_BRANCHES[patch_id]])
