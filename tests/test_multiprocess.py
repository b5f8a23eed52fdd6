"""Two API processes and two workers on PostgreSQL and the dev server, as a deployment runs.

A message posted to API A reaches a stream held on API B; when B is killed, the client resumes on
A with Last-Event-ID and gets every event exactly once; assignment holds with both workers.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from sqlmodel import select

from store.db import Database
from store.models import Assignment
from tests.support.api import ApiClient, EventStream, Visit, eventually, gapless
from tests.support.processes import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

OpenStream = Callable[..., AbstractAsyncContextManager[EventStream]]


@pytest.fixture
def two_of_each(postgres_db: Database, deploy: Callable[..., Deployment]) -> Deployment:
    return deploy(postgres_db.url, apis=2, workers=2)


@pytest.fixture
async def apis(two_of_each: Deployment) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    """Clients of API A and API B."""
    async with two_of_each.client(0) as a, two_of_each.client(1) as b:
        yield a, b


async def _held_through_a_kill(
    deployment: Deployment,
    a: ApiClient,
    open_on_b: OpenStream,
    open_on_a: OpenStream,
    *,
    conversation: Visit,
    replay: int,
) -> list[dict]:
    """Hold a stream on B: replay `replay` events, see a message posted to A arrive live,
    SIGKILL B, post five more to A, resume on A with Last-Event-ID. What the client saw."""
    cid, visitor = conversation
    seen: list[dict] = []
    async with open_on_b() as stream:
        seen += await stream.take(replay, timeout=15)
        seq = await a.say(cid, visitor, "Posted to A")  # B hears it via NOTIFY
        seen += await stream.take(1, timeout=5)
        assert (seen[-1]["seq"], seen[-1]["data"]["content"]) == (seq, "Posted to A")
        deployment.kill("api-1")  # SIGKILL B while the client streams
        with pytest.raises(httpx.HTTPError):
            await stream.take(1, timeout=10)
    for n in range(5):
        await a.say(cid, visitor, f"after the kill {n}")
    async with open_on_a(last_event_id=seen[-1]["id"]) as stream:
        seen += await stream.take(5, timeout=15)
    assert [e["data"]["content"] for e in seen[-5:]] == [f"after the kill {n}" for n in range(5)]
    return seen


async def test_a_message_to_one_api_reaches_a_stream_on_the_other_and_survives_a_kill(
    two_of_each: Deployment, apis: tuple[ApiClient, ApiClient]
) -> None:
    a, b = apis
    erin = await a.create_agent("erin", max_concurrent=2)
    cid, visitor = conversation = await a.start_conversation()
    await a.wait_for_state(cid, visitor, "active")
    so_far = len(gapless(await a.events(cid)))
    seen = await _held_through_a_kill(
        two_of_each,
        a,
        lambda **resume: b.conversation_stream(cid, erin.token, **resume),
        lambda **resume: a.conversation_stream(cid, erin.token, **resume),
        conversation=conversation,
        replay=so_far,
    )
    total = len(gapless(await a.events(cid)))
    assert [e["seq"] for e in seen] == list(range(1, total + 1)), "a gap or a repeat"


async def test_an_agent_stream_on_one_api_survives_its_kill_and_resumes_on_the_other(
    two_of_each: Deployment, apis: tuple[ApiClient, ApiClient]
) -> None:
    a, b = apis
    ivy = await a.create_agent("ivy", max_concurrent=2)
    conversation = await a.start_conversation()
    await a.wait_for_state(*conversation, "active")
    seen = await _held_through_a_kill(
        two_of_each,
        a,
        lambda **resume: b.agent_stream(ivy.id, ivy.token, **resume),
        lambda **resume: a.agent_stream(ivy.id, ivy.token, **resume),
        conversation=conversation,
        replay=2,
    )
    total = (await a.agent(ivy.id, ivy.token))["feed_seq"]
    assert [e["type"] for e in seen[:2]] == ["conversation.assigned", "conversation.state_changed"]
    assert {e["conversation_id"] for e in seen} == {conversation.conversation_id}
    assert [int(e["id"]) for e in seen] == list(range(1, total + 1)), "a gap or a repeat"


async def test_assignment_holds_with_two_workers_and_two_apis(
    apis: tuple[ApiClient, ApiClient], postgres_db: Database
) -> None:
    a, b = apis
    agents = {
        name: (await a.create_agent(name, max_concurrent=2)).token for name in ("f1", "f2", "f3")
    }
    started = await asyncio.gather(*((a if i % 2 else b).start_conversation() for i in range(20)))

    async def six_active() -> dict[str, list[str]] | None:
        held = {}
        for name, token in agents.items():
            held[name] = [c["id"] for c in await b.agent_conversations(name, token)]
        return held if sum(map(len, held.values())) == 6 else None

    for _round in range(4):
        held = await eventually(six_active, timeout=30, what="every seat taken")
        assert all(len(ids) == 2 for ids in held.values()), held
        # Each agent closes one, through alternating API processes.
        closes = await asyncio.gather(
            *(
                (a if i % 2 else b).close(ids[0], agents[name])
                for i, (name, ids) in enumerate(held.items())
            )
        )
        assert all(r.status_code == 200 for r in closes)
    await eventually(six_active, timeout=30, what="the seats refilled")
    states = Counter()
    for cid, _visitor in started:  # as staff: a closed one's visitor token ends with its rating
        states[(await a.conversation(cid))["state"]] += 1
    assert states == {"closed": 12, "active": 6, "queued": 2}

    with postgres_db.read() as session:
        log = session.exec(select(Assignment)).all()
    assert len(log) == 18 and len({row.conversation_id for row in log}) == 18, "assigned twice"


async def test_typing_reaches_the_other_api_live_and_is_never_stored(
    apis: tuple[ApiClient, ApiClient],
) -> None:
    a, b = apis
    gus = await a.create_agent("gus", max_concurrent=1)
    cid, visitor = await a.start_conversation()
    await a.wait_for_state(cid, visitor, "active")
    so_far = len(gapless(await a.events(cid)))
    async with b.conversation_stream(cid, gus.token) as stream:
        await stream.take(so_far)
        typed = await a.typing(cid, visitor)
        assert typed.status_code == 202
        [signal] = await stream.take(1, timeout=5)
        assert signal["event"] == "conversation.typing" and signal["id"] is None
        assert signal["by_role"] == "visitor"
    assert len(await a.events(cid, visitor)) == so_far  # not in the log


async def test_a_worker_that_stops_hands_its_conversations_to_the_other(
    two_of_each: Deployment, apis: tuple[ApiClient, ApiClient]
) -> None:
    a, _b = apis
    jo = await a.create_agent("jo", max_concurrent=4)
    conversations = [await a.start_conversation() for _ in range(4)]
    for cid, visitor in conversations:
        await a.wait_for_state(cid, visitor, "active")
    # Graceful stop (SIGTERM): it finishes what it runs, then hands the rest back.
    stopped = two_of_each.processes.pop("worker-0")
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(30) == 0
    log = two_of_each.log("worker-0")
    assert "Traceback" not in log and "worker stopped" in log
    # Every conversation goes on with the other worker: the agent's message starts the
    # idle countdown there, its warning and its auto-close fire there.
    for cid, _visitor in conversations:
        await a.say(cid, jo.token, "Anything else?")
    for cid, visitor in conversations:
        closed = await a.wait_for_event(cid, visitor, "conversation.closed")
        assert closed["data"]["close_reason"] == "idle_timeout"
    assert (await a.agent(jo.id, jo.token))["load"] == 0
