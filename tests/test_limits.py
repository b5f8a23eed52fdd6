"""Limits on every door, each a clear error on the real API: 429 with Retry-After for messages
per minute per sender in a conversation and conversations per customer (counted in the database,
so they hold across API processes), requests per client address and per caller, conversations
started per app key, streams held per caller and typing per conversation's side (per API
process); 413 for a body past the limit, counted as it arrives, and 401 before a body is read.
A 422 repeats no more than a slice of its input; /metrics is served on an address of its own.
Message size: tests/test_errors.py."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, suppress
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from api.main import create_app
from settings import PROJECT_ROOT, Settings
from store.conversations import CUSTOMER_START_WINDOW, OpenConversation, open_conversation
from store.db import Database
from store.messages import RATE_WINDOW, store_message
from store.models import Conversation, Message, utcnow
from store.rates import RateLimited
from tests.support.api import (
    ADMIN,
    ADMIN_TOKEN,
    APP,
    ApiClient,
    EventStream,
    Visit,
    bearer,
    eventually,
)
from tests.support.callers import OWNER, World, forged_visitor_token
from tests.support.data import enqueue_conversations
from tests.support.processes import Deployment, free_port

PER_MINUTE: int = Settings.model_fields["max_messages_per_minute"].default
CODEC_BODY_BYTES: int = Settings.model_fields["max_codec_body_bytes"].default
STREAMS: int = Settings.model_fields["max_streams_per_visitor"].default


# Every limit's setting, and where an API process serves its metrics.
LIMITS = {
    name: field.default
    for name, field in Settings.model_fields.items()
    if name.startswith("max_") or name == "metrics_address"
}


def test_the_defaults_are_the_documented_ones() -> None:
    assert (PER_MINUTE, STREAMS) == (60, 3)
    assert LIMITS["metrics_address"].startswith("127.0.0.1:"), "metrics on loopback by default"
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme[readme.index("\n## Settings") :].split("\n## ", 2)[1]
    security = readme[readme.index("\n## Security") :].split("\n## ", 2)[1]
    for name, default in LIMITS.items():
        variable = f"SWITCHBOARD_{name.upper()}"
        rows = [line for line in table.splitlines() if variable in line]
        assert rows and f"`{default}`" in rows[0], f"{variable} and its default in Settings"
        assert variable in security, f"{variable} in the Security section"


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
        ("post", "/v1/conversations"),
        ("post", "/v1/conversations/{conversation_id}/typing"),
        ("get", "/v1/agents/{agent_id}/stream"),
        ("get", "/v1/conversations/{conversation_id}"),  # requests per address and per caller
    ]:
        assert "Retry-After" in paths[path][method]["responses"]["429"]["headers"], path


# --- conversations per customer (in the database) -------------------------------------------


def _closed(db: Database, conversation_id: str) -> None:
    """Closed, as far as starting another is concerned (the workflow's close frees the key)."""
    with db.write() as session:
        session.execute(
            sa.update(Conversation)
            .where(col(Conversation.id) == conversation_id)
            .values(state="closed", open_customer_key=None)
        )


def test_a_customer_starts_a_limited_number_of_conversations_an_hour(db: Database) -> None:
    def start(customer_id: str) -> OpenConversation:
        return open_conversation(db, customer_id=customer_id, channel="web", max_per_customer=2)

    first = start("customer-1")
    _closed(db, first.conversation.id)
    second = start("customer-1")
    assert first.created and second.created
    again = start("customer-1")  # over the limit, but open: answered, nothing new started
    assert (again.created, again.conversation.id) == (False, second.conversation.id)
    _closed(db, second.conversation.id)
    with pytest.raises(RateLimited) as limited:
        start("customer-1")
    assert 1 <= limited.value.retry_after <= CUSTOMER_START_WINDOW.total_seconds()
    assert start("customer-2").created  # each customer has its own count

    with db.write() as session:  # the two leave the window
        session.execute(
            sa.update(Conversation)
            .where(col(Conversation.customer_id) == "customer-1")
            .values(created_at=utcnow() - CUSTOMER_START_WINDOW - timedelta(seconds=1))
        )
    assert start("customer-1").created


def _conversations_of(database_url: str, customer_id: str) -> int:
    db = Database(database_url)
    try:
        with db.read() as session:
            rows = session.exec(select(Conversation).where(Conversation.customer_id == customer_id))
            return len(rows.all())
    finally:
        db.dispose()


async def test_conversations_per_customer_over_the_api(
    empty_db: Database, deploy: Callable[..., Deployment]
) -> None:
    deployment = deploy(
        empty_db.url, extra_env={"SWITCHBOARD_MAX_CONVERSATIONS_PER_CUSTOMER_PER_HOUR": "2"}
    )
    async with deployment.client() as api:
        for _ in range(2):
            visit = await api.start_conversation("customer-7")
            closed = await api.close(*visit)  # abandoned while queued (nobody serves)
            assert closed.status_code == 200, closed.text
            await api.wait_for(visit.conversation_id, state="closed")
        refused = await api.http.post(
            "/v1/conversations", headers=APP, json={"customer_id": "customer-7"}
        )
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
        assert "started 2 conversations in the last hour" in refused.json()["detail"]
        assert "customer-7" not in refused.text  # the customer's id is not repeated
        await api.start_conversation("customer-8")  # another customer's own count
    assert _conversations_of(empty_db.url, "customer-7") == 2  # the refused one stored nothing


# --- per API process: starts per app key, requests per caller and per address ----------------


@pytest.fixture
def deploy_sqlite(
    tmp_path: Path, deploy: Callable[..., Deployment]
) -> Callable[[dict[str, str]], Deployment]:
    """A deployment on SQLite with these SWITCHBOARD_* settings: the counts of these limits
    live in the API process, one database is enough."""

    def start(settings: dict[str, str]) -> Deployment:
        return deploy(f"sqlite:///{tmp_path / 'switchboard.db'}", extra_env=settings)

    return start


def _refused(response: httpx.Response, detail: str, *, within: int = 60) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["Retry-After"]) <= within
    assert detail in response.json()["detail"]


