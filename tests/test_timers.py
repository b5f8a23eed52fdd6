"""Every timer path of the lifecycle on the time-skipping test server (real worker, API, DB).

`time_env.sleep(s)` moves the server's clock; the activities then write in real time, so each
check polls the events for a moment.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from temporalio.client import WorkflowHandle

from store.events import events_after
from tests.utils import ADMIN, System, bearer, write_policy

WARNING = "conversation.idle_warning"


async def _active(system: System) -> tuple[str, str, str, str]:
    agent_id, agent = await system.create_agent()
    conversation_id, visitor = await system.start_conversation()
    await system.wait_for_state(conversation_id, visitor, "active")
    return agent_id, agent, conversation_id, visitor


async def _types(system: System, conversation_id: str, token: str) -> list[str]:
    return [e["type"] for e in await system.events(conversation_id, token)]


async def _settled(system: System, conversation_id: str, token: str) -> list[str]:
    """Event types once the workflow has had a moment to act on a skipped clock."""
    await asyncio.sleep(0.4)
    return await _types(system, conversation_id, token)


def _handle(system: System, conversation_id: str) -> WorkflowHandle:
    return system.env.client.get_workflow_handle(f"conversation-{conversation_id}")


async def test_idle_warning_after_an_unanswered_agent_message(
    time_env, db, policy_file, make_system
) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        _agent_id, agent, cid, visitor = await _active(system)
        assert (await system.post_message(cid, agent, "Anything else?")).status_code == 201

        await time_env.sleep(170)  # idle_warning_after is 3 minutes
        assert WARNING not in await _settled(system, cid, visitor)

        await time_env.sleep(15)
        warning = await system.wait_for_event(cid, visitor, WARNING)
        assert warning["data"]["text"] == "Still there? This chat closes in 2 minutes."
        assert warning["data"]["sender_role"] == "system"
        assert (await _types(system, cid, visitor)).count(WARNING) == 1
        assert (await system.conversation(cid, visitor))["state"] == "active"


async def test_no_countdown_while_the_visitor_has_the_last_word(
    time_env, db, policy_file, make_system
) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        _agent_id, agent, cid, visitor = await _active(system)
        await system.post_message(cid, visitor, "Hello?")
        await time_env.sleep(600)
        assert WARNING not in await _settled(system, cid, visitor)
        await system.post_message(cid, agent, "Hi! Looking into it.")
        await system.post_message(cid, visitor, "Thanks")  # answers: cancels the countdown
        await time_env.sleep(600)
        types = await _settled(system, cid, visitor)
        assert WARNING not in types and "conversation.closed" not in types


async def test_a_visitor_message_after_the_warning_cancels_the_auto_close(
    time_env, db, policy_file, make_system
) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        _agent_id, agent, cid, visitor = await _active(system)
        await system.post_message(cid, agent, "Anything else?")
        await time_env.sleep(185)
        await system.wait_for_event(cid, visitor, WARNING)
        await system.post_message(cid, visitor, "Yes, one more thing")
        await time_env.sleep(600)
        assert "conversation.closed" not in await _settled(system, cid, visitor)
        assert (await system.conversation(cid, visitor))["state"] == "active"


async def test_a_new_agent_message_restarts_the_countdown(
    time_env, db, policy_file, make_system
) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        _agent_id, agent, cid, visitor = await _active(system)
        await system.post_message(cid, agent, "One moment")
        await time_env.sleep(120)
        second = (await system.post_message(cid, agent, "Found it: it ships today")).json()["seq"]
        await time_env.sleep(120)  # 4 minutes after the first, 2 after the second
        assert WARNING not in await _settled(system, cid, visitor)
        await time_env.sleep(65)
        warning = await system.wait_for_event(cid, visitor, WARNING)
        assert warning["data"]["after_agent_message_seq"] == second


async def test_auto_close_then_rating_invite_and_the_seat_is_freed(
    time_env, db, policy_file, make_system
) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        agent_id, agent, cid, visitor = await _active(system)
        await system.post_message(cid, agent, "Anything else?")
        await time_env.sleep(185)
        await system.wait_for_event(cid, visitor, WARNING)
        await time_env.sleep(100)
        assert "conversation.closed" not in await _settled(system, cid, visitor)
        await time_env.sleep(25)  # idle_close_after (2 minutes) has passed

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
        agent_view = await system.http.get(f"/v1/agents/{agent_id}", headers=bearer(agent))
        assert agent_view.json()["load"] == 0


async def test_rating_within_the_window_completes_the_conversation(
    time_env, db, policy_file, make_system
) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        _agent_id, agent, cid, visitor = await _active(system)
        response = await system.http.post(f"/v1/conversations/{cid}/close", headers=bearer(agent))
        assert response.json()["close_reason"] == "agent_closed"
        await system.wait_for_event(cid, visitor, "rating.invited")
        await time_env.sleep(1800)  # half the window

        rated = await system.http.post(
            f"/v1/conversations/{cid}/rating",
            headers=bearer(visitor),
            json={"score": 4, "resolved": True, "comment": "Fast"},
        )
        assert rated.status_code == 201, rated.text
        assert rated.json()["status"] == "rated" and rated.json()["score"] == 4
        submitted = await system.wait_for_event(cid, visitor, "rating.submitted")
        assert submitted["data"] == {"score": 4, "resolved": True}
        again = await system.http.post(
            f"/v1/conversations/{cid}/rating", headers=bearer(visitor), json={"score": 1}
        )
        assert again.status_code == 409
        assert await _handle(system, cid).result() == "agent_closed"
        assert (await _types(system, cid, visitor)).count("rating.submitted") == 1


async def test_rating_window_expires(time_env, db, policy_file, make_system) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        _agent_id, _agent, cid, visitor = await _active(system)
        await system.http.post(f"/v1/conversations/{cid}/close", headers=bearer(visitor))
        await system.wait_for_event(cid, visitor, "rating.invited")
        await time_env.sleep(3500)
        assert "rating.expired" not in await _settled(system, cid, visitor)
        await time_env.sleep(120)  # the 1 hour window has passed

        await system.wait_for_event(cid, visitor, "rating.expired")
        assert (await system.conversation(cid, visitor))["rating"]["status"] == "expired"
        late = await system.http.post(
            f"/v1/conversations/{cid}/rating", headers=bearer(visitor), json={"score": 5}
        )
        assert late.status_code == 409
        assert await _handle(system, cid).result() == "visitor_closed"


async def test_closes_by_agent_visitor_and_abandon(time_env, db, policy_file, make_system) -> None:
    async with make_system(time_env, db, policy_file())() as system:
        agent_id, agent, by_agent, visitor_a = await _active(system)
        by_visitor, visitor_b = await system.start_conversation()
        await system.wait_for_state(by_visitor, visitor_b, "active")

        await system.http.post(f"/v1/conversations/{by_agent}/close", headers=bearer(agent))
        await system.http.post(f"/v1/conversations/{by_visitor}/close", headers=bearer(visitor_b))
        for cid, token, reason, text in (
            (by_agent, visitor_a, "agent_closed", "Solved, thank you."),
            (by_visitor, visitor_b, "visitor_closed", None),
        ):
            closed = await system.wait_for_event(cid, token, "conversation.closed")
            assert closed["data"]["close_reason"] == reason
            assert (
                closed["data"]["text"] == (text or closed["data"]["text"])
                and closed["data"]["text"]
            )
            await system.wait_for_event(cid, token, "rating.invited")

        await system.set_status(agent_id, agent, "offline")
        waiting, visitor_c = await system.start_conversation()
        await system.wait_for_event(waiting, visitor_c, "queue.position_changed")
        assert (await system.conversation(waiting, visitor_c))["queue_position"] == 1
        response = await system.http.post(
            f"/v1/conversations/{waiting}/close", headers=bearer(visitor_c)
        )
        assert response.json()["close_reason"] == "abandoned"
        assert response.json()["queue_position"] is None
        # The abandoned conversation left the queue: an agent coming online does not get it.
        await system.set_status(agent_id, agent, "online")
        agent_view = await system.http.get(f"/v1/agents/{agent_id}", headers=ADMIN)
        assert agent_view.json()["load"] == 0


async def test_a_changed_duration_applies_to_the_next_timer(
    time_env, db, tmp_path: Path, make_system
) -> None:
    policy = write_policy(tmp_path / "policy.toml", idle_warning_after="3m")
    async with make_system(time_env, db, policy)() as system:
        _agent_id, agent, cid, visitor = await _active(system)
        await system.post_message(cid, agent, "First answer")
        await time_env.sleep(185)
        await system.wait_for_event(cid, visitor, WARNING)

        write_policy(policy, idle_warning_after="20m", idle_close_after="30m")
        later = time.time() + 2
        os.utime(policy, (later, later))  # a new stamp even on coarse file systems
        await system.post_message(cid, visitor, "Still here")
        await system.post_message(cid, agent, "Second answer")
        await time_env.sleep(600)  # the old 3 minutes are long gone, the new 20 are not
        assert (await _settled(system, cid, visitor)).count(WARNING) == 1
        await time_env.sleep(620)
        await eventually_count(system, cid, visitor, WARNING, 2)
        warnings = [e for e in await system.events(cid, visitor) if e["type"] == WARNING]
        assert "30 minutes" in warnings[-1]["data"]["text"]


async def eventually_count(system: System, cid: str, token: str, kind: str, count: int) -> None:
    for _ in range(200):
        if (await _types(system, cid, token)).count(kind) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} {kind}")


async def test_timers_due_while_no_worker_runs_fire_when_one_is_back(
    dev_env, db, policy_file, make_system
) -> None:
    """Invariant 5: the countdown is a server-side timer, not a worker's. (On the dev server in
    real time: the time-skipping server does not move its clock past work no worker takes.)"""
    start = make_system(dev_env, db, policy_file(idle_warning_after="1s", idle_close_after="1s"))
    async with start() as system:
        _agent_id, agent, cid, visitor = await _active(system)
        await system.post_message(cid, agent, "Anything else?")
        task_queue = system.task_queue
    await asyncio.sleep(3)  # every worker is gone while the warning and the auto-close fall due
    with db.read() as session:
        written = [
            e.type for e in events_after(session, conversation_id=cid, after_seq=0, limit=99)
        ]
    assert WARNING not in written, "a worker was still running"
    back = start()
    back.task_queue = task_queue
    async with back as system:
        closed = await system.wait_for_event(cid, visitor, "conversation.closed")
        assert closed["data"]["close_reason"] == "idle_timeout"
        types = await _types(system, cid, visitor)
        assert types.index(WARNING) < types.index("conversation.closed")
