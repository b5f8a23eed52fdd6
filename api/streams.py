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
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import psycopg
from sqlalchemy.engine import make_url
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from api.schemas import AgentEventPublic, EventPublic
from settings import Settings
from store.agents import agent_feed
from store.conversations import conversation_events
from store.db import Database, unavailable
from store.events import (
    NOTIFY_CHANNEL,
    AgentOwnEvent,
    EventView,
    FeedEvent,
    agent_stream_key,
    conversations_since,
    feed_positions,
    newest_event_id,
)

log = logging.getLogger("switchboard.streams")
# Who sent a live signal: its own streams never get it back. Kept for that, never shown.
SENDER = "_sender"

_PAGE = 500
_LIVE_BUFFER = 64

Tail = AsyncIterator[ServerSentEvent]
# Why the caller may no longer read a stream (their access ended), or None: checked before a
# stream shows anything it read, and every ACCESS_CHECK_INTERVAL while it has nothing to show.
AccessCheck = Callable[[], str | None]
ACCESS_CHECK_INTERVAL = 2.0
# A stream's last event when its caller's access ended: `data` says why ({"reason": …}).
STREAM_ENDED = "stream.ended"


def stream_keys(conversation_id: str, agent_id: str | None) -> list[str]:
    """The streams that show a conversation's events: its own, and its agent's."""
    return [conversation_id] if agent_id is None else [conversation_id, agent_stream_key(agent_id)]


class Subscription:
    """One stream's hold on a key: whether it was woken since it last looked, and the live-only
    signals (typing) handed to it, at most _LIVE_BUFFER (a slow stream skips the rest). Its
    `viewer` (who holds the stream) is never handed their own signals."""

    def __init__(self, viewer: str | None = None) -> None:
        self.viewer = viewer
        self.live: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=_LIVE_BUFFER)
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    def rearm(self) -> None:
        """Call before reading the log: a wake from then on is not missed."""
        self._woken.clear()

    async def woken_within(self, timeout: float) -> bool:
        """True if woken (now or already since rearm), False if the timeout passed first."""
        try:
            await asyncio.wait_for(self._woken.wait(), timeout)
        except TimeoutError:
            return False
        return True


class EventHints:
    """In-process wake-ups for this process's streams (after a write commits, or a NOTIFY from
    another process), and the live-only signals that are never stored. Keyed by conversation
    id, or agent_stream_key(agent id); a key lives while a stream holds it."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)

    def subscribe(self, key: str, viewer: str | None = None) -> Subscription:
        subscription = Subscription(viewer)
        self._subscribers[key].add(subscription)
        return subscription

    def unsubscribe(self, key: str, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(key)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[key]

    def publish(self, key: str, signal: dict[str, Any]) -> None:
        """Hand a live-only signal to the key's streams, but those of its sender (its
        `SENDER`, which no stream shows: a visitor reads no agent's id)."""
        for subscription in self._subscribers.get(key, ()):
            if subscription.viewer is not None and subscription.viewer == signal.get(SENDER):
                continue
            with contextlib.suppress(asyncio.QueueFull):
                subscription.live.put_nowait(signal)
            subscription.wake()

    def wake(self, *keys: str) -> None:
        for key in keys:
            for subscription in self._subscribers.get(key, ()):
                subscription.wake()

    def wake_all(self) -> None:
        """After a lost connection to the hint source: every stream re-reads the log."""
        self.wake(*self._subscribers)

    @property
    def watched(self) -> bool:
        """Whether any stream of this process holds a key (else a wake reaches nobody)."""
        return bool(self._subscribers)


