"""Every timer path of the lifecycle on the time-skipping test server (real worker, API, DB).

`time_env.sleep(s)` moves the server's clock; the activities then write in real time, so each
check polls the events for a moment.
"""

from __future__ import annotations

import os
import time
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from store.events import events_after
from tests.support.api import eventually
from tests.support.backends import on_sqlite_alone
from tests.support.policy import write_policy
from tests.support.system import StartSystem, System
from workflows.gateway import workflow_id

# Timers are the workflow's: what the store does at each is tested on both databases in
# tests/test_store_lifecycle.py.
pytestmark = on_sqlite_alone("db")

WARNING = "conversation.idle_warning"


async def _active(system: System) -> tuple[str, str, str, str]:
    agent_id, agent = await system.create_agent()
    conversation_id, visitor = await system.start_conversation()
    await system.wait_for_state(conversation_id, visitor, "active")
    return agent_id, agent, conversation_id, visitor


async def _types(system: System, conversation_id: str, token: str) -> list[str]:
    return [e["type"] for e in await system.events(conversation_id, token)]


def _handle(system: System, conversation_id: str) -> WorkflowHandle:
    return system.env.client.get_workflow_handle(workflow_id(conversation_id))


async def _no_countdown(system: System, conversation_id: str, *, seen: int) -> None:
    """Once the workflow has taken in message `seen`: still active, no idle countdown runs."""
    workflow = await system.workflow(conversation_id, seen=seen)
    assert (workflow["state"], workflow["idle_warning_at"], workflow["idle_close_at"]) == (
        "active",
        None,
        None,
    )


async def test_idle_warning_after_an_unanswered_agent_message(system: System) -> None:
    _agent_id, agent, cid, visitor = await _active(system)
    await system.workflow(cid, seen=await system.say(cid, agent, "Anything else?"))

    await system.env.sleep(170)  # idle_warning_after is 3 minutes
    assert (await system.pending_timer(cid, "idle_warning_at"))["state"] == "active"

    await system.env.sleep(15)
    warning = await system.wait_for_event(cid, visitor, WARNING)
    assert warning["data"]["text"] == "Still there? This chat closes in 2 minutes."
    assert warning["data"]["sender_role"] == "system"
    assert (await _types(system, cid, visitor)).count(WARNING) == 1
    assert (await system.conversation(cid, visitor))["state"] == "active"


async def test_no_countdown_while_the_visitor_has_the_last_word(system: System) -> None:
    _agent_id, agent, cid, visitor = await _active(system)
    asked = await system.say(cid, visitor, "Hello?")
    await system.env.sleep(600)
    await _no_countdown(system, cid, seen=asked)
    await system.say(cid, agent, "Hi! Looking into it.")
    answered = await system.say(cid, visitor, "Thanks")  # answers: cancels the countdown
    await system.env.sleep(600)
    await _no_countdown(system, cid, seen=answered)


async def test_a_visitor_message_after_the_warning_cancels_the_auto_close(system: System) -> None:
    _agent_id, agent, cid, visitor = await _active(system)
    await system.post_message(cid, agent, "Anything else?")
    await system.env.sleep(185)
    await system.wait_for_event(cid, visitor, WARNING)
    answered = await system.say(cid, visitor, "Yes, one more thing")
    await system.env.sleep(600)
    await _no_countdown(system, cid, seen=answered)
    assert (await system.conversation(cid, visitor))["state"] == "active"


async def test_a_new_agent_message_restarts_the_countdown(system: System) -> None:
    _agent_id, agent, cid, visitor = await _active(system)
    await system.post_message(cid, agent, "One moment")
    await system.env.sleep(120)
    second = await system.say(cid, agent, "Found it: it ships today")
    await system.workflow(cid, seen=second)
    await system.env.sleep(120)  # 4 minutes after the first, 2 after the second
    await system.pending_timer(cid, "idle_warning_at")
    await system.env.sleep(65)
    warning = await system.wait_for_event(cid, visitor, WARNING)
    assert warning["data"]["after_agent_message_seq"] == second


async def test_auto_close_then_rating_invite_and_the_seat_is_freed(system: System) -> None:
    agent_id, agent, cid, visitor = await _active(system)
    await system.post_message(cid, agent, "Anything else?")
    await system.env.sleep(185)
    await system.wait_for_event(cid, visitor, WARNING)
    await system.env.sleep(100)
    assert (await system.pending_timer(cid, "idle_close_at"))["state"] == "active"
    await system.env.sleep(25)  # idle_close_after (2 minutes) has passed

    closed = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert closed["data"] == {
        "close_reason": "idle_timeout",
        "sender_role": "system",
        "text": "Closed for inactivity.",
        "left_message": False,
    }
    await system.wait_for_event(cid, visitor, "rating.invited")
    body = await system.conversation(cid, visitor)
    assert (body["state"], body["close_reason"], body["rating"]["status"]) == (
        "closed",
        "idle_timeout",
        "pending",
    )
    assert (await system.agent(agent_id, agent))["load"] == 0


