"""Invariants 1 and 2: no acknowledged message lost or duplicated; per-conversation order."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlmodel import select

from api.main import create_app
from domain.types import EventType
from store.db import Database
from store.events import append_event
from store.messages import store_message
from store.models import Message
from tests.support.api import ADMIN, bearer
from tests.support.data import enqueue_conversations
from tests.support.policy import test_settings
from tests.support.system import System
from workflows.gateway import workflow_id


def _stored(db: Database, cid: str) -> list[Message]:
    with db.read() as session:
        return list(session.exec(select(Message).where(Message.conversation_id == cid)))


async def _workflow_seq(system: System, cid: str) -> int:
    """The seq of the latest message the workflow has taken in."""
    return (await system.snapshot(cid))["workflow"]["last_message_seq"]


async def test_a_retry_with_the_same_client_message_id_stores_nothing_new(system: System) -> None:
    cid, visitor = await system.start_conversation()
    await system.wait_for_event(cid, visitor, "queue.position_changed")
    first = await system.post_message(cid, visitor, "Where is my parcel?", "msg-1")
    again = await system.post_message(cid, visitor, "Where is my parcel?", "msg-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(_stored(system.db, cid)) == 1
    messages = [e for e in await system.events(cid, visitor) if e["type"] == "message.created"]
    assert len(messages) == 1 and messages[0]["seq"] == first.json()["seq"]
    assert await _workflow_seq(system, cid) == first.json()["seq"]
    # The same id from another sender is another message.
    other = await system.post_message(cid, visitor, "Hello", "msg-2")
    assert other.status_code == 201 and other.json()["seq"] == first.json()["seq"] + 1


async def test_a_retry_after_the_conversation_ended_answers_the_original(
    system: System,
) -> None:
    """A retry whose first try got through (its answer lost on the way) still answers the stored
    message once the workflow has finished: it is told again, and finished is no error here."""
    cid, visitor = await system.start_conversation()
    first = await system.post_message(cid, visitor, "Never mind, found it", "bye-1")
    assert first.status_code == 201, first.text
    closed = await system.close(cid, visitor)
    assert closed.status_code == 200, closed.text
    # Nobody served it: no rating phase, the workflow completes at once.
    handle = system.env.client.get_workflow_handle(workflow_id(cid))
    assert await handle.result() == "abandoned"

    again = await system.post_message(cid, visitor, "Never mind, found it", "bye-1")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    # A new message is refused: the conversation is closed.
    late = await system.post_message(cid, visitor, "One more thing", "bye-2")
    assert late.status_code == 409, late.text
    assert [m.client_message_id for m in _stored(system.db, cid)] == ["bye-1"]


async def test_engine_unreachable_answers_503_and_the_retry_completes_the_same_message(
    system: System,
) -> None:
    _agent_id, agent = await system.create_agent()
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    await system.post_message(cid, agent, "Anything else?")

    # A second API process whose Temporal connection is down, on the same database.
    cut_off = create_app(
        test_settings(system.db, system.policy_path, system.task_queue, "127.0.0.1:1")
    )
    async with (
        cut_off.router.lifespan_context(cut_off),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=cut_off), base_url="http://cut-off"
        ) as broken,
    ):
        response = await broken.post(
            f"/v1/conversations/{cid}/messages",
            headers=bearer(visitor),
            json={"client_message_id": "v-9", "content": "Yes, one more question"},
        )
        assert response.status_code == 503, response.text
        assert "retry" in response.json()["detail"]
    # Stored, but the workflow was never told.
    [unacknowledged] = [m for m in _stored(system.db, cid) if m.client_message_id == "v-9"]
    assert await _workflow_seq(system, cid) < unacknowledged.seq

    # The retry stores nothing new, answers the stored message and tells the workflow.
    retry = await system.post_message(cid, visitor, "Yes, one more question", "v-9")
    assert retry.status_code == 200, retry.text
    assert retry.json()["seq"] == unacknowledged.seq
    assert await _workflow_seq(system, cid) == unacknowledged.seq
    assert len([m for m in _stored(system.db, cid) if m.client_message_id == "v-9"]) == 1
    # The visitor answered: the idle countdown the agent's message started is cancelled.
    workflow = (await system.snapshot(cid))["workflow"]
    assert workflow["idle_warning_at"] is None and workflow["idle_close_at"] is None


async def test_concurrent_posts_get_gapless_increasing_seqs(system: System) -> None:
    _agent_id, agent = await system.create_agent()
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    responses = await asyncio.gather(
        *(
            system.post_message(cid, visitor if i % 2 else agent, f"message {i}", f"m-{i}")
            for i in range(40)
        )
    )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    events = await system.events(cid, visitor)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    seqs = sorted(r.json()["seq"] for r in responses)
    assert len(set(seqs)) == 40
    assert await _workflow_seq(system, cid) == seqs[-1]
    by_seq = {e["seq"]: e for e in events}
    for response in responses:
        event = by_seq[response.json()["seq"]]
        assert event["data"]["content"] == response.json()["content"]

    # Resuming from a seq returns exactly what came after, in order, page by page.
    middle = events[len(events) // 2]["seq"]
    page = await system.http.get(
        f"/v1/conversations/{cid}/events",
        params={"after_seq": middle, "limit": 5},
        headers=ADMIN,
    )
    assert [e["seq"] for e in page.json()["events"]] == list(range(middle + 1, middle + 6))
    assert page.json()["has_more"] is True
    rest = await system.http.get(
        f"/v1/conversations/{cid}/events", params={"after_seq": middle + 5}, headers=ADMIN
    )
    assert [e["seq"] for e in rest.json()["events"]] == list(range(middle + 6, len(events) + 1))
    assert rest.json()["has_more"] is False


def test_writers_in_many_processes_never_share_or_skip_a_seq(db: Database) -> None:
    [cid] = enqueue_conversations(db, 1)
    writers = [Database(db.url) for _ in range(8)]
    barrier = threading.Barrier(len(writers))

    def write(index: int) -> list[int]:
        own = writers[index]
        barrier.wait()
        seqs = []
        for n in range(25):
            if n % 2:
                stored = store_message(
                    own,
                    conversation_id=cid,
                    sender_role="visitor",
                    sender_id=f"visitor-{index}",
                    client_message_id=f"{index}-{n}",
                    type="text",
                    content="hi",
                )
                seqs.append(stored.message.seq)
            else:
                with own.write() as session:
                    seqs.append(
                        append_event(
                            session, conversation_id=cid, type=EventType.STATE_CHANGED, data={}
                        ).seq
                    )
        return seqs

    with ThreadPoolExecutor(len(writers)) as pool:
        all_seqs = [seq for seqs in pool.map(write, range(len(writers))) for seq in seqs]
    for own in writers:
        own.dispose()
    assert sorted(all_seqs) == list(range(1, 201))
    messages = _stored(db, cid)
    assert len(messages) == 8 * 12 and len({m.seq for m in messages}) == len(messages)


async def test_read_receipts_reach_the_other_side_once(system: System) -> None:
    _agent_id, agent = await system.create_agent()
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    seq = (await system.post_message(cid, agent, "Your parcel ships today")).json()["seq"]

    read = await system.mark_read(cid, visitor, seq)
    assert read.status_code == 200, read.text
    assert (read.json()["visitor_read_seq"], read.json()["agent_read_seq"]) == (seq, 0)
    again = await system.mark_read(cid, visitor, seq - 1)
    assert again.json()["visitor_read_seq"] == seq  # never goes back
    receipts = [e for e in await system.events(cid, agent) if e["type"] == "message.read"]
    assert [r["data"] for r in receipts] == [
        {"by_role": "visitor", "by_id": f"visitor:{cid}", "seq": seq}
    ]
    beyond = await system.mark_read(cid, agent, 10_000)
    assert beyond.status_code == 422
    assert (await system.conversation(cid, agent))["visitor_read_seq"] == seq