async def test_conversations_started_per_app_key(
    deploy_sqlite: Callable[[dict[str, str]], Deployment],
) -> None:
    deployment = deploy_sqlite({"SWITCHBOARD_MAX_CONVERSATIONS_PER_MINUTE": "3"})
    async with deployment.client() as api:
        for _ in range(3):
            await api.start_conversation()
        one_more = {"customer_id": "one-more"}
        refused = await api.http.post("/v1/conversations", headers=APP, json=one_more)
        _refused(refused, "more than 3 conversations a minute with your key")
        by_admin = await api.http.post("/v1/conversations", headers=ADMIN, json=one_more)
        assert by_admin.status_code == 201, by_admin.text  # the admin token is counted apart
    assert _conversations_of(deployment.settings.database_url, "one-more") == 1


async def test_requests_per_caller(
    deploy_sqlite: Callable[[dict[str, str]], Deployment],
) -> None:
    deployment = deploy_sqlite({"SWITCHBOARD_MAX_REQUESTS_PER_MINUTE_PER_CALLER": "10"})
    async with deployment.client() as api:
        agent = await api.create_agent(online=False)
        for _ in range(10):
            await api.agent(agent.id, agent.token)
        refused = await api.http.get(f"/v1/agents/{agent.id}", headers=bearer(agent.token))
        _refused(refused, "more than 10 requests a minute with your token")
        going_online = await api.http.put(
            f"/v1/agents/{agent.id}/status", headers=bearer(agent.token), json={"status": "online"}
        )
        _refused(going_online, "more than 10 requests a minute with your token")
        # The admin token has its own count; the refused request changed nothing.
        assert (await api.agent(agent.id))["status"] == "offline"


async def test_requests_per_client_address(
    deploy_sqlite: Callable[[dict[str, str]], Deployment],
) -> None:
    deployment = deploy_sqlite({"SWITCHBOARD_MAX_REQUESTS_PER_MINUTE_PER_ADDRESS": "20"})
    url = deployment.urls[0]
    # Another address of this machine: the loopback network is all ours.
    elsewhere = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=url, transport=elsewhere) as client:
        for _ in range(20):
            assert (await client.get("/healthz")).status_code == 200
        limit = "more than 20 requests a minute from your address"
        _refused(await client.get("/healthz"), limit)
        # Counted before the caller: a valid token does not get past it either.
        _refused(
            await client.post("/v1/conversations", headers=APP, json={"customer_id": "c"}), limit
        )
    async with httpx.AsyncClient(base_url=url) as client:  # 127.0.0.1: its own count
        assert (await client.get("/healthz")).status_code == 200


