"""Tokens that end, and access that ends with them (invariant 11): a visitor token works while
its conversation is open and until its rating window ends, names the key that signed it so the
key can rotate, and the app can have a fresh one; a disabled agent's token is refused, and a
replaced one by every API process, with the stream tickets it asked for; an open stream ends,
with a last event saying why, once its caller's access has; and whoever may not look at an
agent cannot tell whether the agent exists."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from api.credentials import visitor_of, visitor_token
from settings import Settings
from store.db import Database
from tests.support.api import APP_KEY, bearer, eventually, expect
from tests.support.backends import on_sqlite_alone
from tests.support.data import disable_agent
from tests.support.policy import PAYLOAD_KEY
from tests.support.processes import Deployment
from tests.support.system import System

KEY = "the-key-before-the-rotation"
NEW_KEY = "the-key-after-the-rotation"


def legacy_visitor_token(key: str, conversation_id: str) -> str:
    """A visitor token as handed out before tokens named their key."""
    signature = hmac.new(key.encode(), conversation_id.encode(), hashlib.sha256).hexdigest()
    return f"vis_{conversation_id}.{signature[:40]}"


def ended_because(events: list[dict[str, Any]]) -> str:
    """The reason a stream's last event gives for its end."""
    assert events and events[-1]["event"] == "stream.ended", events[-3:]
    return events[-1]["reason"]


def mentions(events: list[dict[str, Any]], text: str) -> bool:
    return any(text in json.dumps(event) for event in events)


def test_a_visitor_token_is_read_with_the_key_it_names_while_that_key_is_held() -> None:
    before = Settings(env="test", secret_key=KEY)
    during = Settings(env="test", secret_key=f"{NEW_KEY}, {KEY}")  # the new key signs
    after = Settings(env="test", secret_key=NEW_KEY)
    token = visitor_token(before, "c0ffee")
    fresh = visitor_token(during, "c0ffee")
    assert fresh != token and fresh == visitor_token(after, "c0ffee")
    assert [visitor_of(settings, token) for settings in (before, during, after)] == [
        "c0ffee",
        "c0ffee",
        None,
    ]
    assert visitor_of(before, fresh) is None
    legacy = legacy_visitor_token(KEY, "c0ffee")
    assert visitor_of(during, legacy) == "c0ffee" and visitor_of(after, legacy) is None
    assert KEY not in token and KEY.encode().hex() not in token

    odd = [
        "",
        "vis_",
        "vis_.",
        "vis_..",
        "vis_...",
        token.rsplit(".", 1)[0],  # no signature
        token.rsplit(".", 1)[0] + ".",
        token[:-1],
        token + "0",
        token.replace("c0ffee", "c0ffef"),
        token.replace("vis_", "vis_0"),
        token.upper(),
        "vis_é.c0ffee.ü",
        "vis_\x00.c0ffee." + "0" * 40,
        "vis_" + "a." * 4000,
        legacy.replace("c0ffee", "c0ffef"),
    ]
    assert [visitor_of(during, text) for text in odd] == [None] * len(odd)


def test_production_refuses_a_weak_or_empty_key_among_the_keys() -> None:
    strong = {"admin_token": "a" * 32, "app_key": "b" * 32, "payload_key": PAYLOAD_KEY}
    Settings(env="production", secret_key=f"{'n' * 32},{'o' * 32}", **strong)
    with pytest.raises(ValueError, match="SWITCHBOARD_SECRET_KEY"):
        Settings(env="production", secret_key=f"{'n' * 32},short", **strong)
    with pytest.raises(ValueError, match="empty key"):
        Settings(env="test", secret_key=f"{'n' * 32},")


