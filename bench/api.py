"""Driving the product over HTTP as its clients do: the app, agents, visitors, agent streams.

Messages, the load itself, go through aiohttp, whose client costs a fifth of httpx's CPU per
request: on two shared cores the load generator must not eat the product's CPU. Setup calls and
the streams go through the tests' API client (tests.support.api, on httpx).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
import httpx

from settings import DEV_ADMIN_TOKEN, DEV_APP_KEY
from tests.support.api import AgentLogin, ApiClient, Visit, bearer, eventually

T = TypeVar("T")


def client(base_url: str, connections: int = 100) -> ApiClient:
    """The API client of a stack started as `make run` starts it (its development tokens)."""
    return ApiClient.at(
        base_url,
        timeout=120,
        connections=connections,
        admin_token=DEV_ADMIN_TOKEN,
        app_key=DEV_APP_KEY,
    )


async def gather_limited(jobs: Iterable[Callable[[], Awaitable[T]]], concurrency: int) -> list[T]:
    """Run the jobs with at most `concurrency` at once; results in job order."""
    semaphore = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


async def create_agents(
    api: ApiClient, count: int, *, prefix: str, max_concurrent: int
) -> list[AgentLogin]:
    async def one(index: int) -> AgentLogin:
        return await api.create_agent(f"{prefix}-{index}", max_concurrent=max_concurrent)

    return await gather_limited([lambda i=i: one(i) for i in range(count)], 8)


async def start_conversations(
    api: ApiClient, count: int, *, prefix: str, concurrency: int = 16
) -> list[Visit]:
    async def one(index: int) -> Visit:
        return await api.start_conversation(f"{prefix}-{index}-{uuid.uuid4().hex[:6]}")

    return await gather_limited([lambda i=i: one(i) for i in range(count)], concurrency)


def poster(base_url: str, connections: int = 100) -> aiohttp.ClientSession:
    """The session that posts messages (keep-alive connections, at most `connections`)."""
    return aiohttp.ClientSession(
        base_url=base_url,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def post_message(
    session: aiohttp.ClientSession, conversation_id: str, token: str, content: str, message_id: str
) -> int:
    """POST one message; its HTTP status."""
    async with session.post(
        f"/v1/conversations/{conversation_id}/messages",
        headers=bearer(token),
        json={"client_message_id": message_id, "type": "text", "content": content},
    ) as response:
        await response.read()
        return response.status


async def agent_load(api: ApiClient, agents: list[AgentLogin]) -> int:
    return sum([(await api.agent(agent.id, agent.token))["load"] for agent in agents])


async def group_load(api: ApiClient) -> int:
    """Conversations held by online agents, all groups (GET /v1/monitor)."""
    return int(sum(group["load"] for group in (await api.monitor())["skill_groups"]))


async def wait_all_assigned(api: ApiClient, agents: list[AgentLogin], count: int) -> None:
    """Until the agents hold `count` conversations between them (the monitor's load, one
    request however many agents: asking each agent would load the API itself)."""
    baseline = await group_load(api)
    held = await agent_load(api, agents)

    async def assigned() -> bool:
        return await group_load(api) - baseline + held >= count

    await eventually(assigned, timeout=60 + count * 0.2, what=f"{count} assignments", every=1)


async def wait_all_idle_closed(api: ApiClient, count: int, *, timeout: float, every: float) -> None:
    """Until the groups have `count` idle auto-closes today (the monitor's figure: one request
    however many conversations)."""

    async def all_closed() -> bool:
        monitor = await api.monitor()
        closes = sum(group["auto_closes_today"] for group in monitor["skill_groups"])
        return bool(closes >= count)

    await eventually(all_closed, timeout=timeout, what="every idle auto-close", every=every)


def timestamp(value: str) -> float:
    """An ISO 8601 time of the API's, as Unix seconds."""
    return datetime.fromisoformat(value).timestamp()


@dataclass
class IdleLateness:
    """Per auto-closed conversation: how late its close came after the warning's close_at,
    that close_at, and how late the warning came after the agent's newest message."""

    closes: list[float] = field(default_factory=list)
    deadlines: list[float] = field(default_factory=list)
    warnings: list[float] = field(default_factory=list)


async def idle_lateness(
    api: ApiClient, visits: list[Visit], *, warning_after: float
) -> IdleLateness:
    """Read each conversation's events: its idle warning and its idle_timeout close."""
    found = IdleLateness()

    async def collect(visit: Visit) -> None:
        events = await api.events(visit.conversation_id)
        by_type = {event["type"]: event for event in events}
        warning = by_type["conversation.idle_warning"]
        closed = by_type["conversation.closed"]
        assert closed["data"]["close_reason"] == "idle_timeout"
        close_at = timestamp(warning["data"]["close_at"])
        found.deadlines.append(close_at)
        found.closes.append(timestamp(closed["at"]) - close_at)
        agent_message = max(
            (e for e in events if e["type"] == "message.created"), key=lambda e: e["seq"]
        )
        found.warnings.append(
            timestamp(warning["at"]) - (timestamp(agent_message["at"]) + warning_after)
        )

    await gather_limited([lambda v=v: collect(v) for v in visits], 16)
    return found


# --- Server-Sent Events ---------------------------------------------------------------------


@dataclass
class Arrival:
    at: float  # time.time() when the event's last line arrived
    event: dict[str, Any]


@dataclass
class AgentStream:
    """An agent's workbench stream (GET /v1/agents/{id}/stream) read by a real HTTP client;
    every event with the wall-clock time it arrived."""

    agent: AgentLogin
    arrivals: asyncio.Queue[Arrival] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def _read(self, base_url: str, after_seq: int) -> None:
        async with (
            ApiClient.at(base_url, timeout=None) as api,
            api.agent_stream(self.agent.id, self.agent.token, after_seq=after_seq) as stream,
        ):
            if stream.response.status_code != 200:
                raise RuntimeError(f"agent stream answered {stream.response.status_code}")
            self.connected.set()
            async for event in stream:
                self.arrivals.put_nowait(Arrival(time.time(), event))

    async def start(self, base_url: str, after_seq: int = 0) -> None:
        self.task = asyncio.create_task(self._read(base_url, after_seq))
        await asyncio.wait_for(self.connected.wait(), timeout=30)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, httpx.HTTPError):
                pass


async def agent_feed_seq(api: ApiClient, agent: AgentLogin) -> int:
    return int((await api.agent(agent.id, agent.token))["feed_seq"])
