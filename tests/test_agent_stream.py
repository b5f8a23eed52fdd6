"""The agent's feed and stream: assignments, transfers in and out, and every event of the
agent's conversations, in one gapless order that follows commit order (so a stream resumes from
one number and misses nothing), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from domain.types import EventType
from store.db import Database
from store.events import agent_events_after, append_event
from store.models import AgentEvent, Conversation, Event
from tests.support.api import ADMIN, bearer, eventually
from tests.support.data import add_agent, enqueue_conversations
from tests.support.processes import Deployment
from tests.support.system import System


def _hold(db: Database, conversation_ids: list[str], agent_id: str) -> None:
    with db.write() as session:
        session.execute(
            sa.update(Conversation)
            .where(col(Conversation.id).in_(conversation_ids))
            .values(agent_id=agent_id, state="active")
        )


def test_a_feed_read_while_many_processes_write_misses_nothing_and_repeats_nothing(
    db: Database,
) -> None:
    add_agent(db, "alice", max_concurrent=5)
    add_agent(db, "bob", max_concurrent=5)
    alices = enqueue_conversations(db, 4)
    bobs = enqueue_conversations(db, 2)
    _hold(db, alices, "alice")
    _hold(db, bobs, "bob")
    writers = [Database(db.url) for _ in range(6)]  # each its own pool, like another process
    done = threading.Event()
    watched: list[tuple[int, int]] = []  # (feed seq, event id) as a stream tailing the feed saw
    failures: list[BaseException] = []

    def write(own: Database, seed: int) -> None:
        chooser = random.Random(seed)
        try:
            for n in range(30):
                with own.write() as session:
                    append_event(
                        session,
                        conversation_id=chooser.choice(alices + bobs),
                        type=EventType.MESSAGE_CREATED,
                        data={"n": n, "writer": seed},
                    )
        except BaseException as exc:
            failures.append(exc)

    def watch() -> None:
        reader = Database(db.url)
        last = 0
        while True:
            finished = done.is_set()
            with reader.read() as session:
                page = agent_events_after(session, agent_id="alice", after_seq=last, limit=50)
            watched.extend((seq, (event.conversation_id, event.seq)) for seq, event in page)
            last = page[-1][0] if page else last
            if finished and not page:
                break
            if not page:
                time.sleep(0.01)  # as a stream between wake-ups; not a busy loop
        reader.dispose()

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=write, args=(w, i)) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    for writer in writers:
        writer.dispose()
    assert not failures, failures

    with db.read() as session:
        feed = session.exec(
            select(AgentEvent.seq, AgentEvent.event_id)
            .where(AgentEvent.agent_id == "alice")
            .order_by(col(AgentEvent.seq))
        ).all()
        alices_events = session.exec(
            select(Event.id, Event.conversation_id, Event.seq).where(
                col(Event.conversation_id).in_(alices)
            )
        ).all()
        bobs_feed = session.exec(select(AgentEvent).where(AgentEvent.agent_id == "bob")).all()
    assert [seq for seq, _ in feed] == list(range(1, len(feed) + 1)), "a gap in the feed"
    assert sorted(event_id for _, event_id in feed) == sorted(e.id for e in alices_events)
    assert len(bobs_feed) == 180 - len(feed), "bob's conversations went to the wrong feed"
    by_id = {e.id: (e.conversation_id, e.seq) for e in alices_events}
    # Resuming after any seq never misses an event that committed later with a lower seq.
    assert watched == [(seq, by_id[event_id]) for seq, event_id in feed], (
        "the tailing reader missed or repeated"
    )
    # Each conversation's own order is kept in the feed.
    for conversation_id in alices:
        seqs = [by_id[event_id][1] for _, event_id in feed if by_id[event_id][0] == conversation_id]
        assert seqs == sorted(seqs)


async def _feed(system: System, agent_id: str, token: str, after: int = 0) -> list[dict]:
    events = await system.agent_feed(agent_id, token, after_seq=after)
    assert [e["agent_seq"] for e in events] == list(range(after + 1, after + len(events) + 1))
    return events


async def test_the_feed_shows_assignments_transfers_in_and_out_and_the_conversations(
    system: System,
) -> None:
    alice, alice_token = await system.create_agent("alice", max_concurrent=2)
    bob, bob_token = await system.create_agent("bob", max_concurrent=2)
    assert (await system.agent("bob"))["feed_seq"] == 0
    cid, visitor = await system.start_conversation()
    holder = (await system.wait_for_state(cid, None, "active"))["agent_id"]
    (first, first_token), (second, second_token) = sorted(
        [(alice, alice_token), (bob, bob_token)], key=lambda agent: agent[0] != holder
    )
    await system.post_message(cid, visitor, "Where is my parcel?")
    await system.post_message(cid, first_token, "Let me look")
    moved = await system.transfer(cid, first_token, to_agent_id=second, note="Courier question")
    assert moved.status_code == 200, moved.text
    await system.post_message(cid, visitor, "Hello?")
    await system.post_message(cid, second_token, "Hi, here now")

    async def transferred_in() -> list[dict] | None:
        feed = await _feed(system, second, second_token)
        return feed if any(e["type"] == "message.created" for e in feed) else None

    old = await _feed(system, first, first_token)
    new = await eventually(transferred_in, what="the new agent's feed")
    log = {e["seq"]: e for e in await system.events(cid)}  # as staff read it
    # Every entry is the conversation's event, with its conversation id and seq.
    for entry in old + new:
        assert entry["conversation_id"] == cid
        assert {k: entry[k] for k in ("seq", "type", "at", "data")} == log[entry["seq"]]
    old_types = [e["type"] for e in old]
    assert old_types[:2] == ["conversation.assigned", "conversation.state_changed"]
    assert old_types[-2:] == ["conversation.transferred", "note.created"], (
        "the old agent sees it go with their note, no more"
    )
    assert old[-1]["data"] == {"kind": "transfer", "by": first, "text": "Courier question"}
    assert [e["data"].get("content") for e in old if e["type"] == "message.created"] == [
        "Where is my parcel?",
        "Let me look",
    ]
    out = old[-2]["data"]
    assert (out["from_agent_id"], out["to_agent_id"]) == (first, second)
    new_types = [e["type"] for e in new]
    assert new_types[:3] == ["conversation.transferred", "conversation.assigned", "note.created"]
    assert [e["data"]["content"] for e in new if e["type"] == "message.created"] == [
        "Hello?",
        "Hi, here now",
    ]
    assert (await system.agent(second))["feed_seq"] == new[-1]["agent_seq"]
    assert await _feed(system, second, second_token, after=2) == new[2:]

    # Only the agent (or an admin) reads the feed.
    for path in ("events", "stream"):
        other = await system.http.get(f"/v1/agents/{first}/{path}", headers=bearer(visitor))
        assert other.status_code == 403
        peer = await system.http.get(f"/v1/agents/{first}/{path}", headers=bearer(second_token))
        assert peer.status_code == 403
        unknown = await system.http.get(f"/v1/agents/nobody/{path}", headers=ADMIN)
        assert unknown.status_code == 404
    assert await system.agent_feed(first) == old


@pytest.mark.e2e
async def test_both_streams_carry_the_conversation_live_and_the_agent_stream_resumes(
    db: Database, deploy: Callable[..., Deployment]
) -> None:
    async with deploy(db.url).client() as api:
        hana = await api.create_agent("hana", max_concurrent=2, online=False)
        feed_seq = (await api.agent(hana.id))["feed_seq"]
        async with api.agent_stream(hana.id, hana.token, after_seq=feed_seq) as desk:
            assert desk.response.status_code == 200
            await api.set_status(hana.id, hana.token, "online")
            cid, visitor = await api.start_conversation()
            await api.wait_for_state(cid, visitor, "active")
            assigned, active = await desk.take(2, timeout=10)
            assert (assigned["event"], assigned["conversation_id"]) == (
                "conversation.assigned",
                cid,
            )
            assert active["data"]["state"] == "active"
            async with api.conversation_stream(cid, visitor, after_seq=active["seq"]) as phone:
                said = []
                for token, text in [
                    (visitor, "My parcel is late"),
                    (hana.token, "Sorry! Checking"),
                    (visitor, "Thanks"),
                    (hana.token, "It arrives today"),
                ]:
                    said.append(await api.say(cid, token, text))
                on_desk = await desk.take(4, timeout=10)
                on_phone = await phone.take(4, timeout=10)
                for received in (on_desk, on_phone):
                    assert [e["seq"] for e in received] == said
                    assert [e["data"]["content"] for e in received] == [
                        "My parcel is late",
                        "Sorry! Checking",
                        "Thanks",
                        "It arrives today",
                    ]
                assert (
                    [int(e["id"]) for e in on_desk]
                    == [e["agent_seq"] for e in on_desk]
                    == list(range(active["agent_seq"] + 1, active["agent_seq"] + 5))
                )
                typed = await api.typing(cid, visitor)
                assert typed.status_code == 202
                [signal] = await desk.take(1, timeout=5)
                assert (signal["event"], signal["id"], signal["conversation_id"]) == (
                    "conversation.typing",
                    None,
                    cid,
                )
        # The workbench was away: it resumes from the last id it saw and misses nothing.
        last_seen = int(on_desk[-1]["id"])
        await api.say(cid, visitor, "Are you still there?")
        closed = await api.close(cid, hana.token)
        assert closed.status_code == 200
        feed = await api.agent_feed(hana.id, hana.token)
        missed = [e for e in feed if e["agent_seq"] > last_seen]
        assert missed[0]["type"] == "message.created"
        assert "conversation.closed" in [e["type"] for e in missed]
        async with api.agent_stream(hana.id, hana.token, last_event_id=str(last_seen)) as desk:
            resumed = await desk.take(len(missed), timeout=10)
        assert [int(e["id"]) for e in resumed] == [e["agent_seq"] for e in missed]
        assert [e["seq"] for e in resumed] == [e["seq"] for e in missed]