async def test_after_a_key_rotation_open_conversations_go_on_and_the_app_mints_fresh_tokens(
    system: System,
) -> None:
    await system.create_agent()
    visit = await system.start_conversation()
    conversation_id = visit.conversation_id
    await system.wait_for(conversation_id, state="active")
    old_key = system.settings.secret_key
    legacy = legacy_visitor_token(old_key, conversation_id)
    path = f"/v1/conversations/{conversation_id}"

    async with system.another_api(secret_key=f"{NEW_KEY},{old_key}") as rotating:
        for token in (visit.token, legacy):
            expect(await rotating.http.get(path, headers=bearer(token)), 200)
        minted = expect(await rotating.mint_visitor_token(conversation_id), 200)
        assert minted["conversation_id"] == conversation_id and minted["expires_at"] is None
        fresh = minted["visitor_token"]
        assert fresh != visit.token
        expect(await rotating.http.get(path, headers=bearer(fresh)), 200)
        unknown = await rotating.mint_visitor_token("no-such-conversation")
        assert unknown.status_code == 404, unknown.text

    async with system.another_api(secret_key=NEW_KEY) as rotated:
        for token in (visit.token, legacy):
            refused = await rotated.http.get(path, headers=bearer(token))
            assert refused.status_code == 401, refused.text
        expect(await rotated.http.get(path, headers=bearer(fresh)), 200)
        await rotated.say(conversation_id, fresh, "Still here, with a fresh token")


async def test_who_may_not_look_at_an_agent_cannot_tell_whether_it_exists(system: System) -> None:
    alice = await system.create_agent("alice")
    bob = await system.create_agent("bob")
    visit = await system.start_conversation()
    for token in (visit.token, bob.token, APP_KEY):
        for suffix in ("", "/conversations", "/events"):
            answers = [
                await system.http.get(f"/v1/agents/{agent}{suffix}", headers=bearer(token))
                for agent in ("alice", "nobody")
            ]
            assert [answer.status_code for answer in answers] == [403, 403]
            assert answers[0].json() == answers[1].json()
        answers = [
            await system.http.put(
                f"/v1/agents/{agent}/status", headers=bearer(token), json={"status": "away"}
            )
            for agent in ("alice", "nobody")
        ]
        assert [answer.status_code for answer in answers] == [403, 403]
    unknown = await system.http.get("/v1/agents/nobody", headers=bearer(system.admin_token))
    assert unknown.status_code == 404
    expect(await system.http.get("/v1/agents/alice", headers=bearer(alice.token)), 200)


@pytest.mark.e2e
# Its stream's end is the API's (tests/test_stream_edges.py covers both databases' streams).
@on_sqlite_alone("empty_db")
async def test_a_visitor_token_works_until_the_rating_window_ends_and_its_stream_ends_then(
    empty_db: Database, deploy: Callable[..., Deployment]
) -> None:
    deployment = deploy(empty_db.url, timeouts={"rating_window": "8s"})
    async with deployment.client() as api:
        alice = await api.create_agent("alice")
        served = await api.start_conversation()
        await api.wait_for(served.conversation_id, state="active")
        unserved = await api.start_conversation(entry="callback_test")  # nobody serves it
        async with api.conversation_stream(*served) as stream:
            await stream.take(1)  # open: it replays from the start
            expect(await api.close(served.conversation_id, alice.token), 200)
            # Closed: the visitor still sees it, and may rate it, within the window.
            view = await api.conversation(*served)
            assert view["rating"]["status"] == "pending"
            minted = expect(await api.mint_visitor_token(served.conversation_id), 200)
            assert minted["expires_at"] == view["rating"]["expires_at"]
            await api.wait_for(unserved.conversation_id, close_reason="overflow")
            expect(await api.leave_message(*unserved, "Call me back, please"), 201)

            assert ended_because(await stream.rest()) == "token_expired"

        refused = await api.http.get(
            f"/v1/conversations/{served.conversation_id}", headers=bearer(served.token)
        )
        assert refused.status_code == 401, refused.text
        assert (await api.rate(*served, 5)).status_code == 401
        too_late = await api.mint_visitor_token(served.conversation_id)
        assert too_late.status_code == 409, too_late.text

        # A close nobody served has no rating, and a window as long from the close.
        async def unserved_refused() -> bool:
            response = await api.http.get(
                f"/v1/conversations/{unserved.conversation_id}/events",
                headers=bearer(unserved.token),
            )
            return response.status_code == 401

        await eventually(unserved_refused, timeout=60, what="the unserved visitor's token ended")


