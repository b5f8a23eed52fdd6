"""Determinism: conversations' histories replay against today's workflow code.

Each scenario runs on the time-skipping test server (real worker, API and database) and its
history is replayed at once. The histories recorded by earlier versions of the workflow
(tests/histories/*.json) replay too: a change to the workflow that would break conversations
already running must go behind `workflow.patched`. Record a version's histories with

    SWITCHBOARD_RECORD_HISTORIES=1 .venv/bin/pytest tests/test_replay.py -k scenario

and keep the old files: each is a version conversations may still be running.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.support.api import bearer
from tests.support.system import System
from workflows import ConversationWorkflow

HISTORIES = Path(__file__).parent / "histories"
RECORD = os.environ.get("SWITCHBOARD_RECORD_HISTORIES") == "1"
VERSION = "v2"  # the part of a recorded file's name that says which workflow code made it


async def _active(system: System) -> tuple[str, str, str, str]:
    agent_id, agent = await system.create_agent()
    conversation_id, visitor = await system.start_conversation()
    await system.wait_for_state(conversation_id, visitor, "active")
    return agent_id, agent, conversation_id, visitor


async def _post(system: System, path: str, token: str, body: dict[str, object]) -> None:
    response = await system.http.post(path, headers=bearer(token), json=body)
    assert response.status_code in (200, 201), response.text


async def idle_timeout_rating_expired(
    system: System, skip: Callable[[float], Awaitable[None]]
) -> str:
    _agent_id, agent, cid, visitor = await _active(system)
    await system.post_message(cid, visitor, "Hi")
    await system.post_message(cid, agent, "Hello, how can I help?")
    await skip(400)  # the idle warning, then the auto-close
    await system.wait_for_event(cid, visitor, "rating.invited")
    await skip(3700)  # the rating window passes
    return cid


async def agent_closed_rated(system: System, skip: Callable[[float], Awaitable[None]]) -> str:
    _agent_id, agent, cid, visitor = await _active(system)
    await system.post_message(cid, visitor, "Where is my parcel?")
    await system.post_message(cid, agent, "On its way, it arrives tomorrow.")
    await _post(system, f"/v1/conversations/{cid}/close", agent, {})
    await _post(system, f"/v1/conversations/{cid}/rating", visitor, {"score": 5, "resolved": True})
    return cid


async def transferred_then_visitor_closed(
    system: System, skip: Callable[[float], Awaitable[None]]
) -> str:
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


async def abandoned_in_queue(system: System, skip: Callable[[float], Awaitable[None]]) -> str:
    cid, visitor = await system.start_conversation()
    await system.wait_for_event(cid, visitor, "queue.position_changed")
    await system.post_message(cid, visitor, "Anyone there?")
    await _post(system, f"/v1/conversations/{cid}/close", visitor, {})
    return cid


SCENARIOS = [
    idle_timeout_rating_expired,
    agent_closed_rated,
    transferred_then_visitor_closed,
    abandoned_in_queue,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
async def test_scenario_replays(scenario, system: System, db) -> None:
    cid = await scenario(system, system.env.sleep)
    handle = system.env.client.get_workflow_handle(f"conversation-{cid}")
    await handle.result()
    history = await handle.fetch_history()
    await Replayer(workflows=[ConversationWorkflow]).replay_workflow(history)
    if RECORD and db.is_sqlite:
        path = HISTORIES / f"{scenario.__name__}.{VERSION}.json"
        path.write_text(
            re.sub(r"conversation-[0-9a-z]+", "conversation-recorded", history.to_json())
        )


RECORDED = {path.stem: path.read_text() for path in sorted(HISTORIES.glob("*.json"))}


def test_histories_are_recorded() -> None:
    assert len(RECORDED) >= len(SCENARIOS), "tests/histories/ lost its recorded histories"


@pytest.mark.parametrize("name", RECORDED)
async def test_recorded_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json("conversation-recorded", RECORDED[name])
    await Replayer(workflows=[ConversationWorkflow]).replay_workflow(history)
