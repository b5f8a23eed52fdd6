"""The agents' workbench and the supervisors' wallboard in a real browser (Debian's Chromium
through Playwright), against real API and worker processes on the dev server: the visitor's
side is driven over the API, and what the visitor reads is checked there.

Each page is checked for serious and critical accessibility violations in a real state, and
screenshotted at 1280 and 360 px wide (under the system's temporary directory, to look at)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, Page
from playwright.async_api import expect as shown

from store.db import Database
from tests.support.api import AgentLogin, ApiClient, eventually, expect
from tests.support.pages import accessibility_problems, new_context, on_sqlite_alone
from tests.support.policy import STAFF_ASSIST, add_to_policy
from tests.support.processes import Deployment

pytestmark = pytest.mark.e2e

# No idle countdown closes a conversation while the browser works on it.
QUIET_VISITOR = {"idle_warning_after": "10m", "idle_close_after": "10m"}
TEMPORAL_UI = "http://temporal-ui.example:8233"
INTERNAL_NOTE = "Customer is upset: offer the voucher"
TRANSFER_NOTE = "Needs a refund approval"
SCREENSHOTS = Path(tempfile.gettempdir()) / "switchboard-screenshots"


@pytest.fixture
def deployment(db: Database, deploy: Callable[..., Deployment]) -> Deployment:
    """API and worker processes with the canned replies and SOP of the staff-assist tests, no
    idle countdown to speak of, and a Temporal UI address for the wallboard's links."""
    deployment = deploy(
        db.url,
        timeouts=QUIET_VISITOR,
        extra_env={"SWITCHBOARD_TEMPORAL_UI_URL": TEMPORAL_UI},
    )
    add_to_policy(deployment.settings.policy, STAFF_ASSIST)
    return deployment


async def _sign_in(page: Page, base: str, path: str, token: str) -> None:
    await page.goto(f"{base}{path}")
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await shown(page.locator("#sign-in-view")).to_be_hidden()
    assert token not in page.url


async def _looked_at(page: Page, name: str) -> None:
    """No serious or critical accessibility problem; a screenshot at 1280 and at 360 px."""
    assert await accessibility_problems(page) == []
    SCREENSHOTS.mkdir(exist_ok=True)
    for width in (1280, 360):
        await page.set_viewport_size({"width": width, "height": 800})
        await page.screenshot(path=SCREENSHOTS / f"{name}-{width}.png", full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 800})


def _texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"].get("content") for e in events if e["type"] == "message.created"]


async def _online(api: ApiClient, agent_id: str) -> None:
    async def is_online() -> bool:
        return (await api.agent(agent_id))["status"] == "online"

    await eventually(is_online, what=f"{agent_id} online")