class StreamSlots:
    """How many streams each holder (a visitor) has open in this process, up to `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def take(self, holder: str) -> Callable[[], None] | None:
        """One more stream for `holder`: the function that gives the slot back (once, however
        often it is called), or None if the holder has `limit` streams open already."""
        if self._held.get(holder, 0) >= self.limit:
            return None
        self._held[holder] = self._held.get(holder, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._held[holder] -= 1
            if not self._held[holder]:
                del self._held[holder]

        return release


class _StreamResponse(EventSourceResponse):
    """An SSE response that runs `while_open` beside it (cancelled when it ends) and
    `on_close` when it ends, however it ends."""

    def __init__(
        self,
        *args: Any,
        on_close: Callable[[], None] | None = None,
        while_open: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close
        self._while_open = while_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        beside = None if self._while_open is None else asyncio.create_task(self._while_open())
        try:
            await super().__call__(scope, receive, send)
        finally:
            if beside is not None:
                beside.cancel()
            if self._on_close is not None:
                self._on_close()


LIVE_CHANNEL = "switchboard_live"


def live_signal_payload(keys: list[str], signal: dict[str, Any]) -> str:
    return json.dumps({"keys": keys, "signal": signal})


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
                        for key in payload["keys"]:
                            hints.publish(key, payload["signal"])
                    else:
                        hints.wake(notification.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event notifications lost (%s); reconnecting in 1s", exc)
            hints.wake_all()
            await asyncio.sleep(1)


# How often an API process on SQLite looks for events other processes appended.
LOG_WATCH_INTERVAL = 0.05


def _log_changes(
    db: Database, after_id: int | None, feeds: dict[str, int], *, watched: bool = True
) -> tuple[int, set[str], dict[str, int]]:
    """(newest event id, the stream keys with events since `after_id` (None: the first look,
    no keys), the agents' feed seqs). Not `watched` (no stream open here): the newest id alone,
    so the first look once a stream opens finds what changed since, and no more."""
    with db.read() as session:
        newest = newest_event_id(session)
        if newest == after_id or (not watched and after_id is not None):
            return newest, set(), feeds
        current = feed_positions(session)
        if after_id is None:
            return newest, set(), current
        keys = conversations_since(session, after_id, newest)
    keys |= {agent_stream_key(agent) for agent, seq in current.items() if feeds.get(agent) != seq}
    return newest, keys, current


# With no stream open in the process, the watcher only keeps its place, this often: once one
# opens, its first look reads what moved since (a second of events at most), then every
# LOG_WATCH_INTERVAL again.
UNWATCHED_LOOK_INTERVAL = 1.0


def look_now(*, watched: bool, placed: bool, since: float) -> bool:
    """Whether the watcher looks at the log now, `since` seconds after its last look: always
    while a stream of the process is open, or before it has a place; else once a second."""
    return watched or not placed or since >= UNWATCHED_LOOK_INTERVAL


async def watch_sqlite_log(
    db: Database, hints: EventHints, interval: float = LOG_WATCH_INTERVAL
) -> None:
    """SQLite has no NOTIFY: wake this process's streams when any process (a worker's
    activities, another API) appends events, by looking at the newest event id every
    `interval` (one indexed lookup; the changed conversations and agents' feeds only when it
    moved). Without it such events waited for each stream's own poll (bench/ B5)."""
    newest: int | None = None
    feeds: dict[str, int] = {}
    looked = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        if not look_now(
            watched=hints.watched, placed=newest is not None, since=time.monotonic() - looked
        ):
            continue
        looked = time.monotonic()
        try:
            # With no stream open here (an API taking messages only), which conversations
            # moved is nobody's business: a look at the newest id alone keeps our place.
            newest, keys, feeds = await run_in_threadpool(
                partial(_log_changes, watched=hints.watched), db, newest, feeds
            )
        except Exception as exc:  # a locked or unreachable database: the polls carry on
            log.warning("could not look at the event log (%s); trying again in 1s", exc)
            await asyncio.sleep(1)
            continue
        hints.wake(*keys)


def event_public(event: EventView) -> EventPublic:
    """An event as GET /events and the conversation stream show it (to staff, or to the
    visitor: store/events.py reads it for one or the other)."""
    return EventPublic(seq=event.seq, type=event.type, at=event.at, data=event.data)


def agent_event_public(agent_seq: int, event: FeedEvent) -> AgentEventPublic:
    """An event of an agent's feed, as GET /v1/agents/{id}/events and its stream show it: a
    conversation's, or the agent's own (no conversation, no seq)."""
    if isinstance(event, AgentOwnEvent):
        return AgentEventPublic(
            agent_seq=agent_seq,
            conversation_id=None,
            seq=None,
            type=event.type,
            at=event.at,
            data=event.data,
        )
    return AgentEventPublic(
        agent_seq=agent_seq,
        conversation_id=event.conversation_id,
        **event_public(event).model_dump(),
    )


LogReader = Callable[[int], list[ServerSentEvent]]


def conversation_log(db: Database, conversation_id: str, *, staff: bool) -> LogReader:
    """Pages of a conversation's log as SSE, as staff or as its visitor read it: `id:` is the
    event's seq."""

    def read(since: int) -> list[ServerSentEvent]:
        rows = conversation_events(
            db, conversation_id=conversation_id, after_seq=since, limit=_PAGE, staff=staff
        )
        return [
            ServerSentEvent(
                id=str(row.seq), event=row.type, data=event_public(row).model_dump_json()
            )
            for row in rows
        ]

    return read


