"""Driving the product over HTTP as its clients do: the app, agents, visitors, agent streams.

Messages, the load itself, go through aiohttp, whose client costs a fifth of httpx's CPU per
request: on two shared cores the load generator must not eat the product's CPU. Setup calls and
the streams use httpx, as the tests do.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import httpx

from bench.stack import ADMIN, APP, bearer
from tests.workbench import create_agent_over_api

T = TypeVar("T")


@dataclass
class Agent:
    id: str
    token: str


@dataclass
class Visit:
    conversation_id: str
    token: str


def client(base_url: str, connections: int = 100) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=120,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def _ok(response: httpx.Response, *codes: int) -> dict[str, Any]:
    if response.status_code not in (codes or (200, 201)):
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body


async def gather_limited(jobs: Iterable[Callable[[], Awaitable[T]]], concurrency: int) -> list[T]:
    """Run the jobs with at most `concurrency` at once; results in job order."""
    semaphore = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


async def create_agents(
    http: httpx.AsyncClient, count: int, *, prefix: str, max_concurrent: int
) -> list[Agent]:
    async def one(index: int) -> Agent:
        agent_id = f"{prefix}-{index}"
        return Agent(
            agent_id,
            await create_agent_over_api(http, ADMIN, agent_id, max_concurrent=max_concurrent),
        )

    return await gather_limited([lambda i=i: one(i) for i in range(count)], 8)


async def start_conversations(
    http: httpx.AsyncClient, count: int, *, prefix: str, concurrency: int = 16
) -> list[Visit]:
    async def one(index: int) -> Visit:
        body = _ok(
            await http.post(
                "/v1/conversations",
                headers=APP,
                json={"customer_id": f"{prefix}-{index}-{uuid.uuid4().hex[:6]}", "channel": "web"},
            ),
            201,
        )
        return Visit(body["id"], body["visitor_token"])

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


async def agent_load(http: httpx.AsyncClient, agents: list[Agent]) -> int:
    total = 0
    for agent in agents:
        total += _ok(await http.get(f"/v1/agents/{agent.id}", headers=bearer(agent.token)))["load"]
    return total


async def group_load(http: httpx.AsyncClient) -> int:
    """Conversations held by online agents, all groups (GET /v1/monitor)."""
    monitor = _ok(await http.get("/v1/monitor", headers=ADMIN))
    return int(sum(group["load"] for group in monitor["skill_groups"]))


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float, what: str, every: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


async def wait_all_assigned(http: httpx.AsyncClient, agents: list[Agent], count: int) -> None:
    """Until the agents hold `count` conversations between them (the monitor's load, one
    request however many agents: asking each agent would load the API itself)."""
    baseline = await group_load(http)
    held = await agent_load(http, agents)

    async def assigned() -> bool:
        return await group_load(http) - baseline + held >= count

    await wait_until(assigned, timeout=60 + count * 0.2, what=f"{count} assignments", every=1)


async def conversation_events(
    http: httpx.AsyncClient, conversation_id: str, *, after_seq: int = 0
) -> list[dict[str, Any]]:
    """Every event of a conversation (admin), all pages."""
    events: list[dict[str, Any]] = []
    while True:
        page = _ok(
            await http.get(
                f"/v1/conversations/{conversation_id}/events",
                params={"after_seq": after_seq, "limit": 1000},
                headers=ADMIN,
            )
        )
        events += page["events"]
        if not page["has_more"]:
            return events
        after_seq = page["events"][-1]["seq"]


# --- Server-Sent Events ---------------------------------------------------------------------


@dataclass
class Arrival:
    at: float  # time.time() when the event's last line arrived
    event: dict[str, Any]


@dataclass
class AgentStream:
    """An agent's workbench stream (GET /v1/agents/{id}/stream) read by a real HTTP client;
    every event with the wall-clock time it arrived."""

    agent: Agent
    arrivals: asyncio.Queue[Arrival] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def _read(self, base_url: str, after_seq: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=None) as http:
            async with http.stream(
                "GET",
                f"/v1/agents/{self.agent.id}/stream",
                params={"after_seq": after_seq},
                headers=bearer(self.agent.token),
            ) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"agent stream answered {response.status_code}")
                self.connected.set()
                async for event in sse_events(response.aiter_lines()):
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


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Events off a text/event-stream (comments are keep-alives), as in tests/test_e2e.py."""
    current: dict[str, str] = {}
    async for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if current.get("data"):
                yield {
                    **json.loads(current["data"]),
                    "id": current.get("id"),
                    "event": current.get("event"),
                }
            current = {}
            continue
        name, _, value = line.partition(":")
        current[name] = value.lstrip(" ")


async def agent_feed_seq(http: httpx.AsyncClient, agent: Agent) -> int:
    return int(
        _ok(await http.get(f"/v1/agents/{agent.id}", headers=bearer(agent.token)))["feed_seq"]
    )