@on_sqlite_alone("db")
async def test_an_agent_serves_a_customer_from_the_workbench(
    deployment: Deployment, browser: Browser
) -> None:
    base = deployment.urls[0]
    async with deployment.client() as api:
        alice = await api.create_agent("alice")
        # The customer came once before: served by Alice, closed.
        earlier, earlier_visitor = await api.start_conversation("cust-7", entry="refund")
        await api.wait_for(earlier, state="active", agent_id="alice")
        await api.say(earlier, earlier_visitor, "My first question")
        expect(await api.close(earlier, alice.token), 200)
        await api.set_status("alice", alice.token, "offline")

        async with new_context(browser) as context:
            page = await context.new_page()
            served = await page.goto(f"{base}/workbench/")
            assert served is not None
            headers = await served.all_headers()
            assert "script-src 'self';" in headers["content-security-policy"]
            assert "connect-src 'self';" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"
            await shown(page.get_by_role("heading", name="Sign in")).to_be_visible()
            await _looked_at(page, "workbench-sign-in")
            await _sign_in(page, base, "/workbench/", alice.token)
            await shown(page.locator("#who-name")).to_have_text("Alice (alice)")
            await page.get_by_label("Status").select_option("online")
            await _online(api, "alice")

            cid, visitor = await api.start_conversation(
                "cust-7",
                entry="refund",
                order_id="SO-1001",
                attributes={"name": "Li Lei", "membership": "gold"},
            )
            await shown(page.locator("#banners")).to_contain_text(
                "New conversation assigned: Li Lei (cust-7)"
            )
            asked = await api.say(cid, visitor, "Where is my refund?")
            item = page.locator(f'button[data-id="{cid}"]')
            await shown(item).to_contain_text("1 unread")
            await shown(item).to_contain_text("waiting")
            await item.click()
            transcript = page.locator("#transcript")
            await shown(transcript).to_contain_text("Where is my refund?")
            await shown(item).not_to_contain_text("unread")

            async def read_by_agent() -> bool:
                return (await api.conversation(cid, visitor))["agent_read_seq"] >= asked

            await eventually(read_by_agent, what="the visitor sees the agent read it")

            panel = page.locator("#panel-body")
            for fact in ("cust-7", "SO-1001", "gold", "Li Lei", "refund", "Refund request"):
                await shown(panel).to_contain_text(fact)
            await shown(panel.locator(".sop li")).to_have_count(2)
            await shown(panel.locator("#history li")).to_have_count(1)
            await panel.locator("#history button").click()
            await shown(page.locator("#read-only")).to_be_visible()
            await shown(transcript).to_contain_text("My first question")
            await shown(page.locator("#composer")).to_be_hidden()
            await page.get_by_role("button", name="Back to the conversation").click()
            await shown(transcript).to_contain_text("Where is my refund?")

            # Typing, both ways.
            await api.typing(cid, visitor)
            await shown(page.locator("#typing")).to_have_text("The visitor is typing…")
            composer = page.locator("#composer-text")
            async with api.conversation_stream(cid, visitor, after_seq=asked) as stream:
                typing = asyncio.create_task(stream.until("conversation.typing", timeout=30))
                for _ in range(20):
                    await composer.press_sequentially("x")
                    if typing.done():
                        break
                    await asyncio.sleep(1)
                seen = (await typing)[-1]
            assert seen["by_role"] == "agent"
            await composer.fill("")

            # A canned reply by its shortcut, filled for the conversation, sent with Enter.
            await composer.press_sequentially("/ref")
            await shown(page.locator("#canned")).to_contain_text("/refund")
            await composer.press("Enter")
            filled = "The refund of order SO-1001 is on its way. 退款已提交。"
            await shown(composer).to_have_value(filled)
            await composer.press("Enter")
            await shown(transcript).to_contain_text(filled)
            # Shift+Enter is a new line; Enter sends.
            await composer.press_sequentially("Line one")
            await composer.press("Shift+Enter")
            await composer.press_sequentially("Line two")
            await composer.press("Enter")
            await shown(composer).to_have_value("")

            async def visitor_reads_both() -> list[dict[str, Any]] | None:
                events = await api.events(cid, visitor)
                texts = _texts(events)
                return events if filled in texts and "Line one\nLine two" in texts else None

            events = await eventually(visitor_reads_both, what="the visitor reads the replies")
            # The visitor has read them: the workbench shows the receipt.
            expect(await api.mark_read(cid, visitor, events[-1]["seq"]), 200)
            await shown(transcript.locator(".message.agent .receipt").last).to_contain_text("Read")

            # An internal note: shown apart, and never the visitor's.
            await page.get_by_role("checkbox", name="Internal note").check()
            await composer.fill(INTERNAL_NOTE)
            await composer.press("Enter")
            await shown(transcript.locator(".note")).to_contain_text(INTERNAL_NOTE)
            assert INTERNAL_NOTE in json.dumps(await api.events(cid, alice.token))
            await page.get_by_role("checkbox", name="Internal note").uncheck()
            await _looked_at(page, "workbench-chat")

            await page.get_by_role("button", name="Close conversation").click()
            await shown(page.locator("#chat-title")).to_contain_text("State: Closed")
            closed = await api.wait_for(cid, visitor, state="closed")
            assert closed["close_reason"] == "agent_closed"
            assert INTERNAL_NOTE not in json.dumps(await api.events(cid, visitor))

            await page.get_by_role("button", name="Sign out").click()
            await shown(page.get_by_role("heading", name="Sign in")).to_be_visible()
            assert await page.evaluate("sessionStorage.length") == 0


