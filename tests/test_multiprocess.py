"""Two API processes and two workers on PostgreSQL and the dev server, as a deployment runs.

A message posted to API A reaches a stream held on API B; when B is killed, the client resumes on
A with Last-Event-ID and gets every event exactly once; assignment holds with both workers.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from store.db import Database
from store.models import Assignment
from tests.test_e2e import Deployment, _events, _say, _sse, _start, _until_active, _until_event
from tests.utils import ADMIN, bearer, eventually
from tests.workbench import create_agent_over_api

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture
def two_of_each(dev_env, tmp_path: Path, postgres_db: Database) -> Iterator[Deployment]:
    running = Deployment(
        dev_env=dev_env, tmp_path=tmp_path, database_url=postgres_db.url, apis=2, workers=2
    )
    yield running
    running.stop()


async def _agent(http: httpx.AsyncClient, agent_id: str, capacity: int) -> str:
    return await create_agent_over_api(http, ADMIN, agent_id, max_concurrent=capacity)


async def _held_through_a_kill(
    deployment: Deployment,
    a: httpx.AsyncClient,
    b: httpx.AsyncClient,
    path: str,
    token: str,
    *,
    conversation: tuple[str, str],
    replay: int,
) -> list[dict]:
    """Hold the stream at `path` on B: replay `replay` events, see a message posted to A arrive
    live, SIGKILL B, post five more to A, resume on A with Last-Event-ID. What the client saw."""
    cid, visitor = conversation
    seen: list[dict] = []
    async with b.stream("GET", path, headers=bearer(token)) as r:
        lines = r.aiter_lines()
        seen += await asyncio.wait_for(_sse(lines, replay), timeout=15)
        seq = await _say(a, cid, visitor, "Posted to A")  # B hears it via NOTIFY
        seen += await asyncio.wait_for(_sse(lines, 1), timeout=5)
        assert (seen[-1]["seq"], seen[-1]["data"]["content"]) == (seq, "Posted to A")
        deployment.kill("api-1")  # SIGKILL B while the client streams
        with pytest.raises(httpx.HTTPError):
            await asyncio.wait_for(_sse(lines, 1), timeout=10)
    for n in range(5):
        await _say(a, cid, visitor, f"after the kill {n}")
    resume = {**bearer(token), "Last-Event-ID": seen[-1]["id"]}
    async with a.stream("GET", path, headers=resume) as r:
        seen += await asyncio.wait_for(_sse(r.aiter_lines(), 5), timeout=15)
    assert [e["data"]["content"] for e in seen[-5:]] == [f"after the kill {n}" for n in range(5)]
    return seen


async def test_a_message_to_one_api_reaches_a_stream_on_the_other_and_survives_a_kill(
    two_of_each: Deployment,
) -> None:
    api_a, api_b = two_of_each.urls
    async with (
        httpx.AsyncClient(base_url=api_a, timeout=30) as a,
        httpx.AsyncClient(base_url=api_b, timeout=30) as b,
    ):
        agent = await _agent(a, "erin", 2)
        cid, visitor = await _start(a)
        await _until_active(a, cid, visitor)
        so_far = len(await _events(a, cid, visitor))
        seen = await _held_through_a_kill(
            two_of_each,
            a,
            b,
            f"/v1/conversations/{cid}/stream",
            agent,
            conversation=(cid, visitor),
            replay=so_far,
        )
        total = len(await _events(a, cid, visitor))
    assert [e["seq"] for e in seen] == list(range(1, total + 1)), "a gap or a repeat"


async def test_an_agent_stream_on_one_api_survives_its_kill_and_resumes_on_the_other(
    two_of_each: Deployment,
) -> None:
    api_a, api_b = two_of_each.urls
    async with (
        httpx.AsyncClient(base_url=api_a, timeout=30) as a,
        httpx.AsyncClient(base_url=api_b, timeout=30) as b,
    ):
        agent = await _agent(a, "ivy", 2)
        cid, visitor = await _start(a)
        await _until_active(a, cid, visitor)
        seen = await _held_through_a_kill(
            two_of_each, a, b, "/v1/agents/ivy/stream", agent, conversation=(cid, visitor), replay=2
        )
        total = (await a.get("/v1/agents/ivy", headers=bearer(agent))).json()["feed_seq"]
    assert [e["type"] for e in seen[:2]] == ["conversation.assigned", "conversation.state_changed"]
    assert {e["conversation_id"] for e in seen} == {cid}
    assert [int(e["id"]) for e in seen] == list(range(1, total + 1)), "a gap or a repeat"


async def test_assignment_holds_with_two_workers_and_two_apis(
    two_of_each: Deployment, postgres_db: Database
) -> None:
    api_a, api_b = two_of_each.urls
    async with (
        httpx.AsyncClient(base_url=api_a, timeout=30) as a,
        httpx.AsyncClient(base_url=api_b, timeout=30) as b,
    ):
        agents = {name: await _agent(a, name, 2) for name in ("f1", "f2", "f3")}
        started = await asyncio.gather(*(_start(a if i % 2 else b) for i in range(20)))

        async def six_active() -> dict[str, list[str]] | None:
            held = {}
            for name, token in agents.items():
                response = await b.get(f"/v1/agents/{name}/conversations", headers=bearer(token))
                held[name] = [c["id"] for c in response.json()]
            return held if sum(map(len, held.values())) == 6 else None

        for _round in range(4):
            held = await eventually(six_active, timeout=30, what="every seat taken")
            assert all(len(ids) == 2 for ids in held.values()), held
            # Each agent closes one, through alternating API processes.
            closes = await asyncio.gather(
                *(
                    (a if i % 2 else b).post(
                        f"/v1/conversations/{ids[0]}/close", headers=bearer(agents[name])
                    )
                    for i, (name, ids) in enumerate(held.items())
                )
            )
            assert all(r.status_code == 200 for r in closes)
        await eventually(six_active, timeout=30, what="the seats refilled")
        states = Counter()
        for cid, visitor in started:
            states[
                (await a.get(f"/v1/conversations/{cid}", headers=bearer(visitor))).json()["state"]
            ] += 1
        assert states == {"closed": 12, "active": 6, "queued": 2}

    with postgres_db.read() as session:
        log = session.exec(select(Assignment)).all()
    assert len(log) == 18 and len({row.conversation_id for row in log}) == 18, "assigned twice"


async def test_typing_reaches_the_other_api_live_and_is_never_stored(
    two_of_each: Deployment,
) -> None:
    api_a, api_b = two_of_each.urls
    async with (
        httpx.AsyncClient(base_url=api_a, timeout=30) as a,
        httpx.AsyncClient(base_url=api_b, timeout=30) as b,
    ):
        agent = await _agent(a, "gus", 1)
        cid, visitor = await _start(a)
        await _until_active(a, cid, visitor)
        so_far = len(await _events(a, cid, visitor))
        async with b.stream("GET", f"/v1/conversations/{cid}/stream", headers=bearer(agent)) as r:
            lines = r.aiter_lines()
            await _sse(lines, so_far)
            typed = await a.post(f"/v1/conversations/{cid}/typing", headers=bearer(visitor))
            assert typed.status_code == 202
            [signal] = await asyncio.wait_for(_sse(lines, 1), timeout=5)
            assert signal["event"] == "conversation.typing" and signal["id"] is None
            assert signal["by_role"] == "visitor"
        assert len(await _events(a, cid, visitor)) == so_far  # not in the log


async def test_a_worker_that_stops_hands_its_conversations_to_the_other(
    two_of_each: Deployment,
) -> None:
    async with httpx.AsyncClient(base_url=two_of_each.urls[0], timeout=30) as a:
        agent = await _agent(a, "jo", 4)
        conversations = [await _start(a) for _ in range(4)]
        for cid, visitor in conversations:
            await _until_active(a, cid, visitor)
        # Graceful stop (SIGTERM): it finishes what it runs, then hands the rest back.
        stopped = two_of_each.processes.pop("worker-0")
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(30) == 0
        log = (two_of_each.logs / "worker-0.log").read_text()
        assert "Traceback" not in log and "worker stopped" in log
        # Every conversation goes on with the other worker: the agent's message starts the
        # idle countdown there, its warning and its auto-close fire there.
        for cid, _visitor in conversations:
            await _say(a, cid, agent, "Anything else?")
        for cid, visitor in conversations:
            closed = await _until_event(a, cid, visitor, "conversation.closed")
            assert closed["data"]["close_reason"] == "idle_timeout"
        load = (await a.get("/v1/agents/jo", headers=bearer(agent))).json()["load"]
        assert load == 0
