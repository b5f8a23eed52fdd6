"""Streams at their edges, over real HTTP to an API process, on SQLite and PostgreSQL (where
typing travels by NOTIFY): typing is shown to the other side only, never echoed to its sender;
a resume point beyond the newest event is refused, never followed by a stream that would skip
the events still to come up to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from api.deps import MAX_SEQ, stream_start
from api.main import create_app
from store.db import Database
from tests.support.api import AgentLogin, ApiClient, EventStream
from tests.support.processes import Deployment


class Served(NamedTuple):
    """An agent holding a conversation, and where the conversation's log and her feed stand."""

    agent: AgentLogin
    conversation_id: str
    visitor: str
    newest: int
    feed: int


async def _served(api: ApiClient) -> Served:
    agent = await api.create_agent("hana")
    cid, visitor = await api.start_conversation()
    newest = (await api.wait_for_state(cid, visitor, "active"))["last_seq"]
    feed = (await api.agent(agent.id, agent.token))["feed_seq"]
    return Served(agent, cid, visitor, newest, feed)


def _typing_by(events: list[dict[str, Any]], by_id: str | None) -> None:
    for event in events:
        assert (event["event"], event["id"], event["by_id"]) == ("conversation.typing", None, by_id)


async def _messages(stream: EventStream, count: int) -> list[str]:
    """The next `count` events, which must all be messages: their texts."""
    events = await stream.take(count, timeout=20)
    assert [event["event"] for event in events] == ["message.created"] * count, events
    return [event["data"]["content"] for event in events]


async def test_typing_reaches_the_other_side_and_never_its_sender(
    db: Database, deploy: Callable[..., Deployment]
) -> None:
    async with deploy(db.url).client() as api:
        agent, cid, visitor, newest, feed = await _served(api)
        visitor_id = f"visitor:{cid}"
        async with (
            api.conversation_stream(cid, visitor, after_seq=newest) as phone,
            api.agent_stream(agent.id, agent.token, after_seq=feed) as desk,
            api.conversation_stream(cid, agent.token, after_seq=newest) as agent_view,
        ):
            assert (await api.typing(cid, visitor)).status_code == 202
            _typing_by(await desk.take(1, timeout=20), visitor_id)
            _typing_by(await agent_view.take(1, timeout=20), visitor_id)
            assert (await api.typing(cid, agent.token)).status_code == 202
            # The visitor's own typing was never handed to the visitor's stream: the first
            # thing it shows is the agent's.
            # The visitor reads that the agent types, not the agent's id.
            _typing_by(await phone.take(1, timeout=20), None)
            # Nor the agent's own to the agent's streams: a stream hands its queued live
            # signals out after each read of the log, so two messages come back to back.
            await api.say(cid, visitor, "Is it shipped?")
            await api.say(cid, agent.token, "It is")
            for stream in (desk, agent_view, phone):
                assert await _messages(stream, 2) == ["Is it shipped?", "It is"]


async def _refused(stream: Any, newest: int) -> None:
    async with stream as opened:
        response = opened.response
        assert response.status_code == 422  # (a stream that opened would never end)
        await response.aread()
        assert f"beyond the newest event ({newest})" in response.json()["detail"]


async def test_a_resume_point_beyond_the_newest_event_is_refused(
    db: Database, deploy: Callable[..., Deployment]
) -> None:
    async with deploy(db.url).client() as api:
        agent, cid, visitor, newest, feed = await _served(api)
        for beyond in (str(newest + 1), str(MAX_SEQ), "9" * 40):
            await _refused(api.conversation_stream(cid, visitor, last_event_id=beyond), newest)
            await _refused(api.agent_stream(agent.id, agent.token, last_event_id=beyond), feed)
        for after_seq in (newest + 1, MAX_SEQ):
            await _refused(api.conversation_stream(cid, visitor, after_seq=after_seq), newest)
            page = await api.http.get(
                f"/v1/conversations/{cid}/events",
                headers={"Authorization": f"Bearer {visitor}"},
                params={"after_seq": after_seq},
            )
            assert page.status_code == 422, page.text
        for after_seq in (feed + 1, MAX_SEQ):
            await _refused(api.agent_stream(agent.id, agent.token, after_seq=after_seq), feed)
            page = await api.http.get(
                f"/v1/agents/{agent.id}/events",
                headers={"Authorization": f"Bearer {agent.token}"},
                params={"after_seq": after_seq},
            )
            assert page.status_code == 422, page.text
        # Up to the newest is where a client that saw everything stands: nothing more, yet.
        assert await api.events(cid, visitor, after_seq=newest) == []
        assert await api.agent_feed(agent.id, agent.token, after_seq=feed) == []
        async with api.conversation_stream(cid, visitor, last_event_id=str(newest)) as stream:
            assert stream.response.status_code == 200
            seq = await api.say(cid, visitor, "Hello?")
            [said] = await stream.take(1, timeout=20)
            assert said["seq"] == seq == newest + 1


def test_a_last_event_id_that_is_not_a_number_is_ignored() -> None:
    """Only a seq could have been sent as an id: anything else (a digit of another script
    too) starts the stream after `after_seq`."""
    for ignored in ("", "abc", "²", "١٢", "-3", "1.5"):
        assert stream_start(after_seq=5, last_event_id=ignored) == 5
    assert stream_start(after_seq=5, last_event_id="0009") == 9
    assert stream_start(after_seq=5, last_event_id="9" * 40) == MAX_SEQ + 1


def test_the_refusal_is_in_the_openapi_document() -> None:
    paths = create_app().openapi()["paths"]
    for path in (
        "/v1/conversations/{conversation_id}/events",
        "/v1/conversations/{conversation_id}/stream",
        "/v1/agents/{agent_id}/events",
        "/v1/agents/{agent_id}/stream",
    ):
        assert "beyond the newest event" in paths[path]["get"]["responses"]["422"]["description"]
