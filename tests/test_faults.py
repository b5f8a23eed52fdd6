"""Faults, as a deployment meets them: a worker SIGKILLed with 100 conversations active, the
file-backed dev server killed and restarted under load, the database unreachable for a while,
the API SIGKILLed between storing messages and telling their workflows.

Everything runs as deployed (tests.support.processes.Deployment: `python worker.py` and uvicorn,
configured by environment) with second-scale timeouts, driven over HTTP by clients that do
what the README asks of them: on a 503 (which must carry Retry-After) send the same request
again, a message with the same client_message_id; a close sent again answers as the first
would have. After each fault the end state must be exact: every conversation closed for the
right reason with its closing message and rating events, each transcript exactly the
acknowledged messages (once each, seqs without gaps), every due timer fired, every seat given
back, no agent over capacity, nobody assigned twice. The harness waits for conditions, not
for guessed durations: a loaded machine makes it slower, not flaky.

The one exception is the client that gives up (section 5): it never sends again what the dead
API stored and never told, and the reconciler, not the client, must see it told.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlmodel import col, func, select
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.testing import WorkflowEnvironment

from dispatcher import Reconciler
from domain.errors import NEWER_MESSAGE
from domain.types import ConversationSnapshot
from store.db import Database
from store.messages import store_message
from store.models import Assignment, Conversation, Event, Message
from tests.support import decisions
from tests.support.api import ADMIN_TOKEN, APP, APP_KEY, ApiClient, bearer
from tests.support.backends import on_postgres_alone_but_in_the_soak
from tests.support.decisions import transcript
from tests.support.policy import DEFAULT_GROUPS
from tests.support.processes import Deployment
from tests.support.proxy import TcpProxy
from tests.support.system import StartSystem
from tests.support.temporal import DevServer, address
from workflows import ConversationWorkflow, gateway

# An idle connection dropped before uvicorn's own 5 s keep-alive ends it: else a request sent
# as the server closes it fails with a ReadError on a loaded machine.
CALM_KEEPALIVE = httpx.Limits(keepalive_expiry=2)
pytestmark = pytest.mark.e2e

T = TypeVar("T")
X = TypeVar("X")

Plan = Literal["idle", "agent_close", "visitor_close"]
PLANS: tuple[Plan, ...] = ("idle", "agent_close", "visitor_close")
REASON: dict[Plan, str] = {
    "idle": "idle_timeout",  # the visitor went silent after the agent's message
    "agent_close": "agent_closed",
    "visitor_close": "visitor_closed",
}
CLOSING_TEXT = {"idle_timeout": "Closed for inactivity.", "agent_closed": "Solved, thank you."}


@dataclass
class Chat:
    id: str
    visitor: str  # the visitor's token
    plan: Plan
    agent_id: str | None = None
    acked: list[str] = field(default_factory=list)  # client_message_ids answered 2xx
    refused: list[str] = field(default_factory=list)  # answered 409: the conversation closed
    rated: bool | None = False  # None: the rating raced its window
    rating_window_ends: datetime | None = None  # as the close's answer said


async def each(
    items: Iterable[X], work: Callable[[X], Awaitable[T]], *, limit: int = 20
) -> list[T]:
    """`work` on every item, at most `limit` at a time (the first failure cancels the rest)."""
    gate = asyncio.Semaphore(limit)

    async def one(item: X) -> T:
        async with gate:
            return await work(item)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(item)) for item in items]
    return [task.result() for task in tasks]


async def poll(
    check: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    timeout: float = 90,
    progress: Callable[[], Awaitable[object]] | None = None,
) -> T:
    """Like tests.utils.eventually, at a pace that leaves the CPUs to the system under test.
    With `progress` (a reading of how far the system has come) the deadline counts from its
    last change: a loaded machine is slow, a stuck system stands still."""
    deadline = time.monotonic() + timeout
    reading = await progress() if progress else None
    while True:
        if result := await check():
            return result
        if progress is not None and (now := await progress()) != reading:
            reading, deadline = now, time.monotonic() + timeout
        if time.monotonic() > deadline:
            still = " with nothing written meanwhile" if progress else ""
            raise AssertionError(f"timed out after {timeout}s{still} waiting for {what}")
        await asyncio.sleep(0.25)


async def finished(future: asyncio.Future[T], *, what: str) -> T:
    """The future's result, once it has one."""

    async def done() -> bool:
        return future.done()

    await poll(done, what=what)
    return future.result()


async def until_past(moment: datetime) -> None:
    """Wait (the test's clock is the servers' clock) until `moment` has passed."""
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.5)