async def test_rating_within_the_window_completes_the_conversation(system: System) -> None:
    _agent_id, agent, cid, visitor = await _active(system)
    response = await system.close(cid, agent)
    assert response.json()["close_reason"] == "agent_closed"
    await system.wait_for_event(cid, visitor, "rating.invited")
    await system.env.sleep(1800)  # half the window

    rated = await system.rate(cid, visitor, 4, resolved=True, comment="Fast")
    assert rated.status_code == 201, rated.text
    assert rated.json()["status"] == "rated" and rated.json()["score"] == 4
    submitted = await system.wait_for_event(cid, visitor, "rating.submitted")
    assert submitted["data"] == {"score": 4, "resolved": True}
    again = await system.rate(cid, visitor, 1)
    assert again.status_code == 409
    # The same rating sent again (its answer lost, say to a 503): answered as it was, before
    # and after the workflow has ended.
    same = await system.rate(cid, visitor, 4, resolved=True, comment="Fast")
    assert (same.status_code, same.json()) == (201, rated.json())
    assert await _handle(system, cid).result() == "agent_closed"
    same = await system.rate(cid, visitor, 4, resolved=True, comment="Fast")
    assert (same.status_code, same.json()) == (201, rated.json())
    assert (await _types(system, cid, visitor)).count("rating.submitted") == 1


async def test_rating_window_expires(system: System) -> None:
    _agent_id, _agent, cid, visitor = await _active(system)
    await system.close(cid, visitor)
    await system.wait_for_event(cid, visitor, "rating.invited")
    await system.env.sleep(3500)
    assert (await system.pending_timer(cid, "rating_expires_at"))["rating_status"] == "pending"
    await system.env.sleep(120)  # the 1 hour window has passed

    await system.wait_for_event(cid, visitor, "rating.expired")
    assert (await system.conversation(cid, visitor))["rating"]["status"] == "expired"
    late = await system.rate(cid, visitor, 5)
    assert late.status_code == 409
    assert await _handle(system, cid).result() == "visitor_closed"


async def test_closes_by_agent_visitor_and_abandon(system: System) -> None:
    agent_id, agent, by_agent, visitor_a = await _active(system)
    by_visitor, visitor_b = await system.start_conversation()
    await system.wait_for_state(by_visitor, visitor_b, "active")

    await system.close(by_agent, agent)
    await system.close(by_visitor, visitor_b)
    for cid, token, reason, text in (
        (by_agent, visitor_a, "agent_closed", "Solved, thank you."),
        (by_visitor, visitor_b, "visitor_closed", None),
    ):
        closed = await system.wait_for_event(cid, token, "conversation.closed")
        assert closed["data"]["close_reason"] == reason
        assert closed["data"]["text"] == (text or closed["data"]["text"]) and closed["data"]["text"]
        await system.wait_for_event(cid, token, "rating.invited")

    await system.set_status(agent_id, agent, "offline")
    waiting, visitor_c = await system.start_conversation()
    await system.wait_for_event(waiting, visitor_c, "queue.position_changed")
    assert (await system.conversation(waiting, visitor_c))["queue_position"] == 1
    response = await system.close(waiting, visitor_c)
    assert response.json()["close_reason"] == "abandoned"
    assert response.json()["queue_position"] is None
    # The abandoned conversation left the queue: an agent coming online does not get it.
    await system.set_status(agent_id, agent, "online")
    assert (await system.agent(agent_id))["load"] == 0


async def test_a_changed_duration_applies_to_the_next_timer(system: System) -> None:
    _agent_id, agent, cid, visitor = await _active(system)
    await system.post_message(cid, agent, "First answer")
    await system.env.sleep(185)
    await system.wait_for_event(cid, visitor, WARNING)

    policy = write_policy(system.policy_path, idle_warning_after="20m", idle_close_after="30m")
    later = time.time() + 2
    os.utime(policy, (later, later))  # a new stamp even on coarse file systems
    await system.post_message(cid, visitor, "Still here")
    await system.post_message(cid, agent, "Second answer")
    await system.env.sleep(600)  # the old 3 minutes are long gone, the new 20 are not
    await system.pending_timer(cid, "idle_warning_at")
    await system.env.sleep(620)

    async def second_warning() -> list[dict[str, Any]] | None:
        warnings = [e for e in await system.events(cid, visitor) if e["type"] == WARNING]
        return warnings if len(warnings) == 2 else None

    warnings = await eventually(second_warning, what="a second idle warning")
    assert "30 minutes" in warnings[-1]["data"]["text"]


async def test_timers_due_while_no_worker_runs_fire_when_one_is_back(
    dev_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    """Invariant 5: the countdown is a server-side timer, not a worker's. (On the dev server in
    real time: the time-skipping server does not move its clock past work no worker takes.)"""
    system = await make_system(dev_env, idle_warning_after="3s", idle_close_after="1s")
    _agent_id, agent, cid, visitor = await _active(system)
    await system.workflow(cid, seen=await system.say(cid, agent, "Anything else?"))
    await system.stop_worker()  # the countdown runs: its warning is 3 seconds away
    stopped_at = len((await _handle(system, cid).fetch_history()).events)

    async def fired_with_no_worker() -> bool:
        history = await _handle(system, cid).fetch_history()
        return any(
            event.HasField("timer_fired_event_attributes") for event in history.events[stopped_at:]
        )

    # Every worker is gone while the warning falls due.
    await eventually(fired_with_no_worker, what="the idle warning's timer to fire")
    with system.db.read() as session:
        written = [
            e.type
            for e in events_after(session, conversation_id=cid, after_seq=0, limit=99, staff=True)
        ]
    assert WARNING not in written, "a worker was still running"
    await system.start_worker()
    closed = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "idle_timeout"
    types = await _types(system, cid, visitor)
    assert types.index(WARNING) < types.index("conversation.closed")