@on_sqlite_alone("db")
async def test_a_transfer_between_two_workbenches_carries_a_note_the_visitor_never_reads(
    deployment: Deployment, browser: Browser
) -> None:
    base = deployment.urls[0]
    async with deployment.client() as api:
        alice = await api.create_agent("alice")
        bob = await api.create_agent("bob", online=False)
        cid, visitor = await api.start_conversation(attributes={"name": "Han Meimei"})
        await api.wait_for(cid, state="active", agent_id="alice")
        await api.say(cid, visitor, "I want a refund")

        async with new_context(browser) as alices, new_context(browser, locale="zh-CN") as bobs:
            alice_page, bob_page = await alices.new_page(), await bobs.new_page()
            await _sign_in(alice_page, base, "/workbench/", alice.token)
            await bob_page.goto(f"{base}/workbench/")
            await bob_page.get_by_label("令牌").fill(bob.token)
            await bob_page.get_by_role("button", name="登录").click()
            await bob_page.get_by_label("状态").select_option("online")
            await _online(api, "bob")

            await alice_page.locator(f'button[data-id="{cid}"]').click()
            await shown(alice_page.locator("#transcript")).to_contain_text("I want a refund")
            await alice_page.get_by_role("button", name="Transfer").first.click()
            await alice_page.get_by_label("To an agent (id)").fill("bob")
            await alice_page.get_by_label("Note for the next agent (staff only)").fill(
                TRANSFER_NOTE
            )
            await _looked_at(alice_page, "workbench-transfer")
            await (
                alice_page.locator("#transfer-form").get_by_role("button", name="Transfer").click()
            )
            await shown(alice_page.locator(f'button[data-id="{cid}"]')).to_have_count(0)

            # Bob's workbench gets it live, with the note, in Chinese.
            await shown(bob_page.locator("#banners")).to_contain_text("会话已转给您")
            await bob_page.locator(f'button[data-id="{cid}"]').click()
            await shown(bob_page.locator("#transcript")).to_contain_text("I want a refund")
            await shown(bob_page.locator("#transcript .note")).to_contain_text(TRANSFER_NOTE)
            await _looked_at(bob_page, "workbench-transferred-zh")

        view = await api.wait_for(cid, visitor, agent_name="Bob")
        assert view["state"] == "active"
        assert TRANSFER_NOTE not in json.dumps(await api.events(cid, visitor))
        assert TRANSFER_NOTE in json.dumps(await api.events(cid, bob.token))


@on_sqlite_alone("db")
async def test_a_supervisor_watches_the_wallboard_and_assigns_a_waiting_conversation(
    deployment: Deployment, browser: Browser
) -> None:
    """A conversation handed back to the group by its agent skips them while another agent of
    the group is online (full, here): it waits, and the supervisor gives it back to her."""
    base = deployment.urls[0]
    async with deployment.client() as api:
        carol = AgentLogin(*await api.create_agent("carol", max_concurrent=1))
        busy, _ = await api.start_conversation()
        await api.wait_for(busy, state="active", agent_id=carol.id)
        alice = AgentLogin(*await api.create_agent("alice", max_concurrent=2))
        sue = AgentLogin(*await api.create_agent("sue", role="supervisor", online=False))
        cid, visitor = await api.start_conversation(attributes={"name": "Li Lei"})
        await api.wait_for(cid, state="active", agent_id=alice.id)
        expect(await api.transfer(cid, alice.token, to_skill_group="general"), 200)
        await api.wait_for(cid, state="queued", queue_position=1)

        async with new_context(browser) as context:
            page = await context.new_page()
            await _sign_in(page, base, "/wallboard/", sue.token)
            general = page.locator('tr[data-group="general"]')
            await shown(general).to_contain_text("1 (longest")
            figures = next(
                g
                for g in (await api.monitor(sue.token))["skill_groups"]
                if g["skill_group"] == "general"
            )
            await shown(general).to_contain_text(f"{figures['load']} / {figures['capacity']}")
            await shown(general).to_contain_text(
                f"{figures['agents_online']} / {figures['agents_away']} / "
                f"{figures['agents_at_capacity']}"
            )
            waiting = general.get_by_role("link", name="waiting")
            filter_ = 'ConversationState = "queued" AND SkillGroup = "general"'
            await shown(waiting).to_have_attribute(
                "href",
                f"{TEMPORAL_UI}/namespaces/default/workflows?query={quote(filter_, safe='')}",
            )
            await _looked_at(page, "wallboard")

            await page.get_by_role("link", name="Workbench").click()
            await shown(page.locator("#who-name")).to_have_text("Sue (sue)")
            item = page.locator(f'button[data-id="{cid}"]')
            await shown(item).to_contain_text("#1")
            await shown(page.locator(f'button[data-id="{busy}"]')).to_contain_text("Carol")
            await item.click()
            await shown(page.locator("#panel-body")).to_contain_text("Li Lei")
            await shown(page.locator("#queue-figures")).to_contain_text("1 waiting")
            await _looked_at(page, "workbench-supervisor")
            await page.get_by_label("Assign to agent (id)").fill("alice")
            await page.get_by_role("button", name="Assign").click()
            await shown(page.locator("#chat-title")).to_contain_text("State: Active")
            await api.wait_for(cid, visitor, state="active", agent_name="Alice")
            # A supervisor writes notes (never messages): the visitor never reads them.
            await page.locator("#composer-text").fill(INTERNAL_NOTE)
            await page.locator("#composer-text").press("Enter")
            await shown(page.locator("#transcript .note")).to_contain_text(INTERNAL_NOTE)
        assert INTERNAL_NOTE not in json.dumps(await api.events(cid, visitor))
        assert INTERNAL_NOTE in json.dumps(await api.events(cid, alice.token))
