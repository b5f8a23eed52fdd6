"""Browsers use the API safely: pages on the origins of SWITCHBOARD_CORS_ORIGINS (and no others)
call it, their EventSources open the visitor's and the agent's streams with short-lived stream
tickets (never a token in a URL, never a ticket in the log), and /docs works with no internet.

The page runs in headless Chromium (Playwright driving Debian's package: tests/support/pages.py),
served by a second HTTP server on its own port (another origin); the API and the worker are real
processes on the real dev server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from playwright.async_api import Browser, Page
from playwright.async_api import Error as PageError
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from settings import Settings
from store.db import Database
from store.models import Agent
from tests.support.api import AgentLogin, ApiClient, Visit, eventually, expect
from tests.support.pages import SHOWN_WITHIN_MS, expect_on_page, new_context, serve_page
from tests.support.policy import test_settings, write_policy
from tests.support.processes import Deployment, free_port
from tests.support.temporal import address

pytestmark = pytest.mark.e2e

# The shop's page: asks for a ticket with the caller's token, opens the stream with it, and
# writes each event it gets as a line of text ("visitor message.created seq=4").
SHOP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>A shop</title></head>
<body><p>the shop's page</p>
<script>
async function follow(api, token, stream, who, types) {
  const asked = await fetch(api + "/v1/stream-tickets", {
    method: "POST",
    headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    body: JSON.stringify({stream}),
  });
  if (asked.status !== 201) throw new Error("no ticket: " + asked.status);
  const {ticket} = await asked.json();
  const source = new EventSource(api + stream + "?ticket=" + encodeURIComponent(ticket));
  for (const type of types) {
    source.addEventListener(type, (event) => {
      const data = JSON.parse(event.data);
      const line = document.createElement("p");
      line.textContent = who + " " + type + " seq=" + data.seq
        + (data.conversation_id ? " in " + data.conversation_id : "");
      document.body.append(line);
    });
  }
  await new Promise((opened, failed) => {
    source.onopen = opened;
    source.onerror = () => failed(new Error("the stream did not open"));
  });
  return ticket;
}
</script></body></html>
"""

STREAMED_TYPES = ["conversation.assigned", "message.created"]


@dataclass
class Site:
    """The API (a deployment whose allow-list has the shop's origin) and the shop's page."""

    deployment: Deployment
    api: str  # the API's origin
    shop: str  # the shop page's origin, allowed
    stranger: str  # the same page on another origin, not allowed

    def client(self) -> ApiClient:
        return self.deployment.client()


