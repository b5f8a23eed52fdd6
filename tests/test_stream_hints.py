"""Stream wake-ups: an event committed by any process wakes streams in every API process."""

from __future__ import annotations

import asyncio

import pytest
from starlette.concurrency import run_in_threadpool

from api.streams import EventHints, listen_for_events
from domain.types import EventType
from store.db import Database
from store.events import append_event
from tests.support.data import enqueue_conversations


def test_a_hint_wakes_only_its_key() -> None:
    async def scenario() -> tuple[bool, bool]:
        hints = EventHints()
        a, b = hints.subscribe("a"), hints.subscribe("b")
        woken = asyncio.create_task(a.woken_within(5))
        untouched = asyncio.create_task(b.woken_within(0.2))
        await asyncio.sleep(0.05)
        hints.wake("a")
        return await woken, await untouched

    assert asyncio.run(scenario()) == (True, False)


def test_a_wake_while_the_stream_reads_the_log_is_not_missed() -> None:
    async def scenario() -> bool:
        hints = EventHints()
        stream = hints.subscribe("a")
        stream.rearm()  # the stream starts reading the log ...
        hints.wake("a")  # ... an event commits meanwhile ...
        return await stream.woken_within(0.01)  # ... and it reads again at once

    assert asyncio.run(scenario())


def test_keys_live_only_while_a_stream_holds_them() -> None:
    hints = EventHints()
    first, second = hints.subscribe("agent:alice"), hints.subscribe("agent:alice")
    hints.publish("agent:alice", {"type": "conversation.typing"})
    assert first.live.qsize() == second.live.qsize() == 1
    hints.unsubscribe("agent:alice", first)
    hints.unsubscribe("agent:alice", second)
    assert hints._subscribers == {}
    hints.wake("agent:alice")  # nobody listens: nothing kept
    assert hints._subscribers == {}


@pytest.mark.postgres
async def test_postgres_notify_wakes_streams_of_another_process(postgres_db: Database) -> None:
    [conversation_id] = enqueue_conversations(postgres_db, 1)
    hints = EventHints()
    listener = asyncio.create_task(listen_for_events(postgres_db.url, hints))
    try:
        await asyncio.sleep(0.5)  # listening
        waiting = asyncio.create_task(hints.subscribe(conversation_id).woken_within(20))
        await asyncio.sleep(0.1)
        writer = Database(postgres_db.url)  # another process's connection pool

        def write_event() -> None:
            with writer.write() as session:
                append_event(session, conversation_id=conversation_id, type=EventType.STATE_CHANGED)

        await run_in_threadpool(write_event)
        writer.dispose()
        assert await waiting, "the committed event did not wake the stream"
    finally:
        listener.cancel()
