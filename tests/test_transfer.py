"""Transfer and the agent first-reply timeout, on the time-skipping server."""

from __future__ import annotations

import asyncio

from temporalio.testing import WorkflowEnvironment

from domain.types import SA_AGENT, SA_STATE
from tests.support.api import AgentLogin, Visit, bearer, eventually
from tests.support.system import StartSystem, System
from workflows.gateway import workflow_id

FIRST_REPLY_IN_2_MINUTES = '[[skill_groups]]\nname = "general"\nagent_first_reply_timeout = "2m"\n'


async def _load(system: System, agent_id: str) -> int:
    return (await system.agent(agent_id))["load"]


async def test_transfer_to_an_agent_within_capacity(system: System) -> None:
    alice, alice_token = await system.create_agent("alice", max_concurrent=2)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    bob, bob_token = await system.create_agent("bob", max_concurrent=1)

    moved = await system.transfer(cid, alice_token, to_agent_id=bob, note="Needs a refund approval")
    assert moved.status_code == 200, moved.text
    assert moved.json()["agent_id"] == bob
    assert (await _load(system, alice), await _load(system, bob)) == (0, 1)
    # Alice's transfer sent again (its answer lost): answered as it was, not refused because
    # the conversation is Bob's now; nothing moves twice.
    again = await system.transfer(cid, alice_token, to_agent_id=bob, note="Needs a refund approval")
    assert (again.status_code, again.json()["agent_id"]) == (200, bob)
    assert (await _load(system, alice), await _load(system, bob)) == (0, 1)
    # Any other transfer of hers is refused: it is not her conversation.
    elsewhere = await system.transfer(cid, alice_token, to_skill_group="general")
    assert elsewhere.status_code == 403, elsewhere.text
    event = await system.wait_for_event(cid, bob_token, "conversation.transferred")
    assert event["data"]["from_agent_id"] == alice and event["data"]["to_agent_id"] == bob
    notes = [e["data"] for e in await system.events(cid) if e["type"] == "note.created"]
    assert notes == [{"kind": "transfer", "by": alice, "text": "Needs a refund approval"}]
    # The visitor reads that someone else will answer, and their name (tests/test_audience.py).
    told = await system.wait_for_event(cid, visitor, "conversation.transferred")
    assert set(told["data"]) == {"sender_role", "text"}
    # The old agent is out, the new one is in.
    assert (await system.post_message(cid, alice_token, "still me?")).status_code == 403
    assert (await system.post_message(cid, bob_token, "Hi, Bob here")).status_code == 201

    # Bob is full now: a transfer to him is refused and changes nothing.
    other, other_visitor = await system.start_conversation()
    await system.wait_for_state(other, other_visitor, "active")
    full = await system.transfer(other, to_agent_id=bob)
    assert full.status_code == 409, full.text
    assert (await system.conversation(other))["agent_id"] == alice
    assert (await _load(system, alice), await _load(system, bob)) == (1, 1)


async def test_transfer_to_a_group_queues_ahead_of_later_arrivals(system: System) -> None:
    alice, alice_token = await system.create_agent("alice", max_concurrent=3)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    carol, carol_token = await system.create_agent(
        "carol", skill_groups=["after_sales"], online=False
    )
    later, later_visitor = await system.start_conversation()
    await system.wait_for_state(later, later_visitor, "active")
    # The later arrival is sent to after_sales first and waits there.
    first_move = await system.transfer(later, to_skill_group="after_sales")
    assert first_move.status_code == 200, first_move.text
    assert (await system.conversation(later, later_visitor))["queue_position"] == 1

    moved = await system.transfer(
        cid, alice_token, to_skill_group="after_sales", note="Return request"
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["state"], moved.json()["skill_group"]) == ("queued", "after_sales")
    assert moved.json()["queue_position"] == 1  # it queued first: its enqueue time is earlier
    again = await system.transfer(
        cid, alice_token, to_skill_group="after_sales", note="Return request"
    )
    assert (again.status_code, again.json()["queue_position"]) == (200, 1)
    transfers = [e for e in await system.events(cid) if e["type"] == "conversation.transferred"]
    assert len(transfers) == 1
    assert (await system.conversation(later, later_visitor))["queue_position"] == 2
    assert await _load(system, alice) == 0

    await system.set_status(carol, carol_token, "online")
    body = await system.wait_for_state(cid, None, "active")
    assert body["agent_id"] == carol
    types = [e["type"] for e in await system.events(cid, visitor)]
    assert types.count("conversation.assigned") == 2
    assert (await system.post_message(cid, carol_token, "Carol here")).status_code == 201


