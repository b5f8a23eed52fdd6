"""Live event streams (Server-Sent Events) over the append-only event log.

The log is the source of truth: a stream replays from the client's last seq, then tails. A hint
only wakes a stream early; a stream with no hint re-reads the log every `poll_interval`, so a
lost hint (or an event written by another process) delays, never loses.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool

from store.db import Database
from store.events import events_after

_PAGE = 500


class EventHints:
    """In-process wake-ups for streams of a conversation (set after a write commits)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def wake(self, conversation_id: str) -> None:
        event = self._events.pop(conversation_id, None)
        if event is not None:
            event.set()

    async def wait(self, conversation_id: str, timeout: float) -> None:
        event = self._events[conversation_id]
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass


async def conversation_events(
    *,
    db: Database,
    hints: EventHints,
    conversation_id: str,
    after_seq: int,
    poll_interval: float,
    max_age: float,
) -> AsyncIterator[ServerSentEvent]:
    """Every event after `after_seq` in order, then live ones, until the connection is
    `max_age` old (the client then reconnects with Last-Event-ID and misses nothing)."""
    last = after_seq
    ends_at = time.monotonic() + max_age

    def read(since: int) -> list[ServerSentEvent]:
        with db.read() as session:
            rows = events_after(
                session, conversation_id=conversation_id, after_seq=since, limit=_PAGE
            )
            return [
                ServerSentEvent(
                    id=str(row.seq),
                    event=row.type,
                    data=json.dumps(
                        {
                            "seq": row.seq,
                            "type": row.type,
                            "at": row.at.isoformat(),
                            "data": row.data,
                        }
                    ),
                )
                for row in rows
            ]

    while time.monotonic() < ends_at:
        batch = await run_in_threadpool(read, last)
        for event in batch:
            yield event
            last = int(event.id or last)
        if len(batch) < _PAGE:
            await hints.wait(conversation_id, min(poll_interval, ends_at - time.monotonic()))
