"""End to end, as deployed: the real dev server, `python worker.py` and uvicorn on a loopback
port, driven over HTTP with second-scale timeouts from a test policy file."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from store.db import Database
from tests.support.api import ApiClient, bearer, gapless
from tests.support.backends import on_postgres_alone_but_in_the_soak
from tests.support.processes import Deployment

pytestmark = pytest.mark.e2e


@pytest.fixture
async def api(empty_db: Database, deploy: Callable[..., Deployment]) -> AsyncIterator[ApiClient]:
    """One worker and one API process on a new SQLite or PostgreSQL database (they migrate it)."""
    async with deploy(empty_db.url).client() as client:
        yield client


async def _events(api: ApiClient, cid: str, token: str) -> list[dict[str, Any]]:
    """The conversation's events as this caller reads them, checked: staff read them numbered
    from 1 without a gap, a visitor the same in order with gaps where staff's events are."""
    staff_reads = {event["seq"]: event["type"] for event in gapless(await api.events(cid))}
    events = await api.events(cid, token)
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs)) and set(seqs) <= set(staff_reads)
    assert all(staff_reads[event["seq"]] == event["type"] for event in events)
    return events


async def test_whole_lifecycle_over_http(api: ApiClient) -> None:
    alice = await api.create_agent("alice", max_concurrent=3)
    assert (await api.agent(alice.id, alice.token))["status"] == "online"

    # 1. Messages both ways, idle warning, auto-close, rating submitted.
    cid, visitor = await api.start_conversation()
    assert (await api.wait_for_state(cid, None, "active"))["agent_id"] == "alice"
    seqs = [
        await api.say(cid, visitor, "Where is my parcel?"),
        await api.say(cid, alice.token, "Let me check order 1234 for you."),
        await api.say(cid, visitor, "Thanks"),
        await api.say(cid, alice.token, "It ships tomorrow. Anything else?"),
    ]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    events = await _events(api, cid, visitor)
    messages = [e for e in events if e["type"] == "message.created"]
    assert [m["data"]["content"] for m in messages][-1] == "It ships tomorrow. Anything else?"
    assert [m["data"]["sender_role"] for m in messages] == ["visitor", "agent"] * 2
    assert await api.events(cid, alice.token)

    warning = await api.wait_for_event(cid, visitor, "conversation.idle_warning")
    assert "2 seconds" in warning["data"]["text"]
    closed = await api.wait_for_event(cid, visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "idle_timeout"
    assert closed["data"]["text"] == "Closed for inactivity."
    await api.wait_for_event(cid, visitor, "rating.invited")
    body = await api.conversation(cid, visitor)
    assert (body["state"], body["close_reason"], body["rating"]["status"]) == (
        "closed",
        "idle_timeout",
        "pending",
    )
    rated = await api.rate(cid, visitor, 5, resolved=True)
    assert rated.status_code == 201, rated.text
    assert rated.json()["status"] == "rated" and rated.json()["score"] == 5
    await api.wait_for_event(cid, visitor, "rating.submitted")
    late = await api.http.post(f"/v1/conversations/{cid}/message", headers=bearer(visitor))
    assert late.status_code in (404, 405)
    closed_message = await api.post_message(cid, visitor, "hello?", "late")
    assert closed_message.status_code == 409
    await _events(api, cid, visitor)

    # 2. The agent closes the second conversation; its rating expires unrated.
    cid2, visitor2 = await api.start_conversation()
    await api.wait_for_state(cid2, visitor2, "active")
    await api.say(cid2, visitor2, "Can I change my address?")
    closing = await api.close(cid2, alice.token)
    assert closing.status_code == 200, closing.text
    assert closing.json()["close_reason"] == "agent_closed"
    closed2 = await api.wait_for_event(cid2, visitor2, "conversation.closed")
    assert closed2["data"]["text"] == "Solved, thank you."
    # The window ends, and with it the visitor's token: the admin looks.
    await api.wait_for_event(cid2, None, "rating.expired")
    assert (await api.conversation(cid2))["rating"]["status"] == "expired"
    gone = await api.http.get(f"/v1/conversations/{cid2}", headers=bearer(visitor2))
    assert gone.status_code == 401, gone.text

    # 3. The visitor closes the third.
    cid3, visitor3 = await api.start_conversation()
    await api.wait_for_state(cid3, visitor3, "active")
    closing3 = await api.close(cid3, visitor3)
    assert closing3.status_code == 200, closing3.text
    assert closing3.json()["close_reason"] == "visitor_closed"
    await api.wait_for_event(cid3, visitor3, "rating.invited")
    await _events(api, cid3, visitor3)
    gapless(await api.events(cid2))  # as the admin: the visitor's token has ended

    # Every close gave the agent's seat back.
    assert (await api.agent(alice.id, alice.token))["load"] == 0


async def test_overflow_into_a_left_message_and_its_resolution(api: ApiClient) -> None:
    cid, visitor = await api.start_conversation("customer-callback", "app", entry="callback_test")
    position = await api.wait_for_event(cid, visitor, "queue.position_changed")
    assert position["data"]["position"] == 1 and position["data"]["skill_group"] == "callback"

    closed = await api.wait_for_event(cid, visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "overflow" and closed["data"]["left_message"]
    left = await api.leave_message(
        cid, visitor, "Please call me back about my refund", contact="+44 20 7946 0000"
    )
    assert left.status_code == 201, left.text
    await api.wait_for_event(cid, visitor, "left_message.created")

    waiting = await api.left_messages(status="open")
    assert [m["conversation_id"] for m in waiting] == [cid]
    resolved = await api.resolve_left_message(left.json()["id"], note="Called back; refund issued")
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert await api.left_messages(status="open") == []
    await api.wait_for_event(cid, visitor, "left_message.resolved")
    await _events(api, cid, visitor)


async def test_a_stream_replays_then_delivers_live_and_resumes_without_gaps(
    api: ApiClient,
) -> None:
    dora = await api.create_agent("dora", max_concurrent=2)
    cid, visitor = await api.start_conversation()
    await api.wait_for_state(cid, visitor, "active")
    so_far = len(await _events(api, cid, visitor))

    async with api.conversation_stream(cid, dora.token) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        replayed = await stream.take(so_far)
        assert [e["seq"] for e in replayed] == list(range(1, so_far + 1))
        assert all(e["id"] == str(e["seq"]) and e["event"] == e["type"] for e in replayed)
        logged = await api.events(cid)
        assert [{k: e[k] for k in ("seq", "type", "at", "data")} for e in replayed] == logged[
            :so_far
        ], "the stream's data is not the same JSON as /events"
        seq = await api.say(cid, visitor, "Is anyone there?")
        [live] = await stream.take(1, timeout=5)
        assert (live["seq"], live["type"]) == (seq, "message.created")
        assert live["data"]["content"] == "Is anyone there?"
        typed = await api.typing(cid, visitor)
        assert typed.status_code == 202
        [signal] = await stream.take(1, timeout=5)
        assert (signal["event"], signal["id"], signal["by_role"]) == (
            "conversation.typing",
            None,
            "visitor",
        )

    # Resume from the middle: exactly what came after, in order.
    middle = so_far // 2
    await api.say(cid, dora.token, "Yes, Dora here")
    total = len(await _events(api, cid, visitor))
    async with api.conversation_stream(cid, visitor, last_event_id=str(middle)) as stream:
        resumed = await stream.take(total - middle)
    assert [e["seq"] for e in resumed] == list(range(middle + 1, total + 1))
    other, _other_visitor = await api.start_conversation()
    forbidden = await api.http.get(f"/v1/conversations/{other}/stream", headers=bearer(visitor))
    assert forbidden.status_code == 403


@on_postgres_alone_but_in_the_soak("empty_db")
async def test_a_stream_resumed_after_1000_missed_events_replays_them_in_order(
    empty_db: Database, deploy: Callable[..., Deployment]
) -> None:
    # A thousand messages in seconds from one visitor: far over the default rate limit.
    deployment = deploy(empty_db.url, extra_env={"SWITCHBOARD_MAX_MESSAGES_PER_MINUTE": "1000"})
    async with deployment.client(timeout=60) as api:
        cid, visitor = await api.start_conversation()
        await api.wait_for_event(cid, visitor, "queue.position_changed")
        start = len(await _events(api, cid, visitor))
        posts = [api.say(cid, visitor, f"line {n}") for n in range(1000)]
        for batch in range(0, 1000, 50):  # while the visitor's stream was away
            await asyncio.gather(*posts[batch : batch + 50])
        async with api.conversation_stream(cid, visitor, last_event_id=str(start)) as stream:
            replayed = await stream.take(1000, timeout=60)
    assert [e["seq"] for e in replayed] == list(range(start + 1, start + 1001))
    assert sorted(e["data"]["content"] for e in replayed) == sorted(
        f"line {n}" for n in range(1000)
    )


async def test_an_api_that_stops_ends_its_streams_cleanly(
    empty_db: Database, deploy: Callable[..., Deployment]
) -> None:
    deployment = deploy(empty_db.url)
    async with deployment.client() as api:
        cid, visitor = await api.start_conversation()
        await api.wait_for_event(cid, visitor, "queue.position_changed")
        async with api.conversation_stream(cid, visitor) as stream:
            await stream.take(1)
            deployment.processes["api-0"].send_signal(signal.SIGTERM)
            started = time.monotonic()
            with pytest.raises(AssertionError, match="the stream ended"):
                await stream.take(10_000, timeout=20)
            assert time.monotonic() - started < 20  # ended by the server, not the timeout
        assert deployment.processes["api-0"].wait(20) in (0, -signal.SIGTERM)