async def test_a_transfer_to_a_group_goes_to_another_agent_not_back_to_who_handed_it_on(
    system: System,
) -> None:
    alice, alice_token = await system.create_agent("alice", max_concurrent=1)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    bob, bob_token = await system.create_agent("bob", max_concurrent=2)
    other, _other_visitor = await system.start_conversation()
    assert (await system.wait_for_state(other, None, "active"))["agent_id"] == bob

    moved = await system.transfer(cid, alice_token, to_skill_group="general", note="Shift ends")
    assert moved.status_code == 200, moved.text
    # Alice is the least loaded once she hands it on, but she handed it on: bob takes it.
    assert (await system.wait_for_state(cid, None, "active"))["agent_id"] == bob
    assert (await _load(system, alice), await _load(system, bob)) == (0, 2)

    # With nobody else online it goes back to the agent who handed it on, never to no one.
    await system.set_status(bob, bob_token, "offline")
    alone, alone_visitor = await system.start_conversation()
    await system.wait_for_state(alone, alone_visitor, "active")
    moved = await system.transfer(alone, alice_token, to_skill_group="general")
    assert moved.status_code == 200, moved.text
    assert (await system.wait_for_state(alone, None, "active"))["agent_id"] == alice
    types = [e["type"] for e in await system.events(alone, alone_visitor)]
    assert types.count("conversation.assigned") == 2


SLOW = "slow"


async def _served_by_slow(system: System) -> Visit:
    """A conversation SLOW (capacity 1) serves, and will not answer."""
    await system.create_agent(SLOW, max_concurrent=1)
    visit = await system.start_conversation()
    assert (await system.wait_for_state(visit.conversation_id, None, "active"))["agent_id"] == SLOW
    return visit


async def _busy_colleague(system: System, name: str) -> tuple[AgentLogin, Visit]:
    """A colleague online with capacity 1, busy with another visitor (answered in time)."""
    colleague = await system.create_agent(name, max_concurrent=1)
    other = await system.start_conversation()
    assert (await system.wait_for_state(other.conversation_id, None, "active"))[
        "agent_id"
    ] == colleague.id
    await system.say(other.conversation_id, colleague.token, "Hello, how can I help?")
    return colleague, other


async def test_an_agent_who_never_replies_loses_the_conversation_and_is_skipped(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=FIRST_REPLY_IN_2_MINUTES)
    cid, visitor = await _served_by_slow(system)
    (fast, fast_token), (other, _other_visitor) = await _busy_colleague(system, "fast")

    await time_env.sleep(100)
    assert (await system.pending_timer(cid, "first_reply_due_at"))["agent_id"] == SLOW
    await time_env.sleep(30)
    requeued = await system.wait_for_event(cid, None, "conversation.requeued")
    assert (requeued["data"]["agent_id"], requeued["data"]["reason"]) == (SLOW, "no_first_reply")
    assert await _load(system, SLOW) == 0
    # Slow has room, but fast is online to serve it: it waits for fast, at the head.
    body = await system.conversation(cid, visitor)
    assert (body["state"], body["queue_position"]) == ("queued", 1)
    handle = time_env.client.get_workflow_handle(workflow_id(cid))

    async def listed_as_queued() -> bool:
        listed = (await handle.describe()).typed_search_attributes
        return listed.get(SA_STATE) == "queued" and listed.get(SA_AGENT) is None

    await eventually(listed_as_queued, what="queued with no AgentId in the search attributes")

    assert (await system.close(other, fast_token)).status_code == 200
    body = await system.wait_for_state(cid, None, "active")
    assert body["agent_id"] == fast  # not back to the slow one, though both have room

    async def listed_with_fast() -> bool:
        return (await handle.describe()).typed_search_attributes.get(SA_AGENT) == fast

    await eventually(listed_with_fast, what="AgentId = fast in the search attributes")
    replied = await system.say(cid, fast_token, "Sorry for the wait!")
    workflow = await system.workflow(cid, seen=replied)  # in time: no first-reply deadline
    assert (workflow["agent_id"], workflow["first_reply_due_at"]) == (fast, None)


