"""Live event streams (Server-Sent Events) over the append-only event log.

The log is the source of truth: a stream replays from the client's last seq, then tails. A hint
only wakes a stream early; a stream with no hint re-reads the log every `poll_interval`, so a
lost hint (or an event written by another process) delays, never loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from asyncio import FIRST_COMPLETED
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

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
_LIVE_BUFFER = 64


class EventHints:
    """In-process wake-ups for streams of a conversation (set after a write commits), and
    the live-only signals (typing) that are never stored."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._live: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def subscribe(self, conversation_id: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=_LIVE_BUFFER)
        self._live[conversation_id].add(queue)
        return queue

    def unsubscribe(self, conversation_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        listeners = self._live.get(conversation_id)
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self._live[conversation_id]

    def publish(self, conversation_id: str, signal: dict[str, Any]) -> None:
        """Hand a live-only signal to this process's streams; a full (slow) stream skips it."""
        for queue in self._live.get(conversation_id, ()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(signal)

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
LIVE_CHANNEL = "switchboard_live"


def live_signal_payload(conversation_id: str, signal: dict[str, Any]) -> str:
    return json.dumps({"conversation_id": conversation_id, "signal": signal})


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
                await conn.execute(f"LISTEN {LIVE_CHANNEL}")
                hints.wake_all()  # anything committed while we were not listening
                async for notification in conn.notifies():
                    if notification.channel == LIVE_CHANNEL:
                        payload = json.loads(notification.payload)
                        hints.publish(payload["conversation_id"], payload["signal"])
                    else:
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

    live = hints.subscribe(conversation_id)
    try:
        while time.monotonic() < ends_at and not stopping.is_set():
            batch = await run_in_threadpool(read, last)
            for event in batch:
                yield event
                last = int(event.id or last)
            while not live.empty():  # live-only: no id, so resuming never asks for them
                signal = live.get_nowait()
                yield ServerSentEvent(event=signal["type"], data=json.dumps(signal))
            if len(batch) < _PAGE:
                timeout = min(poll_interval, ends_at - time.monotonic())
                woken = asyncio.ensure_future(hints.wait(conversation_id, timeout))
                signalled = asyncio.ensure_future(live.get())
                try:
                    done, _ = await asyncio.wait({woken, signalled}, return_when=FIRST_COMPLETED)
                finally:  # also when the client goes away mid-wait
                    woken.cancel()
                    if not signalled.done():
                        signalled.cancel()
                if signalled in done:
                    signal = signalled.result()
                    yield ServerSentEvent(event=signal["type"], data=json.dumps(signal))
    finally:
        hints.unsubscribe(conversation_id, live)
