"""SQLite has no NOTIFY: an API process watches the log, so events other processes commit (a
worker's activities) wake its streams without waiting for their own poll. The bulk writer of a
queue's position announcements keeps every rule of the one-at-a-time writer."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from api.streams import (
    UNWATCHED_LOOK_INTERVAL,
    EventHints,
    _log_changes,
    look_now,
    watch_sqlite_log,
)
from domain.types import EventType
from store.db import Database
from store.events import agent_events_after, agent_stream_key, append_event, append_events
from store.models import Agent, Conversation, Event
from tests.support.data import enqueue_conversations


async def test_events_another_process_commits_wake_the_streams_of_their_keys(
    db: Database,
) -> None:
    if not db.is_sqlite:
        pytest.skip("PostgreSQL's NOTIFY does this (test_stream_hints.py)")
    [first, second] = enqueue_conversations(db, 2)
    with db.write() as session:
        session.add(Agent(id="alice", name="Alice", token_hash="x", max_concurrent=2))
    hints = EventHints()
    watcher = asyncio.create_task(watch_sqlite_log(db, hints, interval=0.02))
    try:
        await asyncio.sleep(0.3)  # the watcher has had its first look
        conversation = asyncio.create_task(hints.subscribe(first).woken_within(20))
        feed = asyncio.create_task(hints.subscribe(agent_stream_key("alice")).woken_within(20))
        untouched = asyncio.create_task(hints.subscribe(second).woken_within(1))
        writer = Database(db.url)  # another process's connections

        def write_event() -> None:
            with writer.write() as session:
                append_event(
                    session,
                    conversation_id=first,
                    type=EventType.TRANSFERRED,
                    also_to_agents=["alice"],
                )

        await run_in_threadpool(write_event)
        writer.dispose()
        assert await conversation, "the committed event did not wake its conversation's stream"
        assert await feed, "the committed event did not wake the agent's stream"
        assert not await untouched, "a conversation without new events was woken"
    finally:
        watcher.cancel()


def _transfer_event(db: Database, conversation_id: str) -> None:
    with db.write() as session:
        append_event(session, conversation_id=conversation_id, type=EventType.TRANSFERRED)


def test_with_no_stream_open_the_watcher_keeps_its_place_and_nothing_more(db: Database) -> None:
    # An API process that only takes messages has no stream to wake: which conversations moved
    # is not read (a look at the newest id alone), and the first look once a stream opens
    # finds what moved since the place it kept, not before.
    [first, second] = enqueue_conversations(db, 2)
    newest, keys, feeds = _log_changes(db, None, {}, watched=False)
    assert keys == set()
    _transfer_event(db, first)
    moved, keys, feeds = _log_changes(db, newest, feeds, watched=False)
    assert moved > newest, "the place was not kept while nobody watched"
    assert keys == set(), "unwatched, the moved conversations were read all the same"
    _transfer_event(db, second)
    _, keys, _ = _log_changes(db, moved, feeds, watched=True)
    assert keys == {second}


def test_with_no_stream_open_the_watcher_looks_once_a_second_else_at_every_interval() -> None:
    assert look_now(watched=True, placed=True, since=0.0)
    assert look_now(watched=False, placed=False, since=0.0), "no place kept yet"
    assert not look_now(watched=False, placed=True, since=UNWATCHED_LOOK_INTERVAL / 2)
    assert look_now(watched=False, placed=True, since=UNWATCHED_LOOK_INTERVAL)


def _last_seq(session: Session, conversation_id: str) -> int:
    conversation = session.get(Conversation, conversation_id)
    assert conversation is not None
    return conversation.last_seq


def test_bulk_events_take_the_next_seqs_and_reach_the_holders_feed(db: Database) -> None:
    ids = enqueue_conversations(db, 3)
    with db.write() as session:
        session.add(Agent(id="bob", name="Bob", token_hash="y", max_concurrent=2))
    with db.write() as session:
        held = session.get(Conversation, ids[1])
        assert held is not None
        held.agent_id = "bob"
        session.add(held)
        before = {cid: _last_seq(session, cid) for cid in ids}
        append_events(
            session,
            type=EventType.QUEUE_POSITION,
            items=[(cid, {"position": n}) for n, cid in enumerate(ids, start=1)],
        )
    with db.read() as session:
        for n, cid in enumerate(ids, start=1):
            events = session.exec(
                select(Event).where(Event.conversation_id == cid).order_by(col(Event.seq))
            ).all()
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq gap"
            assert events[-1].seq == before[cid] + 1
            assert (events[-1].type, events[-1].data) == (EventType.QUEUE_POSITION, {"position": n})
            assert _last_seq(session, cid) == events[-1].seq
        feed = agent_events_after(session, agent_id="bob", after_seq=0, limit=10)
    assert [(seq, event.conversation_id) for seq, event in feed][-1:] == [(len(feed), ids[1])]