async def test_the_groups_only_agent_online_gets_back_what_they_left_unanswered(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=FIRST_REPLY_IN_2_MINUTES)
    cid, visitor = await _served_by_slow(system)
    await system.create_agent("away", max_concurrent=1, online=False)
    await time_env.sleep(130)
    await system.wait_for_event(cid, visitor, "conversation.requeued")
    # Nobody else is online to serve it: back to slow rather than waiting for no one.
    assert (await system.wait_for_state(cid, None, "active"))["agent_id"] == SLOW
    types = [e["type"] for e in await system.events(cid, visitor)]
    assert types.count("conversation.assigned") == 2


async def test_a_skip_lapses_when_the_other_agent_online_leaves(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=FIRST_REPLY_IN_2_MINUTES)
    cid, visitor = await _served_by_slow(system)
    busy, _other = await _busy_colleague(system, "busy")
    await time_env.sleep(130)
    await system.wait_for_event(cid, visitor, "conversation.requeued")
    assert (await system.conversation(cid, visitor))["state"] == "queued"  # waits for busy

    await system.set_status(*busy, "offline")  # the end of busy's shift
    assert (await system.wait_for_state(cid, None, "active"))["agent_id"] == SLOW


async def test_the_agent_a_conversation_is_transferred_to_must_answer_in_time_too(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=FIRST_REPLY_IN_2_MINUTES)
    alice, alice_token = await system.create_agent("alice", max_concurrent=1)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    assert (await system.post_message(cid, alice_token, "Hello!")).status_code == 201
    bob, _ = await system.create_agent("bob", max_concurrent=1)
    moved = await system.transfer(cid, alice_token, to_agent_id=bob)
    assert moved.status_code == 200, moved.text
    await time_env.sleep(130)  # bob never writes
    requeued = await system.wait_for_event(cid, None, "conversation.requeued")
    assert (requeued["data"]["agent_id"], requeued["data"]["reason"]) == (bob, "no_first_reply")
    # Back with alice (she has room again); not with bob, who is skipped now.
    assert (await system.wait_for_state(cid, None, "active"))["agent_id"] == alice


async def test_what_the_new_agent_writes_during_the_handover_keeps_its_countdown(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    """Bob writes the moment the handover commits, while the workflow is still finishing the
    transfer: his message must keep the idle countdown it starts (and counts as his first
    reply), not be wiped by the transfer's fresh start."""
    system = await make_system(time_env, groups=FIRST_REPLY_IN_2_MINUTES)
    _alice, alice_token = await system.create_agent("alice", max_concurrent=1)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    await system.post_message(cid, visitor, "I want a refund")
    bob, bob_token = await system.create_agent("bob", max_concurrent=1)

    async def bob_writes_at_once() -> int:
        # 403 until the handover commits; then at once.
        for attempt in range(2000):
            response = await system.post_message(
                cid, bob_token, "Bob here, refund approved", f"bob-{attempt}"
            )
            if response.status_code != 403:
                return response.status_code
        raise AssertionError("the conversation never reached bob")

    moved, bob_wrote = await asyncio.gather(
        system.transfer(cid, alice_token, to_agent_id=bob), bob_writes_at_once()
    )
    assert moved.status_code == 200, moved.text
    assert bob_wrote == 201
    await time_env.sleep(185)  # idle_warning_after is 3 minutes; the first reply was in time
    warning = await system.wait_for_event(cid, visitor, "conversation.idle_warning")
    assert warning["data"]["sender_role"] == "system"
    types = [e["type"] for e in await system.events(cid, visitor)]
    assert "conversation.requeued" not in types
    assert (await system.conversation(cid))["agent_id"] == bob


async def test_transfer_errors(system: System) -> None:
    alice, alice_token = await system.create_agent("alice")
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    for body, code in (
        ({}, 422),
        ({"to_agent_id": "alice", "to_skill_group": "general"}, 422),
        ({"to_agent_id": "nobody"}, 422),
        ({"to_skill_group": "nowhere"}, 422),
        ({"to_agent_id": alice}, 409),
    ):
        response = await system.http.post(
            f"/v1/conversations/{cid}/transfer", headers=bearer(alice_token), json=body
        )
        assert response.status_code == code, (body, response.text)
    visitor_try = await system.transfer(cid, visitor, to_skill_group="general")
    assert visitor_try.status_code == 403
    assert (await system.conversation(cid))["agent_id"] == alice
