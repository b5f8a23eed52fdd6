"""Staff words never reach a customer: every event is for everyone or for staff alone, and what
staff alone read of an event everyone sees (agents' ids, notes, reasons) the visitor never
reads: not in /events, not in a stream resumed across them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from domain.policy import Texts
from store.db import Database
from tests.support.api import ADMIN, ApiClient, bearer, eventually
from tests.support.processes import Deployment
from tests.support.system import System

FIRST_REPLY_IN_5_SECONDS = '[[skill_groups]]\nname = "general"\nagent_first_reply_timeout = "5s"\n'
# No idle countdown gets in the way of the scenario.
QUIET_VISITOR = {"idle_warning_after": "10m", "idle_close_after": "10m"}
CONNECTING = {"sender_role": "system", "text": Texts().connecting}
INTERNAL_NOTE = "Customer is upset: offer the voucher"
TRANSFER_NOTE = "Needs a refund approval"
STAFF_WORDS = (INTERNAL_NOTE, TRANSFER_NOTE, "no_first_reply", '"slow"', '"fast"', '"carol"')


def _of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [event["data"] for event in events if event["type"] == type_]


@pytest.mark.e2e
async def test_notes_reasons_and_agents_ids_stay_with_staff_across_a_resume(
    db: Database, deploy: Callable[..., Deployment]
) -> None:
    deployment = deploy(db.url, groups=FIRST_REPLY_IN_5_SECONDS, timeouts=QUIET_VISITOR)
    async with deployment.client() as system:
        await _staff_words_stay_with_staff(system)


async def _staff_words_stay_with_staff(system: ApiClient) -> None:
    slow, slow_token = await system.create_agent("slow", max_concurrent=1)
    fast, fast_token = await system.create_agent("fast", max_concurrent=2, online=False)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, None, "active")
    await system.set_status(fast, fast_token, "online")
    asked = await system.say(cid, visitor, "My parcel arrived broken")

    # Slow never answers: requeued, and fast takes it (slow is skipped while fast is online).
    await system.wait_for_event(cid, None, "conversation.requeued")

    async def with_fast() -> bool:
        return (await system.conversation(cid))["agent_id"] == fast

    await eventually(with_fast, what="the conversation with fast")
    await system.say(cid, fast_token, "Sorry for the wait, let me look")
    noted = await system.add_note(cid, INTERNAL_NOTE, fast_token)
    assert noted.status_code == 201, noted.text
    assert noted.json()["data"] == {"kind": "note", "by": fast, "text": INTERNAL_NOTE}
    carol, carol_token = await system.create_agent("carol", max_concurrent=1)
    moved = await system.transfer(cid, fast_token, to_agent_id=carol, note=TRANSFER_NOTE)
    assert moved.status_code == 200, moved.text
    last = await system.say(cid, carol_token, "Carol here, I can approve that")

    # The visitor: neither note, nor who or why; the agents by their names.
    seen = await system.events(cid, visitor)
    assert [event["seq"] for event in seen][-1] == last
    told = json.dumps(seen)
    assert not [word for word in STAFF_WORDS if word in told], told
    assert "note.created" not in {event["type"] for event in seen}
    assert _of_type(seen, "conversation.requeued") == [CONNECTING]
    assert _of_type(seen, "conversation.transferred") == [CONNECTING]
    assert _of_type(seen, "conversation.assigned") == [
        {"agent_name": "Slow"},
        {"agent_name": "Fast"},
        {"agent_name": "Carol"},
    ]
    view = await system.conversation(cid, visitor)
    assert (view["agent_id"], view["agent_name"]) == (None, "Carol")

    # Staff read everything, with gapless seqs; the visitor's view has gaps there.
    everything = await system.events(cid)
    assert [event["seq"] for event in everything] == list(range(1, last + 1))
    assert {event["seq"] for event in seen} < {event["seq"] for event in everything}
    notes = _of_type(everything, "note.created")
    assert notes == [
        {"kind": "note", "by": fast, "text": INTERNAL_NOTE},
        {"kind": "transfer", "by": fast, "text": TRANSFER_NOTE},
    ]
    (requeued,) = _of_type(everything, "conversation.requeued")
    assert (requeued["agent_id"], requeued["reason"]) == (slow, "no_first_reply")
    (transferred,) = _of_type(everything, "conversation.transferred")
    assert (transferred["from_agent_id"], transferred["to_agent_id"]) == (fast, carol)
    # Both agents of the transfer have its note in their feeds; the agent who lost the
    # conversation for no reply has the reason in theirs.
    assert TRANSFER_NOTE in json.dumps(
        _of_type(await system.agent_feed(fast, fast_token), "note.created")
    )
    assert _of_type(await system.agent_feed(carol, carol_token), "note.created") == [notes[1]]
    (slow_lost,) = _of_type(await system.agent_feed(slow, slow_token), "conversation.requeued")
    assert slow_lost["reason"] == "no_first_reply"

    # A visitor's stream resumed (Last-Event-ID) from before all of it: the same events as
    # /events, nothing of staff's; staff's stream from there carries the notes too.
    after_visitor = [event for event in seen if event["seq"] > asked]
    async with system.conversation_stream(cid, visitor, last_event_id=str(asked)) as stream:
        streamed = await stream.take(len(after_visitor))
    assert [(e["seq"], e["type"], e["data"]) for e in streamed] == [
        (e["seq"], e["type"], e["data"]) for e in after_visitor
    ]
    async with system.conversation_stream(cid, last_event_id=str(asked)) as stream:
        streamed = await stream.take(last - asked)
    assert _of_type(streamed, "note.created") == notes


async def test_a_note_is_staff_text_with_a_limit(system: System) -> None:
    _alice, alice_token = await system.create_agent("alice", max_concurrent=1)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, None, "active")
    path = f"/v1/conversations/{cid}/notes"
    for body in ({"content": "x" * 2001}, {"content": "   "}, {"content": ""}, {}):
        refused = await system.http.post(path, headers=bearer(alice_token), json=body)
        assert refused.status_code == 422, (body, refused.text)
    by_visitor = await system.http.post(path, headers=bearer(visitor), json={"content": "hi"})
    assert by_visitor.status_code == 403
    by_admin = await system.http.post(path, headers=ADMIN, json={"content": "Checked"})
    assert by_admin.status_code == 201, by_admin.text
    assert [e["type"] for e in await system.events(cid, visitor)].count("note.created") == 0
    assert _of_type(await system.events(cid), "note.created") == [
        {"kind": "note", "by": "admin", "text": "Checked"}
    ]