# --- streams per caller, typing per side -----------------------------------------------------


async def _stream_status(http: httpx.AsyncClient, path: str, token: str) -> int:
    """Open a stream, read its status, close it."""
    async with http.stream("GET", path, headers=bearer(token)) as response:
        return response.status_code


async def test_agents_and_admins_hold_a_limited_number_of_streams(
    deploy_sqlite: Callable[[dict[str, str]], Deployment],
) -> None:
    deployment = deploy_sqlite(
        {"SWITCHBOARD_MAX_STREAMS_PER_AGENT": "2", "SWITCHBOARD_MAX_STREAMS_PER_ADMIN": "2"}
    )
    async with deployment.client() as api:
        world = await World(api).populate()
        mine = await world.active()
        alice = world.tokens[OWNER]
        desk_path = f"/v1/agents/{OWNER}/stream"
        chat_path = f"/v1/conversations/{mine.conversation_id}/stream"
        async with AsyncExitStack() as streams:
            desk = await streams.enter_async_context(api.agent_stream(OWNER, alice))
            chat = await _open(streams, world, mine, alice)
            assert (desk.response.status_code, chat.response.status_code) == (200, 200)
            for path in (desk_path, chat_path):  # both kinds count together
                async with api.http.stream("GET", path, headers=bearer(alice)) as refused:
                    await refused.aread()
                    _refused(refused, "2 streams of this agent are open already")

            for opening in (api.agent_stream(OWNER), api.conversation_stream(mine.conversation_id)):
                opened = await streams.enter_async_context(opening)  # the admin's
                assert opened.response.status_code == 200
            async with api.http.stream("GET", chat_path, headers=bearer(ADMIN_TOKEN)) as refused:
                await refused.aread()
                _refused(refused, "2 streams of this admin are open already")

            assert await _stream_status(api.http, chat_path, mine.token) == 200  # its own count

            await desk.response.aclose()  # Alice closes one: its slot is free again

            async def reopened() -> bool:
                return await _stream_status(api.http, desk_path, alice) == 200

            await eventually(reopened, timeout=10, what="the closed stream's slot to be free")


async def test_typing_per_side_of_a_conversation(
    deploy_sqlite: Callable[[dict[str, str]], Deployment],
) -> None:
    deployment = deploy_sqlite({"SWITCHBOARD_MAX_TYPING_PER_MINUTE": "3"})
    async with deployment.client() as api:
        world = await World(api).populate()
        mine, other = await world.active(), await world.active()
        for _ in range(3):
            assert (await api.typing(*mine)).status_code == 202
        _refused(await api.typing(*mine), "more than 3 typing signals a minute from your side")
        # The agent's side of it and another conversation have their own counts.
        assert (await api.typing(mine.conversation_id, world.tokens[OWNER])).status_code == 202
        assert (await api.typing(*other)).status_code == 202


# --- bodies and what a refusal repeats -------------------------------------------------------


async def _post_without_end(url: str, path: str, headers: dict[str, str], body: bytes) -> int:
    """POST `body` in 8 KiB chunks of a chunked body that never ends (no last chunk): the
    status the API answers while the rest is still to come."""
    address = httpx.URL(url)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {address.host}",
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        for start in range(0, len(body), 8192):
            chunk = body[start : start + 8192]
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        # An API that waits for the end of the body never answers: this fails the test.
        status_line = await asyncio.wait_for(reader.readline(), timeout=60)
        return int(status_line.split()[1])
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