@pytest.fixture(scope="module")
def site(dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("browsers")
    port = free_port()
    shop = f"http://127.0.0.1:{port}"
    with serve_page(SHOP_PAGE, port):
        deployment = Deployment(
            directory=directory,
            database_url=f"sqlite:///{directory / 'switchboard.db'}",
            temporal_address=address(dev_env),
            # DEBUG: whatever the API could log, a ticket must not be in it.
            extra_env={"SWITCHBOARD_CORS_ORIGINS": shop, "SWITCHBOARD_LOG_LEVEL": "DEBUG"},
        )
        try:
            yield Site(deployment, deployment.urls[0], shop, f"http://localhost:{port}")
        finally:
            deployment.stop()


async def active_conversation(api: ApiClient) -> tuple[Visit, AgentLogin]:
    """A conversation held by a new agent, who then goes away (keeping it, taking no more):
    the module's next conversation is not theirs."""
    agent = await api.create_agent()
    visit = await api.start_conversation()
    await api.wait_for(visit.conversation_id, state="active", agent_id=agent.id)
    await api.set_status(agent.id, agent.token, "away")
    return visit, agent


async def follow(page: Page, api: str, token: str, stream: str, who: str) -> str:
    """The page follows `stream` as `who`: the ticket its EventSource opened it with (a
    PageError with the script's own error if it fails)."""
    script = f"follow({', '.join(json.dumps(a) for a in (api, token, stream, who))}, " + (
        f"{json.dumps(STREAMED_TYPES)})"
    )
    async with asyncio.timeout(60):
        return await page.evaluate(script)


async def test_a_page_on_another_origin_follows_both_streams_with_tickets(
    site: Site, browser: Browser
) -> None:
    async with site.client() as api, new_context(browser) as shopper:
        visit, (agent_id, agent_token) = await active_conversation(api)
        conversation_stream = f"/v1/conversations/{visit.conversation_id}/stream"
        agent_stream = f"/v1/agents/{agent_id}/stream"
        page = await shopper.new_page()
        await page.goto(site.shop + "/")
        await expect_on_page(page.locator("body")).to_contain_text("the shop's page")
        tickets = [
            await follow(page, site.api, visit.token, conversation_stream, "visitor"),
            await follow(page, site.api, agent_token, agent_stream, "agent"),
        ]
        seq = await api.say(visit.conversation_id, visit.token, "Where is my parcel?")
        reply = await api.say(visit.conversation_id, agent_token, "It ships tomorrow.")
        lines = page.locator("body")
        for both_streams in [
            f"visitor message.created seq={reply}",
            f"agent message.created seq={reply} in {visit.conversation_id}",
        ]:
            await expect_on_page(lines).to_contain_text(both_streams, timeout=SHOWN_WITHIN_MS)
        shown = await lines.inner_text()
        assert f"visitor message.created seq={seq}" in shown
        assert f"agent message.created seq={seq} in {visit.conversation_id}" in shown
        # The agent's stream replays the feed from its start: the assignment first.
        assert "agent conversation.assigned" in shown

        # The same page on an origin the API does not list: the browser refuses it.
        await page.goto(site.stranger + "/")
        await expect_on_page(page.locator("body")).to_contain_text("the shop's page")
        with pytest.raises(PageError, match="Failed to fetch"):
            await follow(page, site.api, visit.token, conversation_stream, "visitor")

    # The streams ended with the browser: their request lines are logged, without a ticket.
    def logged_both() -> bool:
        log = site.deployment.log("api-0")
        return f"path={conversation_stream}" in log and f"path={agent_stream}" in log

    await eventually(
        lambda: asyncio.to_thread(logged_both), what="the streams' request lines in the log"
    )
    log = site.deployment.log("api-0")
    for secret in [*tickets, visit.token, agent_token]:
        assert secret not in log
    assert "ticket=" not in log


async def test_a_ticket_opens_its_stream_and_nothing_else(site: Site) -> None:
    async with site.client() as api:
        visit, (agent_id, agent_token) = await active_conversation(api)
        conversation_stream = f"/v1/conversations/{visit.conversation_id}/stream"
        agent_stream = f"/v1/agents/{agent_id}/stream"
        asked = expect(await api.stream_ticket(conversation_stream, visit.token), 201)
        assert asked["expires_in"] == 60
        ticket = asked["ticket"]

        async with api.ticketed_stream(conversation_stream, ticket) as stream:
            assert stream.response.status_code == 200
            assert stream.response.headers["content-type"].startswith("text/event-stream")
            first = (await stream.take(1))[0]
            assert first["seq"] == 1
        # Used again (an EventSource reconnecting within the ticket's life): opens again.
        async with api.ticketed_stream(conversation_stream, ticket) as stream:
            assert stream.response.status_code == 200

        agent_ticket = expect(await api.stream_ticket(agent_stream, agent_token), 201)["ticket"]
        forged = ticket[:-4] + ("0000" if not ticket.endswith("0000") else "1111")
        for stream, refused in [
            (agent_stream, ticket),  # the visitor's ticket, on the agent's stream
            (conversation_stream, agent_ticket),  # the agent's, on the conversation's
            (conversation_stream, forged),
            (conversation_stream, "stk_e30.0"),  # not one of ours
            (conversation_stream, agent_token),  # a token is no ticket
        ]:
            async with api.ticketed_stream(stream, refused) as opened:
                assert opened.response.status_code == 401, (stream, refused)
        # Nothing else takes a ticket: not the events, not the conversation.
        for path in [f"/v1/conversations/{visit.conversation_id}{end}" for end in ("/events", "")]:
            response = await api.http.get(path, params={"ticket": ticket})
            assert response.status_code == 401, path
        too_long = await api.http.get(conversation_stream, params={"ticket": "t" * 1025})
        assert too_long.status_code == 422


async def test_a_ticket_is_asked_for_with_the_rights_to_the_stream(site: Site) -> None:
    async with site.client() as api:
        visit, (agent_id, agent_token) = await active_conversation(api)
        other, _ = await active_conversation(api)
        conversation_stream = f"/v1/conversations/{visit.conversation_id}/stream"
        anonymous = await api.http.post("/v1/stream-tickets", json={"stream": conversation_stream})
        assert anonymous.status_code == 401
        cases = [
            (conversation_stream, other.token, 403),  # another conversation's visitor
            (conversation_stream, api.app_key, 403),  # the app never streams
            (f"/v1/agents/{agent_id}/stream", visit.token, 403),
            ("/v1/conversations/nobody/stream", agent_token, 404),
            ("/v1/agents/nobody/stream", None, 404),  # (the admin)
            (f"/v1/conversations/{visit.conversation_id}/events", visit.token, 422),
            (f"{conversation_stream}?after_seq=3", visit.token, 422),  # the path alone
            ("/" + "x" * 300, visit.token, 422),
        ]
        for stream, token, status in cases:
            response = await api.stream_ticket(stream, token)
            assert response.status_code == status, (stream, token, response.text)
        admin = await api.stream_ticket(conversation_stream)
        assert admin.status_code == 201
        assert admin.headers["cache-control"] == "no-store"


async def test_a_ticket_holds_only_while_its_holder_may(site: Site) -> None:
    async with site.client() as api:
        visit, (first, first_token) = await active_conversation(api)
        second = await api.create_agent()
        conversation_stream = f"/v1/conversations/{visit.conversation_id}/stream"
        agent_stream = f"/v1/agents/{first}/stream"
        held = expect(await api.stream_ticket(conversation_stream, first_token), 201)["ticket"]
        feed = expect(await api.stream_ticket(agent_stream, first_token), 201)["ticket"]

        # Transferred away: the conversation is no longer the first agent's to follow.
        expect(await api.transfer(visit.conversation_id, to_agent_id=second.id), 200)
        await api.set_status(second.id, second.token, "away")
        async with api.ticketed_stream(conversation_stream, held) as stream:
            assert stream.response.status_code == 403

        # The first agent's token replaced (a rotation): the ticket it asked for dies with it.
        async with api.ticketed_stream(agent_stream, feed) as stream:
            assert stream.response.status_code == 200
        db = Database(site.deployment.settings.database_url)
        try:
            with db.write() as session:
                session.execute(
                    sa.update(Agent).where(Agent.id == first).values(token_hash="0" * 64)
                )
        finally:
            db.dispose()
        async with api.ticketed_stream(agent_stream, feed) as stream:
            assert stream.response.status_code == 401


@pytest.fixture
async def short_tickets(tmp_path: Path) -> AsyncIterator[ApiClient]:
    """The API in process with tickets valid for one second (its Temporal is not needed)."""
    settings = test_settings(
        f"sqlite:///{tmp_path / 'switchboard.db'}",
        write_policy(tmp_path / "policy.toml"),
        task_queue="tq-unused",
        address=f"127.0.0.1:{free_port()}",
    ).model_copy(update={"stream_ticket_seconds": 1})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with ApiClient(httpx.AsyncClient(transport=transport, base_url="http://sb")) as api:
            yield api


async def test_a_ticket_expires(short_tickets: ApiClient) -> None:
    api = short_tickets
    agent = await api.create_agent(online=False)
    stream = f"/v1/agents/{agent.id}/stream"
    asked = expect(await api.stream_ticket(stream, agent.token), 201)
    assert asked["expires_in"] == 1
    await asyncio.sleep(asked["expires_in"] + 1)
    async with api.ticketed_stream(stream, asked["ticket"]) as opened:
        assert opened.response.status_code == 401
        assert "ask for a new one" in (await opened.response.aread()).decode()


def test_no_origin_is_allowed_unless_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().cors_origins == []
    monkeypatch.setenv("SWITCHBOARD_CORS_ORIGINS", " https://Shop.example.com, http://a.test:8080")
    assert Settings().cors_origins == ["https://shop.example.com", "http://a.test:8080"]
    for refused in ["*", "https://shop.example.com/", "shop.example.com", "https://a.test/x"]:
        monkeypatch.setenv("SWITCHBOARD_CORS_ORIGINS", refused)
        with pytest.raises(ValueError, match="is not an origin"):
            Settings()


async def test_cross_origin_calls_from_the_listed_origins_only(site: Site) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with httpx.AsyncClient(base_url=site.api, timeout=30) as http:
        allowed = await http.options(
            "/v1/stream-tickets", headers={"Origin": site.shop, **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == site.shop
        assert "access-control-allow-credentials" not in allowed.headers
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        # An EventSource that resumes sends Last-Event-ID: allowed should it be preflighted.
        resume = await http.options(
            "/v1/agents/alice/stream",
            headers={
                "Origin": site.shop,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "last-event-id",
            },
        )
        assert resume.status_code == 200

        stranger = await http.options(
            "/v1/stream-tickets", headers={"Origin": site.stranger, **preflight}
        )
        assert stranger.status_code == 400
        assert "access-control-allow-origin" not in stranger.headers

        # Answers (a refusal too, so a page can read it) carry the origin only if listed.
        listed = await http.get("/v1/monitor", headers={"Origin": site.shop})
        assert listed.status_code == 401
        assert listed.headers["access-control-allow-origin"] == site.shop
        assert "retry-after" in listed.headers["access-control-expose-headers"].lower()
        unlisted = await http.get("/v1/monitor", headers={"Origin": site.stranger})
        assert "access-control-allow-origin" not in unlisted.headers

    # The default: no origin listed, no cross-origin access at all.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(Settings())), base_url="http://sb"
    ) as http:
        refused = await http.options(
            "/v1/stream-tickets", headers={"Origin": site.shop, **preflight}
        )
        assert refused.status_code == 405
        assert not [name for name in refused.headers if name.startswith("access-control-")]


async def test_the_api_docs_work_without_the_internet(site: Site, browser: Browser) -> None:
    async with httpx.AsyncClient(base_url=site.api, timeout=30) as http:
        for page in ("/docs", "/redoc"):
            html = (await http.get(page)).text
            assert "https://" not in html and "http://" not in html, html
    async with new_context(browser) as reader:
        page = await reader.new_page()
        await page.goto(site.api + "/docs")
        # Swagger UI's list of operations, rendered by its scripts.
        operations = page.locator("body")
        for shown in ["/v1/stream-tickets", "stream_tickets"]:
            await expect_on_page(operations).to_contain_text(shown, timeout=SHOWN_WITHIN_MS)
        await page.goto(site.api + "/redoc")
        await expect_on_page(page.locator("body")).to_contain_text(
            "A ticket to open one stream from a browser", timeout=SHOWN_WITHIN_MS
        )