def agent_log(db: Database, agent_id: str) -> LogReader:
    """Pages of an agent's feed as SSE: `id:` is the feed seq."""

    def read(since: int) -> list[ServerSentEvent]:
        rows = agent_feed(db, agent_id=agent_id, after_seq=since, limit=_PAGE)
        return [
            ServerSentEvent(
                id=str(seq), event=event.type, data=agent_event_public(seq, event).model_dump_json()
            )
            for seq, event in rows
        ]

    return read


def event_stream(
    *,
    settings: Settings,
    hints: EventHints,
    read: LogReader,
    key: str,
    after_seq: int,
    viewer: str,
    on_close: Callable[[], None] | None = None,
    access: AccessCheck | None = None,
    while_open: Callable[[], Awaitable[None]] | None = None,
) -> EventSourceResponse:
    """The SSE response of one stream held by `viewer` (a principal's id): the log from
    `after_seq`, then live (see `tail`); `on_close` runs when the connection ends; `access` ends
    it when the caller's access does; `while_open` runs as long as the connection is open
    (an agent's presence)."""
    stopping = anyio.Event()  # set when the server shuts down: end the stream cleanly
    return _StreamResponse(
        tail(
            read=read,
            key=key,
            hints=hints,
            after_seq=after_seq,
            viewer=viewer,
            poll_interval=settings.stream_poll_interval_seconds,
            max_age=settings.stream_max_age_seconds,
            stopping=stopping,
            access=access,
        ),
        ping=settings.stream_keepalive_seconds,
        send_timeout=30,  # a client that stops reading is dropped, not waited for
        shutdown_event=stopping,
        shutdown_grace_period=settings.stream_poll_interval_seconds + 2,
        on_close=on_close,
        while_open=while_open,
    )


async def tail(
    *,
    read: LogReader,
    key: str,
    hints: EventHints,
    after_seq: int,
    viewer: str | None,
    poll_interval: float,
    max_age: float,
    stopping: anyio.Event,
    access: AccessCheck | None = None,
) -> Tail:
    """Every event after `after_seq` in order, then live ones, until the connection is
    `max_age` old or the server stops (the client then reconnects with Last-Event-ID, to this
    process or another, and misses nothing), or until `access` says why the caller may read no
    more (then a last STREAM_ENDED event says it). `read(since)` pages the log; `key` is what
    wakes this stream and what its live-only signals are published under (but the `viewer`'s
    own)."""
    last = after_seq
    ends_at = time.monotonic() + max_age
    checked_at = time.monotonic()  # the route checked the caller's access just now
    subscription = hints.subscribe(key, viewer)

    def look(since: int, live: bool) -> tuple[list[ServerSentEvent], str | None]:
        """The next page, and why the caller's access ended (None: it has not, or no look)."""
        nonlocal checked_at
        batch = read(since)
        due = time.monotonic() - checked_at >= ACCESS_CHECK_INTERVAL
        if access is None or not (batch or live or due):
            return batch, None
        # After the read: a transfer away that committed before it is seen here, so nothing
        # read is shown to a caller who had lost the conversation.
        checked_at = time.monotonic()
        return batch, access()

    try:
        while time.monotonic() < ends_at and not stopping.is_set():
            subscription.rearm()
            live = []  # handed over before the look: shown only if the caller may still see them
            while not subscription.live.empty():
                live.append(subscription.live.get_nowait())
            try:
                batch, ended = await run_in_threadpool(look, last, bool(live))
            except Exception as exc:
                if not unavailable(exc):
                    raise
                # The database is unreachable: keep the stream and read again, from `last`.
                log.warning("stream %s cannot read the event log (%s); retrying", key, exc)
                await subscription.woken_within(max(poll_interval, 1.0))
                continue
            if ended is not None:
                yield ServerSentEvent(
                    event=STREAM_ENDED, data=json.dumps({"type": STREAM_ENDED, "reason": ended})
                )
                return
            for event in batch:
                yield event
                last = int(event.id or last)
            for signal in live:  # no id: resuming never asks for them
                shown = {name: value for name, value in signal.items() if name != SENDER}
                yield ServerSentEvent(event=signal["type"], data=json.dumps(shown))
            if len(batch) < _PAGE:
                await subscription.woken_within(min(poll_interval, ends_at - time.monotonic()))
    finally:
        hints.unsubscribe(key, subscription)