class Clients:
    """Visitors, agents and an admin over HTTP. A 503 must carry Retry-After; the client then
    sends the same request again until it is answered. Any other 5xx fails the test."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.agents: dict[str, str] = {}  # id → token
        self.capacity: dict[str, int] = {}
        self.unavailable: Counter[str] = Counter()  # 503s, by what was asked
        self.retried: dict[str, int] = {}  # messages answered 503 first → their final status

    async def call(
        self, what: str, method: str, path: str, token: str, body: dict[str, Any] | None = None
    ) -> tuple[httpx.Response, int]:
        """The answer, after as many retries as it took, and how many 503s came first."""
        unavailable = 0
        while True:
            response = await self.http.request(method, path, headers=bearer(token), json=body)
            if response.status_code != 503:
                assert response.status_code < 500, f"{what}: {response.status_code} {response.text}"
                return response, unavailable
            retry_after = response.headers.get("retry-after", "")
            assert retry_after.isdigit(), f"{what}: 503 without Retry-After: {response.headers}"
            unavailable += 1
            self.unavailable[what] += 1
            await asyncio.sleep(int(retry_after))

    async def add_agents(self, count: int, capacity: int) -> None:
        async def add(index: int) -> None:
            agent_id = f"agent-{index}"
            created, _ = await self.call(
                "agent",
                "POST",
                "/v1/agents",
                ADMIN_TOKEN,
                {
                    "id": agent_id,
                    "name": agent_id,
                    "skill_groups": ["general"],
                    "max_concurrent": capacity,
                },
            )
            assert created.status_code == 201, created.text
            token = created.json()["token"]
            online, _ = await self.call(
                "status", "PUT", f"/v1/agents/{agent_id}/status", token, {"status": "online"}
            )
            assert online.status_code == 200, online.text
            self.agents[agent_id] = token
            self.capacity[agent_id] = capacity

        await each(range(count), add)

    async def start(self, plan: Plan) -> Chat:
        """A retry after a 503 asks again for the same customer: it gets the same one (200)."""
        customer_id = f"customer-{uuid.uuid4().hex[:10]}"
        response, unavailable = await self.call(
            "start",
            "POST",
            "/v1/conversations",
            APP_KEY,
            {"customer_id": customer_id, "channel": "web"},
        )
        assert response.status_code in ((200, 201) if unavailable else (201,)), response.text
        body = response.json()
        return Chat(id=body["id"], visitor=body["visitor_token"], plan=plan)

    def token(self, chat: Chat, role: Literal["visitor", "agent"]) -> str:
        if role == "visitor":
            return chat.visitor
        assert chat.agent_id is not None, f"{chat.id} has no agent yet"
        return self.agents[chat.agent_id]

    async def say(self, chat: Chat, role: Literal["visitor", "agent"], text: str) -> int:
        message_id = uuid.uuid4().hex
        response, unavailable = await self.call(
            "message",
            "POST",
            f"/v1/conversations/{chat.id}/messages",
            self.token(chat, role),
            {"client_message_id": message_id, "type": "text", "content": text},
        )
        if unavailable:
            self.retried[message_id] = response.status_code
        if response.status_code in (200, 201):
            assert response.json()["client_message_id"] == message_id, response.text
            chat.acked.append(message_id)
        else:
            # Refused: closed (409), or, for a visitor, its token ended with the short rating
            # window (401) on a machine slow enough for the window to pass first.
            ended = role == "visitor" and response.status_code == 401
            assert response.status_code == 409 or ended, response.text
            chat.refused.append(message_id)
        return response.status_code

    async def close(self, chat: Chat) -> None:
        """The agent or the visitor closes, as planned. A close retried after a 503 answers as
        the first would have, whether that one went through or not: closed, for this reason."""
        role: Literal["visitor", "agent"] = "agent" if chat.plan == "agent_close" else "visitor"
        response, _ = await self.call(
            "close", "POST", f"/v1/conversations/{chat.id}/close", self.token(chat, role)
        )
        if response.status_code == 401 and role == "visitor":
            # A retry after its first try closed it and the short rating window passed: the
            # visitor's token has ended with it. The admin sees how it closed.
            response, _ = await self.call(
                "closed", "GET", f"/v1/conversations/{chat.id}", ADMIN_TOKEN
            )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["state"], body["close_reason"]) == ("closed", REASON[chat.plan]), body
        if ends := body["rating"]["expires_at"]:
            chat.rating_window_ends = datetime.fromisoformat(ends)

    async def rate(self, chat: Chat, *, may_expire: bool = False) -> None:
        """A 409 is right once the window has passed (a loaded machine answers late), or a 401
        (the visitor's token ends with the window). `may_expire`: besides, an outage may hold
        the rating past its window."""
        response, _ = await self.call(
            "rating",
            "POST",
            f"/v1/conversations/{chat.id}/rating",
            chat.visitor,
            {"score": 4, "resolved": True},
        )
        late = chat.rating_window_ends is not None and datetime.now(UTC) >= chat.rating_window_ends
        if response.status_code in (401, 409) and (may_expire or late):
            chat.rated = None
            return
        assert response.status_code == 201 and response.json()["status"] == "rated", response.text
        chat.rated = True

    async def close_all(self, chats: list[Chat]) -> None:
        """Close each as planned; every other visitor rates at once (within the window)."""

        async def close(index: int) -> None:
            await self.close(chats[index])
            if index % 2 == 0:
                await self.rate(chats[index])

        await each(range(len(chats)), close)

    async def events(self, chat: Chat) -> list[dict[str, Any]]:
        """Every event, as the admin sees them (the visitor's token ends with the rating
        window, which these conversations' short policy has passed by the time they are read)."""
        response, _ = await self.call(
            "events", "GET", f"/v1/conversations/{chat.id}/events?limit=1000", ADMIN_TOKEN
        )
        assert response.status_code == 200, response.text
        assert not response.json()["has_more"]
        return response.json()["events"]


# --- the database, read directly by the test ------------------------------------------------


def _conversations(db: Database, ids: list[str]) -> dict[str, Conversation]:
    with db.read() as session:
        rows = session.exec(select(Conversation).where(col(Conversation.id).in_(ids)))
        return {row.id: row for row in rows}


def written(db: Database) -> Callable[[], Awaitable[object]]:
    """How far the system has come: the newest event in the log (the test's own database)."""

    def newest() -> int | None:
        with db.read() as session:
            return session.exec(select(func.max(Event.id))).one()

    return lambda: asyncio.to_thread(newest)


class Identified(Protocol):
    id: str


async def until_all(
    db: Database,
    chats: Sequence[Identified],
    done: Callable[[Conversation], bool],
    *,
    what: str,
    timeout: float = 90,
) -> dict[str, Conversation]:
    ids = [chat.id for chat in chats]
    rows: dict[str, Conversation] = {}

    async def check() -> dict[str, Conversation] | None:
        nonlocal rows
        rows = await asyncio.to_thread(_conversations, db, ids)
        return rows if len(rows) == len(ids) and all(map(done, rows.values())) else None

    try:
        return await poll(
            check,
            what=f"{what} ({len(ids)} conversations)",
            timeout=timeout,
            progress=written(db),
        )
    except AssertionError as exc:
        behind = Counter(
            (row.state, row.close_reason, row.rating_status)
            for row in rows.values()
            if not done(row)
        )
        raise AssertionError(f"{exc}; those not there: {dict(behind)}") from None


async def until_idle_closed(db: Database, idle: list[Chat]) -> None:
    """The silent ones closed for inactivity, their rating invited."""
    await until_all(
        db,
        idle,
        lambda c: c.state == "closed" and c.rating_status != "none",
        what="the idle ones closed",
    )


async def until_active(db: Database, chats: list[Chat]) -> None:
    rows = await until_all(db, chats, lambda c: c.state == "active", what="all assigned")
    for chat in chats:
        chat.agent_id = rows[chat.id].agent_id


def _rating_settled(conversation: Conversation) -> bool:
    return conversation.rating_status in ("rated", "expired")


# --- the end state ----------------------------------------------------------------------------


async def check_end_state(clients: Clients, chats: list[Chat], db: Database) -> None:
    """Every conversation closed as planned, its transcript exactly what was acknowledged,
    its timers fired; every seat given back; the assignment log within capacity, once each."""
    rows = await until_all(db, chats, _rating_settled, what="every rating rated or expired")
    for chat in chats:
        row = rows[chat.id]
        where = f"conversation {chat.id} ({chat.plan})"
        assert (row.state, row.close_reason) == ("closed", REASON[chat.plan]), where
        rated = row.rating_status == "rated" if chat.rated is None else chat.rated
        assert row.rating_status == ("rated" if rated else "expired"), where
        events = await clients.events(chat)
        seqs = [event["seq"] for event in events]
        assert seqs == list(range(1, len(events) + 1)), f"{where}: seq gap or disorder {seqs}"
        assert row.last_seq == len(events), where
        messages = [e for e in events if e["type"] == "message.created"]
        transcript = Counter(m["data"]["client_message_id"] for m in messages)
        assert len(set(chat.acked)) == len(chat.acked), where
        assert transcript == Counter(chat.acked), (
            f"{where}: lost {set(chat.acked) - set(transcript)}, "
            f"unacknowledged {set(transcript) - set(chat.acked)}, "
            f"twice {[m for m, n in transcript.items() if n > 1]}"
        )
        kinds = Counter(event["type"] for event in events)
        expected = {
            "conversation.assigned": 1,
            "conversation.closed": 1,
            "rating.invited": 1,
            "rating.submitted": int(rated),
            "rating.expired": int(not rated),
        }
        assert {kind: kinds[kind] for kind in expected} == expected, f"{where}: {kinds}"
        [closed] = [e for e in events if e["type"] == "conversation.closed"]
        assert closed["data"]["close_reason"] == REASON[chat.plan], where
        assert closed["data"]["text"], f"{where}: no closing message"
        if REASON[chat.plan] in CLOSING_TEXT:
            assert closed["data"]["text"] == CLOSING_TEXT[REASON[chat.plan]], where
        assert all(m["seq"] < closed["seq"] for m in messages), f"{where}: a message after close"
        if chat.plan == "idle":
            warnings = [e for e in events if e["type"] == "conversation.idle_warning"]
            assert warnings and warnings[-1]["seq"] < closed["seq"], f"{where}: no idle warning"
    for agent_id, token in clients.agents.items():
        response, _ = await clients.call("agent", "GET", f"/v1/agents/{agent_id}", token)
        assert response.json()["load"] == 0, f"{agent_id} kept a seat: {response.text}"
    check_assignment_log(db, chats, clients.capacity)
    assert not [m for m, status in clients.retried.items() if status not in (200, 201)], (
        f"messages retried after a 503 that did not complete: {clients.retried}"
    )


def check_assignment_log(db: Database, chats: list[Chat], capacity: dict[str, int]) -> None:
    with db.read() as session:
        log = list(session.exec(select(Assignment)))
    assigned = Counter(row.conversation_id for row in log)
    assert assigned == Counter(chat.id for chat in chats), "assigned twice, or never"
    assert all(row.released_at is not None for row in log), "a seat never given back"
    for agent_id, seats in capacity.items():
        # +1 when assigned, -1 when released; at the same instant the release counts first.
        steps = sorted(
            itertools.chain.from_iterable(
                ((row.assigned_at, 1), (row.released_at, -1))
                for row in log
                if row.agent_id == agent_id
            ),
            key=lambda step: (step[0], step[1]),
        )
        load = list(itertools.accumulate(delta for _, delta in steps))
        assert max(load, default=0) <= seats, f"{agent_id} held {max(load)} > {seats}"


# --- 1. the worker SIGKILLed ------------------------------------------------------------------


async def armed_idle_warnings(client: Client, chats: list[Chat]) -> datetime:
    """Wait until each workflow runs its idle countdown (its snapshot query shows the idle
    warning timer; asked of Temporal, so it answers while the database is down); when the
    last of them is due."""

    async def due(chat: Chat) -> datetime:
        handle = client.get_workflow_handle(f"conversation-{chat.id}")

        async def armed() -> datetime | None:
            try:
                snapshot = await handle.query("snapshot", result_type=ConversationSnapshot)
            except WorkflowQueryFailedError as exc:
                # A query that reaches the worker while a workflow task runs its local
                # activities can fail in the SDK's replay of it on a loaded machine ("Missing
                # associated machine for LocalActivity"); the workflow goes on, so ask again.
                if "LocalActivity" not in str(exc):
                    raise
                return None
            return snapshot.idle_warning_at

        return await poll(armed, what=f"{chat.id}'s idle countdown")

    return max(await each(chats, due))


@pytest.mark.postgres
async def test_a_worker_killed_with_100_active_conversations_loses_nothing(
    dev_env, tmp_path: Path, postgres_db: Database
) -> None:
    deployment = Deployment(
        directory=tmp_path,
        database_url=postgres_db.url,
        temporal_address=address(dev_env),
        # Long enough for the harness to see all 100 countdowns armed before the kill.
        timeouts={"idle_warning_after": "6s", "idle_close_after": "2s", "rating_window": "5s"},
    )
    try:
        async with httpx.AsyncClient(
            base_url=deployment.urls[0], timeout=60, limits=CALM_KEEPALIVE
        ) as http:
            clients = Clients(http)
            await clients.add_agents(10, capacity=10)
            chats = await each((PLANS[n % 3] for n in range(100)), clients.start)
            await until_active(postgres_db, chats)
            assert len(chats) == 100

            # The visitor asks, the agent answers: 100 idle countdowns run.
            await each(chats, lambda chat: clients.say(chat, "visitor", "Where is my parcel?"))
            await each(chats, lambda chat: clients.say(chat, "agent", "It ships tomorrow."))
            due = await armed_idle_warnings(dev_env.client, chats)
            deployment.kill("worker-0")

            # No worker: the server takes the messages (signals) and the countdowns come due.
            idle = [chat for chat in chats if chat.plan == "idle"]
            answering = [chat for chat in chats if chat.plan != "idle"]
            await each(answering, lambda chat: clients.say(chat, "visitor", "Today?"))
            await until_past(due)
            warned = await asyncio.to_thread(_warned, postgres_db, [chat.id for chat in chats])
            await each(answering, lambda chat: clients.say(chat, "visitor", "Hello?"))
            deployment.restart("worker-0")

            # The silent ones close for inactivity; those who answered stay open until closed.
            await until_idle_closed(postgres_db, idle)
            await clients.close_all(answering)

            # The rating windows run out while the worker is down again.
            rows = await until_all(
                postgres_db, chats, lambda c: c.rating_status != "none", what="ratings invited"
            )
            deployment.kill("worker-0")
            for chat in idle[:10]:  # closed: refused, and never stored
                assert await clients.say(chat, "visitor", "Anyone?") in (401, 409)
            await until_past(max(row.rating_expires_at for row in rows.values()))
            deployment.restart("worker-0")

            await check_end_state(clients, chats, postgres_db)
            # (The scenario held: countdowns came due while no worker ran.)
            assert len(warned) < len(chats), "every idle warning went out before the kill"
            assert clients.unavailable == Counter(), "no worker is no reason for a 503"
    finally:
        deployment.stop(faults=True)


def _warned(db: Database, ids: list[str]) -> Counter[str]:
    """The conversations with an idle warning in their log: how many each."""
    with db.read() as session:
        return Counter(
            session.exec(
                select(Event.conversation_id).where(
                    col(Event.conversation_id).in_(ids), Event.type == "conversation.idle_warning"
                )
            )
        )


# --- 2. the dev server killed and restarted under load -----------------------------------------


async def test_a_dev_server_killed_and_restarted_under_load_loses_nothing(tmp_path: Path) -> None:
    server = DevServer(tmp_path)
    database_url = f"sqlite:///{tmp_path / 'switchboard.db'}"  # as `make run` has it
    db = Database(database_url)
    deployment: Deployment | None = None
    try:
        await server.start()
        deployment = Deployment(
            directory=tmp_path, database_url=database_url, temporal_address=server.address
        )
        async with httpx.AsyncClient(
            base_url=deployment.urls[0], timeout=60, limits=CALM_KEEPALIVE
        ) as http:
            clients = Clients(http)
            await clients.add_agents(4, capacity=3)  # 12 seats for 30 conversations
            chats: list[Chat] = []
            killed, restarted = asyncio.Event(), asyncio.Event()

            async def life(index: int) -> None:
                if index >= 24:  # these arrive while the server is down
                    await killed.wait()
                chat = await clients.start(PLANS[index % 3])
                chats.append(chat)
                await until_active(db, [chat])
                if chat.plan == "idle":
                    await clients.say(chat, "visitor", "Where is my parcel?")
                    await clients.say(chat, "agent", "It ships tomorrow.")  # then silence
                    return
                # The visitor has the last word: no idle countdown runs on these. Those talking
                # when the server goes down talk on until it is back.
                said = 0
                while said < 4 or (killed.is_set() and not restarted.is_set()):
                    await clients.say(chat, "visitor", f"question {said}")
                    said += 1
                    await asyncio.sleep(0.5)
                await clients.close(chat)
                if index % 2:
                    await clients.rate(chat, may_expire=True)

            async with asyncio.TaskGroup() as lives:
                for index in range(30):
                    lives.create_task(life(index))

                # Some have closed (their agents took the next in line) and wait for a rating, some
                # are talking, some count down to an idle close, others wait in the queue.
                async def busy() -> bool:
                    started = list(chats)  # more start meanwhile
                    rows = await asyncio.to_thread(
                        _conversations, db, [chat.id for chat in started]
                    )
                    states = Counter(row.state for row in rows.values())
                    active = [chat for chat in started if rows[chat.id].state == "active"]
                    return (
                        states["closed"] >= 6
                        and states["queued"] >= 3
                        and len([chat for chat in active if chat.plan != "idle"]) >= 2
                        and any(chat.plan == "idle" and len(chat.acked) == 2 for chat in active)
                        and any(row.rating_status == "pending" for row in rows.values())
                    )

                await poll(
                    busy,
                    what="conversations closing, talking, counting down and queueing",
                    progress=written(db),
                )
                server.kill()  # (the countdowns and rating windows running come due meanwhile)
                killed.set()
                # Clients keep going: posts, starts, closes answer 503 and are retried.
                health = await http.get("/healthz")
                assert health.status_code == 503 and health.json()["temporal"] == "unreachable"

                async def refused_meanwhile() -> bool:
                    return bool(clients.unavailable["message"] and clients.unavailable["start"])

                await poll(refused_meanwhile, what="posts and starts answered 503 meanwhile")
                await server.start()  # on the same file and port
                restarted.set()
            # (Every life has run its course.)
            await check_end_state(clients, chats, db)
            assert clients.retried, "no message was answered 503 and retried"
    finally:
        if deployment is not None:
            deployment.stop(faults=True)
        db.dispose()
        server.stop()


# --- 3. the database unreachable for a while ----------------------------------------------------


async def follow(base_url: str, chat: Chat, tailing: asyncio.Event) -> list[dict[str, Any]]:
    """Hold the visitor's stream until the rating settles, as a client does: resume with
    Last-Event-ID whenever the stream ends, retry a 503 after its Retry-After. `tailing` is
    set once it has shown the first event."""
    seen: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=CALM_KEEPALIVE) as streamer:
        while True:
            headers = bearer(chat.visitor)
            if seen:
                headers["Last-Event-ID"] = str(seen[-1]["seq"])
            async with streamer.stream(
                "GET", f"/v1/conversations/{chat.id}/stream", headers=headers
            ) as response:
                if response.status_code == 503:
                    assert response.headers.get("retry-after", "").isdigit(), response.headers
                    await asyncio.sleep(int(response.headers["retry-after"]))
                    continue
                assert response.status_code == 200, await response.aread()
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        data.append(line.removeprefix("data:").strip())
                    elif line == "" and data:
                        seen.append(json.loads("\n".join(data)))
                        data = []
                        tailing.set()
                        if seen[-1]["type"] in ("rating.submitted", "rating.expired"):
                            return seen


async def cut_before_idle_warnings(
    proxy: TcpProxy, clients: Clients, idle: list[Chat], db: Database
) -> None:
    """The agents answer the silent ones and the database is cut at once, before any of
    their idle warnings is due (the log, read directly, shows none went out meanwhile). Where
    the machine was too slow for that, the database comes back and the agents answer again."""
    ids = [chat.id for chat in idle]

    async def cut_in_time() -> bool:
        before = await asyncio.to_thread(_warned, db, ids)
        await each(idle, lambda chat: clients.say(chat, "agent", "It ships tomorrow."))
        proxy.cut()
        if await asyncio.to_thread(_warned, db, ids) == before:
            return True
        proxy.restore()
        return False

    await poll(cut_in_time, what="a database cut before the idle warnings came due")


async def activity_retries(client: Client, chats: list[Chat]) -> dict[str, int]:
    """Activities of these conversations that took more than one attempt: name → attempts.
    Local activities say so in their markers, others in their started events."""
    retried: dict[str, int] = {}

    def count(name: str, attempt: int) -> None:
        if attempt > 1:
            retried[name] = max(retried.get(name, 0), attempt)

    for chat in chats:
        scheduled: dict[int, str] = {}
        async for event in client.get_workflow_handle(
            f"conversation-{chat.id}"
        ).fetch_history_events():
            if event.HasField("activity_task_scheduled_event_attributes"):
                attributes = event.activity_task_scheduled_event_attributes
                scheduled[event.event_id] = attributes.activity_type.name
            elif event.HasField("activity_task_started_event_attributes"):
                started = event.activity_task_started_event_attributes
                count(scheduled[started.scheduled_event_id], started.attempt)
            elif event.marker_recorded_event_attributes.marker_name == "core_local_activity":
                marker = json.loads(
                    event.marker_recorded_event_attributes.details["data"].payloads[0].data
                )
                count(marker["activity_type"], marker["attempt"])
    return retried


@pytest.mark.postgres
async def test_a_database_outage_answers_503_and_loses_nothing(
    dev_env, tmp_path: Path, postgres_db: Database
) -> None:
    url = make_url(postgres_db.url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        # Our processes reach the test's database (its own schema) only through the proxy.
        behind_proxy = url.set(host="127.0.0.1", port=proxy.port)
        deployment = Deployment(
            directory=tmp_path,
            database_url=behind_proxy.render_as_string(hide_password=False),
            temporal_address=address(dev_env),
            # The idle warnings come due in the outage, the idle closes after it.
            timeouts={"idle_warning_after": "2s", "idle_close_after": "5s", "rating_window": "4s"},
        )
        background: list[asyncio.Future[Any]] = []
        try:
            async with httpx.AsyncClient(
                base_url=deployment.urls[0], timeout=60, limits=CALM_KEEPALIVE
            ) as http:
                clients = Clients(http)
                await clients.add_agents(3, capacity=4)
                chats = await each((PLANS[n % 3] for n in range(12)), clients.start)
                await until_active(postgres_db, chats)
                # The others' agents stay silent until they close: no countdown of theirs runs,
                # so none can come due in the outage and race their visitors' retried posts.
                await each(chats, lambda chat: clients.say(chat, "visitor", "Where is my parcel?"))
                idle = [chat for chat in chats if chat.plan == "idle"]
                answering = [chat for chat in chats if chat.plan != "idle"]
                tailing = asyncio.Event()
                watched = asyncio.ensure_future(follow(deployment.urls[0], answering[0], tailing))
                background.append(watched)

                async def shown() -> bool:
                    return tailing.is_set()

                await poll(shown, what="the stream to show its first event")  # held throughout

                await cut_before_idle_warnings(proxy, clients, idle, postgres_db)
                due = await armed_idle_warnings(dev_env.client, idle)
                # Posts answer 503 (nothing stored) and their clients retry until it is back.
                posts = asyncio.gather(
                    *(clients.say(chat, "visitor", "Still there?") for chat in answering)
                )
                background.append(posts)
                probed = answering[1]
                visitor, agent = bearer(probed.visitor), bearer(clients.token(probed, "agent"))
                probes = {
                    "read": http.get(f"/v1/conversations/{probed.id}", headers=visitor),
                    "events": http.get(f"/v1/conversations/{probed.id}/events", headers=visitor),
                    "agent": http.get(f"/v1/agents/{probed.agent_id}", headers=agent),
                    "start": http.post(
                        "/v1/conversations",
                        headers=APP,
                        json={"customer_id": "customer-during-outage", "channel": "web"},
                    ),
                    "stream": _stream_status(http, probed),
                    "health": http.get("/healthz"),
                }
                answers = dict(zip(probes, await asyncio.gather(*probes.values()), strict=True))
                for what, response in answers.items():
                    assert response.status_code == 503, f"{what}: {response.status_code}"
                    assert response.headers.get("retry-after", "").isdigit() or what == "health"
                assert answers["health"].json()["database"] == "unreachable"

                async def every_post_refused() -> bool:
                    return clients.unavailable["message"] >= len(answering)

                await poll(every_post_refused, what="every post answered 503")
                await until_past(due)  # every idle warning came due: their activities fail...

                async def warnings_failing() -> bool:
                    return deployment.failed_attempts("send_idle_warning") > 0

                await poll(warnings_failing, what="an activity failing while the database is down")
                proxy.restore()  # ...and succeed on a retry once it is back

                await finished(posts, what="the posts retried through the outage")
                await until_idle_closed(postgres_db, idle)
                await clients.close_all(answering)
                await check_end_state(clients, chats, postgres_db)
                seen = await finished(watched, what="the stream to show the rating settle")
                logged = await clients.events(answering[0])
                assert [e["seq"] for e in seen] == [e["seq"] for e in logged], "gap or repeat"
            retried = await activity_retries(dev_env.client, idle)
            assert retried.get("send_idle_warning", 0) > 1, f"no activity retried: {retried}"
        finally:
            for future in background:
                future.cancel()
            deployment.stop(faults=True)


async def _stream_status(http: httpx.AsyncClient, chat: Chat) -> httpx.Response:
    """Open the stream and answer with its response (without reading an endless body)."""
    async with http.stream(
        "GET", f"/v1/conversations/{chat.id}/stream", headers=bearer(chat.visitor)
    ) as response:
        return response


# --- 4. what the clients rely on: a close sent again, an idle close held up --------------------


async def test_a_close_sent_again_answers_as_the_first_did(
    dev_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    """A caller's close is one close however often it is sent: again while the first is under
    way (its answer lost to a 503, say) or once it is done, even after the workflow has ended,
    it answers as the first did. Anyone else's close is refused, whoever shares the closer's
    id: here an agent whose id is the admin's closes, and the admin may not pass for them."""
    # Long enough for the three closes of the rating phase on a loaded machine (with 1 s the
    # visitor's token could end before its close: 401, not 409), short enough to wait out.
    system = await make_system(dev_env, rating_window="5s")
    _, agent = await system.create_agent("admin")
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active", timeout=60)

    async def close(headers: dict[str, str], expected: int) -> None:
        response = await system.http.post(f"/v1/conversations/{cid}/close", headers=headers)
        assert response.status_code == expected, response.text
        if expected == 200:
            body = response.json()
            assert (body["state"], body["close_reason"]) == ("closed", "agent_closed"), body

    async def answers_as_the_first(visitor_is_told: int = 409) -> None:
        await close(bearer(agent), 200)
        await close(bearer(ADMIN_TOKEN), 409)
        await close(bearer(visitor), visitor_is_told)

    await asyncio.gather(close(bearer(agent), 200), close(bearer(agent), 200))
    await answers_as_the_first()  # in its rating phase
    # The rating window closes unrated and the workflow ends; its history keeps the answer.
    ended = dev_env.client.get_workflow_handle(gateway.workflow_id(cid)).result()
    assert await finished(asyncio.ensure_future(ended), what="the workflow's end") == (
        "agent_closed"
    )
    await answers_as_the_first(visitor_is_told=401)  # the visitor's token ended with the window
    events = await system.events(cid)
    assert [event["type"] for event in events].count("conversation.closed") == 1


async def test_a_close_held_up_answers_503_in_time_and_its_retry_joins_it(
    dev_env: WorkflowEnvironment, make_system: StartSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close whose workflow is held up (its activity waits for the conversation's row, which
    the test holds) answers 503 in time rather than whenever the workflow gets to it; the
    client's retry joins that same close and gets its answer once it is done."""
    monkeypatch.setattr(gateway, "_UPDATE_WAIT", timedelta(seconds=1))
    system = await make_system(dev_env)
    _, agent = await system.create_agent("alice")
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active", timeout=60)
    held, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        with system.db.write() as session:
            row = select(Conversation).where(Conversation.id == cid).with_for_update()
            session.exec(row).one()
            held.set()
            release.wait(60)  # an unbounded close would answer only after this

    holder = asyncio.ensure_future(asyncio.to_thread(hold_the_row))
    close = f"/v1/conversations/{cid}/close"
    try:

        async def holding() -> bool:
            return held.is_set()

        await poll(holding, what="the test to hold the conversation's row")
        slow = await system.http.post(close, headers=bearer(agent))
        assert slow.status_code == 503, slow.text
        assert slow.headers["retry-after"].isdigit(), slow.headers
    finally:
        release.set()
        await holder
    retried = await system.http.post(close, headers=bearer(agent))
    assert retried.status_code == 200, retried.text
    assert retried.json()["close_reason"] == "agent_closed", retried.text
    events = await system.events(cid, visitor)
    assert [event["type"] for event in events].count("conversation.closed") == 1


async def test_an_idle_close_held_up_past_a_newer_message_is_declined(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    """Invariant 8 for the idle close, as a database outage plays it: the close comes due, but
    by the time it is written the visitor's answer is stored (its signal still on its way, as
    while the API retries it). The close finds it in its own transaction and declines; the
    workflow takes the message in and the conversation goes on until the agent closes it."""
    system = await make_system(time_env)
    _, agent = await system.create_agent("alice")
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active", timeout=60)
    assert (await system.post_message(cid, agent, "It ships tomorrow.")).status_code == 201
    handle = time_env.client.get_workflow_handle(gateway.workflow_id(cid))

    async def snapshot() -> ConversationSnapshot:
        return await handle.query(ConversationWorkflow.snapshot)

    async def armed() -> datetime | None:
        return (await snapshot()).idle_warning_at

    await poll(armed, what="the idle countdown")
    answer = await asyncio.to_thread(
        store_message,
        system.db,
        conversation_id=cid,
        sender_role="visitor",
        sender_id=f"visitor:{cid}",
        client_message_id="answer-during-outage",
        type="text",
        content="Thank you!",
    )
    await time_env.sleep(600)  # the warning (3 min) and the close (2 min later) come due

    async def decided() -> ConversationSnapshot | None:
        now = await snapshot()
        taken_in = now.last_message_seq == answer.message.seq
        return now if taken_in or now.state == "closed" else None

    decision = await poll(decided, what="the idle close's decision")
    assert (decision.state, decision.idle_close_at) == ("active", None), decision
    assert "conversation.closed" not in [e["type"] for e in await system.events(cid, visitor)]
    closed = await system.http.post(f"/v1/conversations/{cid}/close", headers=bearer(agent))
    assert closed.status_code == 200, closed.text
    assert closed.json()["close_reason"] == "agent_closed", closed.text


# --- 5. a client that gives up: the API killed between storing a message and telling it ------

# The sample of messages sent into the fault is drawn with this seed: the same every run.
GIVE_UP_SEED = 20261130
# How often the deployment's reconciliation pass runs, and how long it lets a stored message
# stay untold before taking it for lost (the Reconciler's default).
RECONCILE_INTERVAL = 1.0
RECONCILE_SETTLE: timedelta = inspect.signature(Reconciler).parameters["settle"].default
# Every workflow has heard of its newest message within a pass or two after the settle; a
# loaded machine gets the rest.
CAUGHT_UP_WITHIN = RECONCILE_SETTLE.total_seconds() + 3 * RECONCILE_INTERVAL + 20
# Due before the reconciler tells (its settle): each timer comes due over a stored message
# its workflow has not heard of, and its decision must find that message itself.
GIVE_UP_TIMEOUTS = {"idle_warning_after": "2s", "idle_close_after": "4s", "rating_window": "2s"}
FIRST_REPLY_GROUP = '[[skill_groups]]\nname = "first_reply"\nagent_first_reply_timeout = "5s"\n'
FIRST_REPLY_ROUTING = '[[routing]]\nwhen = { entry = "first_reply" }\nskill_group = "first_reply"\n'

Side = Literal["visitor", "agent"]
Case = Literal[
    "control",
    "visitor_again",
    "visitor_after_agent",
    "agent_again",
    "visitor_after_warning",
    "first_reply",
]
# Each window starts with the visitor having written last (or the agent owing the first
# reply). What a case sends before the link to Temporal is cut (told, acknowledged), and who
# writes into the cut (stored, never told: the API dies, its client never sends it again).
CASES: dict[Case, tuple[tuple[Side, ...], Side | None]] = {
    "control": (("agent", "visitor"), None),
    "visitor_again": ((), "visitor"),  # no timer runs: only the reconciler tells it
    "visitor_after_agent": (("agent",), "visitor"),  # the idle warning comes due over it
    "agent_again": (("agent",), "agent"),  # the warning for the older agent message too
    "visitor_after_warning": (("agent",), "visitor"),  # warned first: the idle close comes due
    "first_reply": ((), "agent"),  # the first-reply timeout comes due over it
}
# The cases of each window, over the conversations in `general` and in `first_reply`; the
# second window takes those the first left with the visitor having written last.
FIRST_WINDOW: tuple[Case, ...] = ("visitor_again", "visitor_after_agent", "agent_again", "control")
FIRST_REPLY_WINDOW: tuple[Case, ...] = ("first_reply", "first_reply", "control")
VISITOR_LAST: tuple[Case, ...] = ("visitor_again", "visitor_after_agent", "control")
SECOND_WINDOW: tuple[Case, ...] = (
    "visitor_after_warning",
    "visitor_again",
    "visitor_after_agent",
    "control",
)


@dataclass
class Talk:
    """A conversation of the give-up test: the case it meets in each window, and each message
    sent to it by what became of it."""

    id: str
    visitor: str
    cases: list[Case] = field(default_factory=list)
    agent_id: str | None = None
    told: list[str] = field(default_factory=list)  # client_message_ids answered 201
    untold: list[str] = field(default_factory=list)  # sent into the fault; never sent again
    refused: list[str] = field(default_factory=list)  # 403/409: a decision came first


@dataclass
class GiveUpWindow:
    """One fault: who writes into it, and how each of those posts ended (`killed`: no answer,
    the API died under it; `unavailable`: a 503 came first; `refused`: 403/409)."""

    cases: dict[str, Case]
    ended: Counter[str] = field(default_factory=Counter)


class Talkers:
    """Visitors and agents posting over one API process's HTTP; agents' tokens by id."""

    def __init__(self, api: ApiClient, agents: dict[str, str]) -> None:
        self.api = api
        self.agents = agents

    def token(self, talk: Talk, side: Side) -> str:
        if side == "visitor":
            return talk.visitor
        assert talk.agent_id is not None, f"{talk.id} has no agent"
        return self.agents[talk.agent_id]

    async def tell(self, talk: Talk, side: Side) -> int | None:
        """A message acknowledged (its seq); None if refused because a decision came first
        (a close or requeue that the checks judge)."""
        message_id = uuid.uuid4().hex
        response = await self.api.post_message(
            talk.id, self.token(talk, side), f"{side} {len(talk.told)}", message_id
        )
        if response.status_code in (403, 409):
            talk.refused.append(message_id)
            return None
        assert response.status_code == 201, f"{talk.id}: {response.status_code} {response.text}"
        talk.told.append(message_id)
        return int(response.json()["seq"])

    async def give_up(self, talk: Talk, side: Side, message_id: str) -> str:
        """Post into the fault and never again, however it ends."""
        try:
            response = await self.api.post_message(
                talk.id, self.token(talk, side), f"{side} into the fault", message_id
            )
        except httpx.TransportError:
            talk.untold.append(message_id)
            return "killed"
        if response.status_code == 503:  # its signal timed out before the kill
            talk.untold.append(message_id)
            return "unavailable"
        assert response.status_code in (403, 409), (
            f"{talk.id}: {response.status_code} with Temporal cut off: {response.text}"
        )
        talk.refused.append(message_id)
        return "refused"


def _stored_ids(db: Database, ids: list[str]) -> Counter[tuple[str, str]]:
    """(conversation, client_message_id) of every stored message of these conversations."""
    with db.read() as session:
        rows = session.exec(
            select(Message.conversation_id, Message.client_message_id).where(
                col(Message.conversation_id).in_(ids)
            )
        )
        return Counter((conversation_id, message_id) for conversation_id, message_id in rows)


def _events_of(db: Database, ids: list[str]) -> dict[str, list[Event]]:
    with db.read() as session:
        rows = session.exec(
            select(Event)
            .where(col(Event.conversation_id).in_(ids))
            .order_by(col(Event.conversation_id), col(Event.seq))
        )
        logs: dict[str, list[Event]] = {conversation_id: [] for conversation_id in ids}
        for row in rows:
            logs[row.conversation_id].append(row)
        return logs


async def until_warned(db: Database, after: dict[str, int]) -> None:
    """Until each conversation has its idle warning for this agent message (conversation →
    its seq)."""

    def warned() -> bool:
        logs = _events_of(db, list(after))
        return all(
            any(
                e.type == "conversation.idle_warning" and e.data["after_agent_message_seq"] == seq
                for e in logs[conversation_id]
            )
            for conversation_id, seq in after.items()
        )

    await poll(lambda: asyncio.to_thread(warned), what=f"the idle warnings of {sorted(after)}")


async def fault_window(
    deployment: Deployment,
    proxy: TcpProxy,
    db: Database,
    agents: dict[str, str],
    talks: list[Talk],
    window: int,
) -> GiveUpWindow:
    """Everyone writes as their case says; then, with the API's link to Temporal cut, the
    sample writes once more: stored, the signal hangs, and the API is SIGKILLed under it. Its
    clients give up. The link comes back and the API starts again."""
    fault = GiveUpWindow({talk.id: talk.cases[window] for talk in talks})
    async with deployment.client() as api:
        talkers = Talkers(api, agents)

        async def lead(talk: Talk) -> None:
            for side in CASES[talk.cases[window]][0]:
                await talkers.tell(talk, side)

        # Those to be warned first; the others' countdowns start once the warnings are out.
        warned = [talk for talk in talks if talk.cases[window] == "visitor_after_warning"]
        seqs = await each(warned, lambda talk: talkers.tell(talk, "agent"))
        await until_warned(
            db, {talk.id: seq for talk, seq in zip(warned, seqs, strict=True) if seq is not None}
        )
        await each([talk for talk in talks if talk not in warned], lead)

        proxy.cut()
        sample = [
            (talk, side) for talk in talks if (side := CASES[talk.cases[window]][1]) is not None
        ]
        sent = {talk.id: uuid.uuid4().hex for talk, _ in sample}
        posts = {
            talk.id: asyncio.ensure_future(talkers.give_up(talk, side, sent[talk.id]))
            for talk, side in sample
        }

        async def each_stored_or_answered() -> bool:
            stored = await asyncio.to_thread(_stored_ids, db, list(posts))
            return all(pair in stored or posts[pair[0]].done() for pair in sent.items())

        await poll(each_stored_or_answered, what="the posts into the fault to be stored")
        deployment.kill("api-0")
        fault.ended = Counter(await asyncio.gather(*posts.values()))
    proxy.drop_held()  # what the dead API sent into the cut never arrives
    proxy.restore()
    await asyncio.to_thread(deployment.restart, "api-0")
    return fault


async def snapshots(client: Client, talks: list[Talk]) -> dict[str, ConversationSnapshot]:
    async def one(talk: Talk) -> ConversationSnapshot:
        handle = client.get_workflow_handle_for(
            ConversationWorkflow.run, gateway.workflow_id(talk.id)
        )
        return await handle.query(ConversationWorkflow.snapshot)

    return dict(zip([talk.id for talk in talks], await each(talks, one, limit=5), strict=True))


class Stored(NamedTuple):
    """A conversation as the database has it: its row and its newest message's seq."""

    row: Conversation
    newest_seq: int


def _stored(db: Database, ids: list[str]) -> dict[str, Stored]:
    with db.read() as session:
        newest = dict(
            session.exec(
                select(Message.conversation_id, func.max(Message.seq))
                .where(col(Message.conversation_id).in_(ids))
                .group_by(col(Message.conversation_id))
            ).all()
        )
    rows = _conversations(db, ids)
    return {i: Stored(rows[i], newest.get(i, 0)) for i in ids}


async def until_none_differ(
    client: Client,
    db: Database,
    talks: list[Talk],
    differs: Callable[[Stored, ConversationSnapshot], str | None],
    *,
    what: str,
    timeout: float = 90,
) -> None:
    """Until `differs` finds nothing to say of any conversation, comparing the database's with
    what its workflow knows (the snapshot query); a failure says what it found of each."""
    found: dict[str, str] = {}

    async def check() -> bool:
        stored = await asyncio.to_thread(_stored, db, [talk.id for talk in talks])
        known = await snapshots(client, talks)
        found.clear()
        for talk in talks:
            if (difference := differs(stored[talk.id], known[talk.id])) is not None:
                found[talk.id] = f"{talk.cases}: {difference}"
        return not found

    try:
        await poll(check, what=what, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {found}") from None


def _behind(stored: Stored, known: ConversationSnapshot) -> str | None:
    """The workflow has not seen the newest message, or an open conversation does not record
    it as told (a closed one has nothing left to tell)."""
    signalled = stored.row.signalled_seq
    told = signalled >= stored.newest_seq or stored.row.state == "closed"
    if known.last_message_seq == stored.newest_seq and told:
        return None
    return (
        f"newest message {stored.newest_seq}, the workflow's {known.last_message_seq}, "
        f"signalled_seq {signalled}"
    )


def _unsettled(stored: Stored, known: ConversationSnapshot) -> str | None:
    """Not closed with its rating settled, or the row and the workflow disagree on state,
    close reason, agent, rating or newest message."""
    row = stored.row
    ours = (row.state, row.close_reason, row.agent_id, row.rating_status, stored.newest_seq)
    theirs = (
        known.state,
        known.close_reason,
        known.agent_id,
        known.rating_status,
        known.last_message_seq,
    )
    if ours == theirs and row.state == "closed" and row.rating_status != "pending":
        return None
    return f"database {ours}, workflow {theirs}"


def wrong_decisions(db: Database, ids: list[str]) -> list[str]:
    """Decisions taken because nothing happened that something stored contradicts."""
    return [wrong for cid in ids for wrong in decisions.wrong_decisions(transcript(db, cid))]


async def histories(client: Client, talks: list[Talk]) -> dict[str, list[HistoryEvent]]:
    async def one(talk: Talk) -> list[HistoryEvent]:
        handle = client.get_workflow_handle(gateway.workflow_id(talk.id))
        return [event async for event in handle.fetch_history_events()]

    return dict(zip([talk.id for talk in talks], await each(talks, one, limit=5), strict=True))


def declined(history: list[HistoryEvent]) -> Counter[str]:
    """Decisions the workflow's activities declined because a newer message was stored (their
    local activities' markers say so): activity → how many."""
    found: Counter[str] = Counter()
    for event in history:
        marker = event.marker_recorded_event_attributes
        if marker.marker_name == "core_local_activity" and marker.HasField("failure"):
            failure = marker.failure
            while not failure.HasField("application_failure_info") and failure.HasField("cause"):
                failure = failure.cause
            if failure.application_failure_info.type == NEWER_MESSAGE:
                found[json.loads(marker.details["data"].payloads[0].data)["activity_type"]] += 1
    return found


def told_messages(history: list[HistoryEvent]) -> list[tuple[int, str]]:
    """The messages the workflow was told of by signal: (seq, the identity of who told it)."""
    told: list[tuple[int, str]] = []
    for event in history:
        if event.HasField("workflow_execution_signaled_event_attributes"):
            signal = event.workflow_execution_signaled_event_attributes
            if signal.signal_name == "message_posted":
                told.append((json.loads(signal.input.payloads[0].data)["seq"], signal.identity))
    return told


def _untold_seqs(db: Database, talks: list[Talk]) -> dict[str, set[int]]:
    """The seqs of the messages each conversation's clients gave up on."""
    wanted = {(talk.id, message_id) for talk in talks for message_id in talk.untold}
    seqs: dict[str, set[int]] = {talk.id: set() for talk in talks}
    with db.read() as session:
        for conversation_id, message_id, seq in session.exec(
            select(Message.conversation_id, Message.client_message_id, Message.seq).where(
                col(Message.conversation_id).in_(list(seqs))
            )
        ):
            if (conversation_id, message_id) in wanted:
                seqs[conversation_id].add(seq)
    return seqs


def _newest_side(db: Database, talk_ids: list[str]) -> dict[str, str]:
    """Who wrote each conversation's newest message."""
    with db.read() as session:
        newest: dict[str, str] = {}
        for conversation_id, side in session.exec(
            select(Message.conversation_id, Message.sender_role)
            .where(col(Message.conversation_id).in_(talk_ids))
            .order_by(col(Message.seq))
        ):
            newest[conversation_id] = side
        return newest


@on_postgres_alone_but_in_the_soak("db")
async def test_a_client_that_gives_up_between_store_and_signal_leaves_nothing_untold(
    dev_env: WorkflowEnvironment, db: Database, deploy: Callable[..., Deployment]
) -> None:
    """The API dies between storing a message and telling its workflow, and the client never
    sends it again. The reconciler tells every workflow of its newest message; meanwhile each
    decision taken because nothing happened (idle warning, idle close, first-reply requeue)
    that comes due over such a message finds it stored and declines."""
    rng = random.Random(GIVE_UP_SEED)
    host, _, port = address(dev_env).rpartition(":")
    with TcpProxy(host, int(port)) as proxy:
        deployment = deploy(
            db.url,
            timeouts=GIVE_UP_TIMEOUTS,
            groups=DEFAULT_GROUPS + FIRST_REPLY_GROUP,
            routing=FIRST_REPLY_ROUTING,
            extra_env={"SWITCHBOARD_RECONCILE_INTERVAL_SECONDS": str(RECONCILE_INTERVAL)},
            # Only the API reaches Temporal through the proxy: the worker (and its reconciler)
            # keeps its own link.
            api_env={"SWITCHBOARD_TEMPORAL_ADDRESS": f"127.0.0.1:{proxy.port}"},
        )
        try:
            talks, agents = await _served(deployment, db, rng)
            first = await fault_window(deployment, proxy, db, agents, talks, 0)
            # The second window: those the first left with the visitor having written last.
            going_on = [talk for talk in talks if talk.cases[0] in VISITOR_LAST]
            for talk, case in zip(going_on, _drawn(rng, SECOND_WINDOW, len(going_on)), strict=True):
                talk.cases.append(case)
            second = await fault_window(deployment, proxy, db, agents, going_on, 1)

            ids = [talk.id for talk in talks]
            try:
                await until_none_differ(
                    dev_env.client,
                    db,
                    talks,
                    _behind,
                    what="every workflow to hear of its newest message",
                    timeout=CAUGHT_UP_WITHIN,
                )
            finally:  # (a wrong decision is the likelier cause of a workflow left behind)
                wrong = await asyncio.to_thread(wrong_decisions, db, ids)
                assert not wrong, "\n".join(wrong)
            # The agent wrote last: closed for inactivity; the visitor: open until closed.
            newest_side = await asyncio.to_thread(_newest_side, db, ids)
            silent = [talk for talk in talks if newest_side[talk.id] == "agent"]
            await until_all(db, silent, lambda c: c.state == "closed", what="the idle closes")
            async with deployment.client() as api:
                for talk in talks:
                    if talk not in silent:
                        closed = await api.close(talk.id)
                        assert closed.status_code == 200, f"{talk.cases}: {closed.text}"
            await until_none_differ(
                dev_env.client,
                db,
                talks,
                _unsettled,
                what="every chat closed, the database and its workflow agreeing",
            )

            assert not await asyncio.to_thread(wrong_decisions, db, ids)  # nor since
            rows = await asyncio.to_thread(_conversations, db, ids)
            stored = await asyncio.to_thread(_stored_ids, db, ids)
            for talk in talks:
                reason = "idle_timeout" if talk in silent else "admin_closed"
                assert rows[talk.id].close_reason == reason, f"{talk.id} {talk.cases}"
                # Each message stored once: those acknowledged and those given up on.
                assert Counter(m for c, m in stored.elements() if c == talk.id) == Counter(
                    talk.told + talk.untold
                ), f"{talk.id} {talk.cases}"
            # The scenario held: in each window the API died under posts it had stored, none
            # of which it told; timers came due over stored messages not heard of.
            assert first.ended["killed"] and second.ended["killed"], (first, second)
            given_up = await asyncio.to_thread(_untold_seqs, db, talks)
            logs = await histories(dev_env.client, talks)
            worker = f"{deployment.processes['worker-0'].pid}@{socket.gethostname()}"
            told_by_api = {
                (talk.id, seq, who)
                for talk in talks
                for seq, who in told_messages(logs[talk.id])
                if seq in given_up[talk.id] and who != worker
            }
            assert not told_by_api, f"told after all (not by the worker {worker}): {told_by_api}"
            declines = sum((declined(log) for log in logs.values()), Counter[str]())
            assert declines, "no decision came due over a message its workflow had not heard of"
        finally:
            deployment.stop(faults=True)


def _drawn(rng: random.Random, cases: tuple[Case, ...], count: int) -> list[Case]:
    """`count` cases, each of `cases` as often as the next (give or take one), in a seeded
    order."""
    drawn = [cases[index % len(cases)] for index in range(count)]
    rng.shuffle(drawn)
    return drawn


async def _served(
    deployment: Deployment, db: Database, rng: random.Random
) -> tuple[list[Talk], dict[str, str]]:
    """Three agents online; ten conversations in `general` and three in `first_reply`, each
    with its first window's case, served; every visitor has said hello."""
    async with deployment.client() as api:
        agents: dict[str, str] = {}
        for index in range(3):
            agent = await api.create_agent(
                f"agent-{index}", skill_groups=["general", "first_reply"], max_concurrent=5
            )
            agents[agent.id] = agent.token
        talks = [
            Talk(*await api.start_conversation(), cases=[case])
            for case in _drawn(rng, FIRST_WINDOW, 10)
        ]
        talks += [
            Talk(*await api.start_conversation(entry="first_reply"), cases=[case])
            for case in _drawn(rng, FIRST_REPLY_WINDOW, 3)
        ]
        rows = await until_all(db, talks, lambda c: c.state == "active", what="every chat served")
        for talk in talks:
            talk.agent_id = rows[talk.id].agent_id
        talkers = Talkers(api, agents)
        await each(talks, lambda talk: talkers.tell(talk, "visitor"))
    return talks, agents