async def test_a_body_is_counted_as_it_arrives_after_its_caller_is_known(one_api: World) -> None:
    world = one_api
    mine = await world.active()
    url, path = str(world.api.http.base_url), f"/v1/conversations/{mine.conversation_id}/messages"
    before = (await world.view(mine))["last_seq"]
    start = b'{"client_message_id": "big", "content": "'
    big = start + b"x" * (80 * 1024)  # past the 64 KiB limit, and more would follow

    # No token, or a forged one: 401 on the request's head, before any of its body is read.
    for headers in ({}, bearer(forged_visitor_token(mine))):
        assert await _post_without_end(url, path, headers, start) == 401
    # Its visitor: 413 once more than the limit has arrived, though the body has not ended.
    assert await _post_without_end(url, path, bearer(mine.token), big) == 413
    assert (await world.view(mine))["last_seq"] == before  # nothing stored
    assert (await world.api.say(*mine, "and now a short one")) == before + 1


async def test_the_codec_endpoint_takes_a_page_of_payloads_and_no_more(one_api: World) -> None:
    """The Temporal UI's and CLI's pages of payloads are larger than the API's other bodies:
    the codec routes have a limit of their own, counted as the body arrives, after the caller
    (a token, or a codec ticket in the path) is known."""
    world = one_api
    url = str(world.api.http.base_url)
    payload = {"metadata": {}, "data": base64.b64encode(b"x" * 3000).decode()}
    page = [payload] * 100  # about 400 KB: past SWITCHBOARD_MAX_BODY_BYTES
    decoded = await world.api.codec("decode", page)
    assert decoded.status_code == 200, decoded.text[:500]
    assert decoded.json()["payloads"] == page  # no key in this deployment: as they were

    endpoint = (await world.api.codec_ticket()).json()["endpoint"]
    ticketed = endpoint.removeprefix(url.rstrip("/")) + "/decode"
    forged = ticketed.replace("/tickets/stk_", "/tickets/stk_x")
    start = b'{"payloads": [{"data": "'
    # No token, or a forged ticket: 401 before any of the body is read.
    assert await _post_without_end(url, "/v1/codec/decode", {}, start) == 401
    assert await _post_without_end(url, forged, {}, start) == 401
    # The admin, or a ticket: 413 once more than the codec's limit has arrived.
    big = start + b"A" * (CODEC_BODY_BYTES + 1024)
    assert await _post_without_end(url, "/v1/codec/decode", ADMIN, big) == 413
    assert await _post_without_end(url, ticketed, {}, big) == 413


async def test_a_422_repeats_no_more_than_a_slice_of_its_input(one_api: World) -> None:
    world = one_api
    mine = await world.active()
    messages = f"/v1/conversations/{mine.conversation_id}/messages"
    huge = "x" * 60_000  # within the body limit
    agent = {"id": "carol", "name": "Carol", "max_concurrent": 1}
    for path, token, body, where in [
        (messages, mine.token, {"client_message_id": huge, "content": "hi"}, "client_message_id"),
        (messages, mine.token, {"client_message_id": "m", "content": "hi", huge: 1}, huge),
        ("/v1/agents", ADMIN_TOKEN, {**agent, "skill_groups": [huge]}, "skill_groups"),
    ]:
        response = await world.api.http.post(path, headers=bearer(token), json=body)
        assert response.status_code == 422, response.text[:500]
        assert len(response.content) < 1000, response.text[:500]
        [error] = response.json()["detail"]
        assert set(error) == {"loc", "msg", "type"}
        assert where.startswith(error["loc"][1].removesuffix("…")), error


# --- /metrics on its own address ---------------------------------------------------------------


async def test_metrics_are_served_on_their_own_address_only(
    deploy_sqlite: Callable[[dict[str, str]], Deployment],
) -> None:
    address = f"127.0.0.1:{free_port()}"
    deployment = deploy_sqlite({"SWITCHBOARD_METRICS_ADDRESS": address})
    async with deployment.client() as api:
        await api.start_conversation()
        assert (await api.http.get("/metrics")).status_code == 404  # not on the API's address
    async with httpx.AsyncClient() as scraper:
        scraped = await scraper.get(f"http://{address}/metrics")
    assert scraped.status_code == 200, scraped.text
    started = 'method="POST",route="/v1/conversations",status="201"'
    assert f"switchboard_http_request_duration_seconds_count{{{started}}} 1.0" in scraped.text
    assert 'switchboard_waiting{skill_group="general"}' in scraped.text
