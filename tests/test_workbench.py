"""The agents' workbench and the supervisors' wallboard in a real browser (Debian's Chromium
through Playwright), against real API and worker processes on the dev server: the visitor's
side is driven over the API, and what the visitor reads is checked there.

Each page is checked for serious and critical accessibility violations in a real state, and
screenshotted at 1280 and 360 px wide (under the system's temporary directory, to look at)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import quote

import pytest
from playwright.async_api import Browser
from playwright.async_api import expect as shown

from store.db import Database
from tests.support.api import AgentLogin, ApiClient, eventually, expect
from tests.support.backends import on_sqlite_alone
from tests.support.media import pdf, photo, video
from tests.support.pages import (
    SHOWN_WITHIN_MS,
    agent_sends,
    hand_over,
    image_shown,
    looked_at,
    new_context,
    shows,
    sign_in,
    start_demo_chat,
)
from tests.support.policy import STAFF_ASSIST, add_to_policy
from tests.support.processes import Deployment

pytestmark = pytest.mark.e2e

# No idle countdown closes a conversation while the browser works on it.
QUIET_VISITOR = {"idle_warning_after": "10m", "idle_close_after": "10m"}
TEMPORAL_UI = "http://temporal-ui.example:8233"
INTERNAL_NOTE = "Customer is upset: offer the voucher"
TRANSFER_NOTE = "Needs a refund approval"


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


async def _visitor_token(api: ApiClient, conversation_id: str) -> str:
    """A visitor token of the conversation, as the app's backend mints one (to read what the
    visitor may read over the API)."""
    return str(expect(await api.mint_visitor_token(conversation_id), 200)["visitor_token"])


async def _online(api: ApiClient, agent_id: str) -> None:
    async def is_online() -> bool:
        return (await api.agent(agent_id))["status"] == "online"

    await eventually(is_online, what=f"{agent_id} online")


@on_sqlite_alone("db")
async def test_an_agent_serves_a_customer_from_the_workbench(
    deployment: Deployment, browser: Browser
) -> None:
    base = deployment.urls[0]
    async with (
        deployment.client() as api,
        new_context(browser) as desk,
        new_context(browser, width=390, height=800) as phone,
    ):
        alice = await api.create_agent("alice")
        # The customer came once before: served by Alice, closed.
        earlier, earlier_visitor = await api.start_conversation("cust-7", entry="refund")
        await api.wait_for(earlier, state="active", agent_id="alice")
        await api.say(earlier, earlier_visitor, "My first question")
        expect(await api.close(earlier, alice.token), 200)
        await api.set_status("alice", alice.token, "offline")

        page = await desk.new_page()
        served = await page.goto(f"{base}/workbench/")
        assert served is not None
        headers = await served.all_headers()
        assert "script-src 'self';" in headers["content-security-policy"]
        assert "connect-src 'self';" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        await shown(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await looked_at(page, "workbench-sign-in", widths=(1280, 360))
        await sign_in(page, base, "/workbench/", alice.token)
        await shown(page.locator("#who-name")).to_have_text("Alice (alice)")
        await page.get_by_label("Status").select_option("online")
        await _online(api, "alice")

        # The customer opens the chat on the shop's site (about an order); the app tells
        # staff more of them as it goes.
        shop = await phone.new_page()
        widget = await start_demo_chat(shop, base, "cust-7", entry="refund", order_id="SO-1001")
        await shows(page, "#banners", "New conversation assigned: cust-7")
        cid = (await api.agent_conversations("alice", alice.token))[0]["id"]
        expect(await api.update_attributes(cid, {"name": "Li Lei", "membership": "gold"}), 200)
        item = page.locator(f'button[data-id="{cid}"]')
        await shown(item).to_contain_text("Li Lei (cust-7)")
        await widget.fill("#message", "Where is my refund?")
        await widget.press("#message", "Enter")
        await shown(item).to_contain_text("1 unread")
        await shown(item).to_contain_text("waiting")
        await item.click()
        transcript = page.locator("#transcript")
        await shown(transcript).to_contain_text("Where is my refund?")
        await shown(item).not_to_contain_text("unread")
        await shows(widget, "#transcript .message.own", "✓✓")  # the agent read it

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
        await widget.fill("#message", "Any news")
        await shows(page, "#typing", "The visitor is typing…")
        await widget.fill("#message", "")
        composer = page.locator("#composer-text")
        await composer.press_sequentially("x")
        await shows(widget, "#typing", "Alice is typing…")
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

        # The visitor reads both (the widget is open): the workbench shows the receipt.
        await shows(widget, "#transcript", "Line one\nLine two")
        await shows(widget, "#transcript", filled)
        await shown(transcript.locator(".message.agent .receipt").last).to_contain_text("Read")

        # Alice pastes a screenshot into the composer, drops a PDF onto the chat and picks a
        # video: the visitor opens the picture over the chat, downloads the PDF, and the video
        # plays in the page.
        screenshot = {
            "name": "image.png",
            "content_type": "image/png",
            "data": photo("PNG", (40, 30)),
        }
        await hand_over(page, "#composer-text", "paste", **screenshot)
        await image_shown(page, "#transcript .message.agent .attachment-thumbnail", 40)
        invoice = {"name": "invoice.pdf", "content_type": "application/pdf", "data": pdf()}
        await hand_over(page, "#chat", "drop", **invoice)
        await shown(transcript.locator(".attachment-file")).to_contain_text("PDF document")
        clip = {"name": "unboxing.webm", "mimeType": "video/webm", "buffer": video("webm")}
        await page.set_input_files("#attach-input", files=[clip])
        await shown(widget.locator("#transcript video")).to_have_js_property(
            "videoWidth", 64, timeout=SHOWN_WITHIN_MS
        )
        await image_shown(widget, "#transcript .message.theirs .attachment-thumbnail", 40)
        await widget.get_by_role("button", name="Open the photo").click()
        await image_shown(widget, "#attachment-viewer img", 40)
        await looked_at(widget, "widget-photo-open", widths=(390,))
        await widget.get_by_role("button", name="Close", exact=True).click()
        download = widget.locator("#transcript .attachment-file")
        with_ticket = re.compile(r"^/v1/conversations/.+\?ticket=")
        await shown(download).to_have_attribute("href", with_ticket)
        fetched = await phone.request.get(base + str(await download.get_attribute("href")))
        assert fetched.headers["content-disposition"].startswith("attachment;")
        assert await fetched.body() == invoice["data"]

        # An internal note: shown apart, and never the visitor's.
        await page.get_by_role("checkbox", name="Internal note").check()
        await composer.fill(INTERNAL_NOTE)
        await composer.press("Enter")
        await shown(transcript.locator(".note")).to_contain_text(INTERNAL_NOTE)
        assert INTERNAL_NOTE in json.dumps(await api.events(cid, alice.token))
        await page.get_by_role("checkbox", name="Internal note").uncheck()
        await looked_at(page, "workbench-chat", widths=(1280, 360))

        await page.get_by_role("button", name="Close conversation").click()
        await shown(page.locator("#chat-title")).to_contain_text("State: Closed")
        await shows(widget, "#status", "This chat has ended.")
        assert INTERNAL_NOTE not in await widget.inner_text("body")
        closed = await api.conversation(cid)
        assert closed["close_reason"] == "agent_closed"

        await page.get_by_role("button", name="Sign out").click()
        await shown(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert await page.evaluate("sessionStorage.length") == 0


@on_sqlite_alone("db")
async def test_a_transfer_between_two_workbenches_carries_a_note_the_visitor_never_reads(
    deployment: Deployment, browser: Browser
) -> None:
    base = deployment.urls[0]
    async with (
        deployment.client() as api,
        new_context(browser) as alices,
        new_context(browser, locale="zh-CN") as bobs,
        new_context(browser) as visitors,
    ):
        alice = await api.create_agent("alice")
        bob = await api.create_agent("bob", online=False)
        alice_page, bob_page = await alices.new_page(), await bobs.new_page()
        await sign_in(alice_page, base, "/workbench/", alice.token)
        widget = await start_demo_chat(await visitors.new_page(), base, "cust-9")
        await shows(widget, "#status", "You are chatting with Alice")
        await widget.fill("#message", "I want a refund")
        await widget.press("#message", "Enter")
        cid = (await api.agent_conversations("alice", alice.token))[0]["id"]

        await sign_in(bob_page, base, "/workbench/", bob.token)
        await bob_page.get_by_label("状态").select_option("online")
        await _online(api, "bob")

        await alice_page.locator(f'button[data-id="{cid}"]').click()
        await shown(alice_page.locator("#transcript")).to_contain_text("I want a refund")
        await alice_page.get_by_role("button", name="Transfer").first.click()
        await alice_page.get_by_label("To an agent (id)").fill("bob")
        await alice_page.get_by_label("Note for the next agent (staff only)").fill(TRANSFER_NOTE)
        await looked_at(alice_page, "workbench-transfer")
        await alice_page.locator("#transfer-form").get_by_role("button", name="Transfer").click()
        await shown(alice_page.locator(f'button[data-id="{cid}"]')).to_have_count(0)

        # Bob's workbench gets it live, with the note, in Chinese.
        await shown(bob_page.locator("#banners")).to_contain_text("会话已转给您")
        await bob_page.locator(f'button[data-id="{cid}"]').click()
        await shown(bob_page.locator("#transcript")).to_contain_text("I want a refund")
        await shown(bob_page.locator("#transcript .note")).to_contain_text(TRANSFER_NOTE)
        await looked_at(bob_page, "workbench-transferred-zh")

        # The visitor is now chatting with Bob, and never reads the note.
        await shows(widget, "#status", "You are chatting with Bob")
        await agent_sends(bob_page, "Bob here: I approve refunds.")
        await shows(widget, "#transcript", "Bob here: I approve refunds.")
        assert TRANSFER_NOTE not in await widget.inner_text("body")
        assert TRANSFER_NOTE not in json.dumps(
            await api.events(cid, await _visitor_token(api, cid))
        )
        assert TRANSFER_NOTE in json.dumps(await api.events(cid, bob.token))


@on_sqlite_alone("db")
async def test_a_supervisor_watches_the_wallboard_and_assigns_a_waiting_conversation(
    deployment: Deployment, browser: Browser
) -> None:
    """A conversation handed back to the group by its agent skips them while another agent of
    the group is online (full, here): it waits, and the supervisor gives it back to her."""
    base = deployment.urls[0]
    async with (
        deployment.client() as api,
        new_context(browser) as supervisors,
        new_context(browser) as visitors,
    ):
        carol = AgentLogin(*await api.create_agent("carol", max_concurrent=1))
        busy, _ = await api.start_conversation()
        await api.wait_for(busy, state="active", agent_id=carol.id)
        alice = AgentLogin(*await api.create_agent("alice", max_concurrent=2))
        sue = AgentLogin(*await api.create_agent("sue", role="supervisor", online=False))
        widget = await start_demo_chat(await visitors.new_page(), base, "cust-11")
        await shows(widget, "#status", "You are chatting with Alice")
        cid = (await api.agent_conversations("alice", alice.token))[0]["id"]
        expect(await api.transfer(cid, alice.token, to_skill_group="general"), 200)
        await shows(widget, "#status", "You are number 1 in the queue")

        page = await supervisors.new_page()
        await sign_in(page, base, "/wallboard/", sue.token)
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
        await looked_at(page, "wallboard", widths=(1280, 360))

        await page.get_by_role("link", name="Workbench").click()
        await shown(page.locator("#who-name")).to_have_text("Sue (sue)")
        item = page.locator(f'button[data-id="{cid}"]')
        await shown(item).to_contain_text("#1")
        await shown(page.locator(f'button[data-id="{busy}"]')).to_contain_text("Carol")
        await item.click()
        await shown(page.locator("#panel-body")).to_contain_text("cust-11")
        await shown(page.locator("#queue-figures")).to_contain_text("1 waiting")
        await looked_at(page, "workbench-supervisor", widths=(1280, 360))
        await page.get_by_label("Assign to agent (id)").fill("alice")
        await page.get_by_role("button", name="Assign").click()
        await shown(page.locator("#chat-title")).to_contain_text("State: Active")
        await shows(widget, "#status", "You are chatting with Alice")
        # A supervisor writes notes (never messages): the visitor never reads them.
        await page.locator("#composer-text").fill(INTERNAL_NOTE)
        await page.locator("#composer-text").press("Enter")
        await shown(page.locator("#transcript .note")).to_contain_text(INTERNAL_NOTE)
        await shown(page.locator("#attach-button")).to_be_hidden()  # a note carries no file
        assert INTERNAL_NOTE not in await widget.inner_text("body")
        assert INTERNAL_NOTE in json.dumps(await api.events(cid, alice.token))
