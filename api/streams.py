"""Live event streams (Server-Sent Events) over the append-only event log.

The log is the source of truth: a stream replays from the client's last seq, then tails. A hint
only wakes a stream early; a stream with no hint re-reads the log every `poll_interval`, so a
lost hint (or an event written by another process) delays, never loses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import anyio
import psycopg
from sqlalchemy.engine import make_url
from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool

from api.schemas import EventPublic
from store.db import Database
from store.events import events_after

log = logging.getLogger("switchboard.streams")

_PAGE = 500


class EventHints:
    """In-process wake-ups for streams of a conversation (set after a write commits)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def wake(self, conversation_id: str) -> None:
        event = self._events.pop(conversation_id, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        """After a lost connection to the hint source: every stream re-reads the log."""
        for conversation_id in list(self._events):
            self.wake(conversation_id)

    async def wait(self, conversation_id: str, timeout: float) -> bool:
        """True if woken, False if the timeout passed first."""
        event = self._events[conversation_id]
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True


NOTIFY_CHANNEL = "switchboard_events"


async def listen_for_events(database_url: str, hints: EventHints) -> None:
    """PostgreSQL: wake this process's streams when any process commits an event (LISTEN on a
    dedicated connection). Reconnects for ever; after a reconnect every stream re-reads."""
    conninfo = (
        make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                hints.wake_all()  # anything committed while we were not listening
                async for notification in conn.notifies():
                    hints.wake(notification.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event notifications lost (%s); reconnecting in 1s", exc)
            hints.wake_all()
            await asyncio.sleep(1)


async def conversation_events(
    *,
    db: Database,
    hints: EventHints,
    conversation_id: str,
    after_seq: int,
    poll_interval: float,
    max_age: float,
    stopping: anyio.Event,
) -> AsyncIterator[ServerSentEvent]:
    """Every event after `after_seq` in order, then live ones, until the connection is
    `max_age` old or the server stops (the client then reconnects with Last-Event-ID, to this
    process or another, and misses nothing)."""
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
                    # The same JSON as GET /events.
                    data=EventPublic(
                        seq=row.seq, type=row.type, at=row.at, data=row.data
                    ).model_dump_json(),
                )
                for row in rows
            ]

    while time.monotonic() < ends_at and not stopping.is_set():
        batch = await run_in_threadpool(read, last)
        for event in batch:
            yield event
            last = int(event.id or last)
        if len(batch) < _PAGE:
            await hints.wait(conversation_id, min(poll_interval, ends_at - time.monotonic()))