@pytest.mark.e2e
async def test_an_agents_open_streams_end_when_their_access_does(
    empty_db: Database, deploy: Callable[..., Deployment]
) -> None:
    deployment = deploy(empty_db.url)
    async with deployment.client() as api:
        alice = await api.create_agent("alice", max_concurrent=5)
        visit = await api.start_conversation()
        await api.wait_for(visit.conversation_id, state="active", agent_id="alice")
        bob = await api.create_agent("bob", max_concurrent=5)
        async with (
            api.conversation_stream(visit.conversation_id, alice.token) as conversation,
            api.agent_stream("alice", alice.token) as feed,
        ):
            await conversation.take(1)
            await feed.until("conversation.assigned")
            expect(await api.transfer(visit.conversation_id, alice.token, to_agent_id="bob"))
            await api.say(visit.conversation_id, visit.token, "Said to Bob alone")

            # Handed on: her stream of the conversation ends before anything said after.
            seen = await conversation.rest()
            assert ended_because(seen) == "access_lost"
            assert not mentions(seen, "Said to Bob alone")
            events = await api.http.get(
                f"/v1/conversations/{visit.conversation_id}/events", headers=bearer(alice.token)
            )
            assert events.status_code == 403
            # Her feed told her of the transfer and goes on with her own conversations only
            # (in commit order: the visitor's message, had it come, came before this one).
            other = await api.start_conversation()
            await api.wait_for(other.conversation_id, agent_id="alice")
            shown = await feed.until("conversation.assigned")
            assert any(event["event"] == "conversation.transferred" for event in shown)
            assert not mentions(shown, "Said to Bob alone")
            assert shown[-1]["conversation_id"] == other.conversation_id

            async with api.conversation_stream(other.conversation_id, alice.token) as another:
                await another.take(1)
                disable_agent(empty_db, "alice")
                # Disabled: every stream she holds ends, and her token is refused.
                assert ended_because(await another.rest()) == "agent_disabled"
                assert ended_because(await feed.rest()) == "agent_disabled"
        refused = await api.http.get("/v1/agents/alice", headers=bearer(alice.token))
        assert refused.status_code == 401, refused.text
        refused = await api.post_message(other.conversation_id, alice.token, "Still there?")
        assert refused.status_code == 401, refused.text
        expect(await api.http.get("/v1/agents/bob", headers=bearer(bob.token)), 200)


@pytest.mark.e2e
@pytest.mark.postgres
async def test_a_replaced_agent_token_is_refused_by_every_api_process_with_its_tickets_and_streams(
    postgres_db: Database, deploy: Callable[..., Deployment]
) -> None:
    deployment = deploy(postgres_db.url, apis=2)
    async with deployment.client(0) as a, deployment.client(1) as b:
        mia = await a.create_agent("mia")
        visit = await a.start_conversation()
        await a.wait_for(visit.conversation_id, state="active", agent_id="mia")
        feed = "/v1/agents/mia/stream"
        ticket = expect(await b.stream_ticket(feed, mia.token), 201)["ticket"]
        expect(await b.http.get("/v1/agents/mia", headers=bearer(mia.token)), 200)
        async with (
            b.agent_stream("mia", mia.token) as by_token,
            b.ticketed_stream(feed, ticket) as by_ticket,
            b.conversation_stream(visit.conversation_id, mia.token) as conversation,
        ):
            assert by_ticket.response.status_code == 200
            await by_token.until("conversation.assigned")
            await by_ticket.until("conversation.assigned")
            await conversation.take(1)
            # Asked on A by the agent, with the token it replaces.
            new = expect(await a.rotate_token("mia", mia.token), 200)["token"]
            for stream in (by_token, by_ticket, conversation):
                assert ended_because(await stream.rest()) == "token_replaced"

        for api in (a, b):
            refused = await api.http.get("/v1/agents/mia", headers=bearer(mia.token))
            assert refused.status_code == 401, refused.text
            expect(await api.http.get("/v1/agents/mia", headers=bearer(new)), 200)
        async with b.ticketed_stream(feed, ticket) as stale:
            assert stale.response.status_code == 401
        refused = await b.post_message(visit.conversation_id, mia.token, "With the old token")
        assert refused.status_code == 401, refused.text
        await b.say(visit.conversation_id, new, "With the new one")
        fresh = expect(await b.stream_ticket(feed, new), 201)["ticket"]
        async with b.ticketed_stream(feed, fresh) as opened:
            assert opened.response.status_code == 200

        # The admin replaces it too (say, for an agent who lost it).
        newer = expect(await b.rotate_token("mia"), 200)["token"]
        refused = await a.http.get("/v1/agents/mia", headers=bearer(new))
        assert refused.status_code == 401, refused.text
        expect(await a.http.get("/v1/agents/mia", headers=bearer(newer)), 200)
