"""Limits, each a clear error: messages per minute per sender in a conversation (429 with
Retry-After, counted in the database so it holds across API processes) and concurrent streams
per visitor (429, per API process). Message size and body size: tests/test_errors.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from api.main import create_app
from settings import Settings
from store.db import Database
from store.messages import RATE_WINDOW, RateLimited, store_message
from store.models import Message, utcnow
from tests.support.api import ADMIN_TOKEN, ApiClient, EventStream, Visit, bearer, eventually
from tests.support.callers import OWNER, World
from tests.support.data import enqueue_conversations
from tests.support.processes import Deployment

PER_MINUTE: int = Settings.model_fields["max_messages_per_minute"].default
STREAMS: int = Settings.model_fields["max_streams_per_visitor"].default


def test_the_defaults_are_the_documented_ones() -> None:
    assert (PER_MINUTE, STREAMS) == (60, 3)


# --- messages per minute ------------------------------------------------------------------------


def _store(db: Database, cid: str, sender: str, client_message_id: str, limit: int) -> int:
    stored = store_message(
        db,
        conversation_id=cid,
        sender_role="visitor",
        sender_id=sender,
        client_message_id=client_message_id,
        type="text",
        content="hi",
        max_per_minute=limit,
    )
    return stored.message.seq


def test_the_window_is_the_last_minute_and_a_retry_is_never_limited(db: Database) -> None:
    [cid] = enqueue_conversations(db, 1)
    seqs = [_store(db, cid, "visitor:1", f"m-{n}", limit=3) for n in range(3)]
    with pytest.raises(RateLimited) as limited:
        _store(db, cid, "visitor:1", "m-3", limit=3)
    assert 1 <= limited.value.retry_after <= RATE_WINDOW.total_seconds()
    assert _store(db, cid, "visitor:1", "m-1", limit=3) == seqs[1]  # the original, not a 429
    assert _store(db, cid, "visitor:2", "m-0", limit=3) > seqs[-1]  # another sender's own count

    with db.write() as session:  # the three leave the window
        session.execute(
            sa.update(Message)
            .where(col(Message.sender_id) == "visitor:1")
            .values(created_at=utcnow() - RATE_WINDOW - timedelta(seconds=1))
        )
    assert _store(db, cid, "visitor:1", "m-3", limit=3) > seqs[-1]


@pytest.fixture
async def two_apis(
    empty_db: Database, deploy: Callable[..., Deployment]
) -> AsyncIterator[tuple[World, ApiClient]]:
    """Two API processes and a worker on one database: the world is made through the first,
    the second is the other client."""
    deployment = deploy(empty_db.url, apis=2)
    async with deployment.client(0) as first, deployment.client(1) as second:
        yield await World(first).populate(), second


CONTENT = "where is my parcel?"


async def test_messages_per_minute_per_sender_across_api_processes(
    two_apis: tuple[World, ApiClient],
) -> None:
    world, second = two_apis
    apis = [world.api, second]
    conversation = await world.active()
    cid, visitor = conversation
    for n in range(PER_MINUTE):  # half through each process
        posted = await apis[n % 2].post_message(cid, visitor, CONTENT, f"v-{n}")
        assert posted.status_code == 201, posted.text
    before = (await world.view(conversation))["last_seq"]

    for api in apis:
        refused = await api.post_message(cid, visitor, CONTENT, f"v-{PER_MINUTE}")
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert f"more than {PER_MINUTE} messages a minute" in refused.json()["detail"]
    assert (await world.view(conversation))["last_seq"] == before  # nothing stored

    retried = await second.post_message(cid, visitor, CONTENT, "v-0")
    assert retried.status_code == 200, retried.text  # the original answer, not a 429
    assert retried.json()["seq"] < before
    agent = await second.post_message(cid, world.tokens[OWNER], CONTENT, "a-0")
    assert agent.status_code == 201, agent.text  # each sender has its own count


# --- streams per visitor ------------------------------------------------------------------------


@pytest.fixture
async def one_api(tmp_path: Path, deploy: Callable[..., Deployment]) -> AsyncIterator[World]:
    """The stream slots live in the API process: one database is enough (SQLite)."""
    async with deploy(f"sqlite:///{tmp_path / 'switchboard.db'}").client() as api:
        yield await World(api).populate()


async def _open(
    streams: AsyncExitStack, world: World, conversation: Visit, token: str
) -> EventStream:
    """Open a stream of the conversation and keep it open (until `streams` closes)."""
    return await streams.enter_async_context(
        world.api.conversation_stream(conversation.conversation_id, token)
    )


async def test_a_visitor_holds_a_limited_number_of_streams(one_api: World) -> None:
    world, http = one_api, one_api.api.http
    mine, other = await world.active(), await world.active()
    stream_of_mine = f"/v1/conversations/{mine.conversation_id}/stream"
    async with AsyncExitStack() as streams:
        held = [await _open(streams, world, mine, mine.token) for _ in range(STREAMS)]
        for stream in held:
            assert stream.response.status_code == 200
            assert stream.response.headers["content-type"].startswith("text/event-stream")

        refused = await http.get(stream_of_mine, headers=bearer(mine.token))
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert f"{STREAMS} streams" in refused.json()["detail"]

        # Only this visitor is limited: its agent, an admin and another visitor are not.
        for conversation, token in [
            (mine, world.tokens[OWNER]),
            (mine, ADMIN_TOKEN),
            (other, other.token),
        ]:
            assert (await _open(streams, world, conversation, token)).response.status_code == 200

        await held[0].response.aclose()  # the visitor closes one: its slot is free again

        async with AsyncExitStack() as attempt:

            async def reopened() -> httpx.Response | None:
                request = http.build_request("GET", stream_of_mine, headers=bearer(mine.token))
                response = await http.send(request, stream=True)
                if response.status_code != 200:
                    await response.aclose()
                    return None
                attempt.push_async_callback(response.aclose)
                return response

            await eventually(reopened, timeout=10, what="the closed stream's slot to be free")
            again = await http.get(stream_of_mine, headers=bearer(mine.token))
            assert again.status_code == 429, "a refused stream took a slot, or one freed twice"


def test_the_limits_are_in_the_openapi_document() -> None:
    paths = create_app().openapi()["paths"]
    for method, path in [
        ("post", "/v1/conversations/{conversation_id}/messages"),
        ("get", "/v1/conversations/{conversation_id}/stream"),
    ]:
        assert "Retry-After" in paths[path][method]["responses"]["429"]["headers"], path
