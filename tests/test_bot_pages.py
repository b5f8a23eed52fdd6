"""The bot first line (机器人 → 转人工) in the pages, in a real browser on the real API, worker and
dev server: the visitor asks the FAQ bot in the widget on a phone, taps its hand-off button and
waits in the queue; the agent accepts in the workbench, reads the bot's part labelled with why it
handed off and which FAQ entries it had answered with (staff only), and replies.

One system, one conversation, both pages: each state passes the accessibility check and is
screenshotted (tests/support/pages.py `looked_at`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser
from playwright.async_api import expect as shown

from store.db import Database
from tests.support.api import ApiClient, eventually, expect
from tests.support.backends import on_sqlite_alone
from tests.support.bots import HANDOFF_BUTTON, faq_routing
from tests.support.pages import (
    agent_sends,
    looked_at,
    new_context,
    scrolls_sideways,
    shows,
    sign_in,
    start_demo_chat,
)
from tests.support.processes import Deployment

pytestmark = pytest.mark.e2e

# No idle countdown or rating window ends the chat while the browsers work on it.
CALM = {"idle_warning_after": "1h", "idle_close_after": "1h", "rating_window": "1h"}
QUESTION = "Where is my parcel?"
# The FAQ entry (config/bot.toml) that answers it: a staff word the visitor never reads.
TRACK_ORDER = "track_order"


async def conversation_of(api: ApiClient, customer_id: str) -> str:
    """The id of the customer's newest conversation (the demo's backend started it)."""

    async def newest() -> str | None:
        listed = expect(await api.customer_conversations(customer_id), 200)
        return listed[0]["id"] if listed else None

    return await eventually(newest, what=f"a conversation of {customer_id}")


@on_sqlite_alone("db")
async def test_the_visitor_asks_the_bot_then_taps_through_to_an_agent_who_reads_why(
    db: Database, deploy: Callable[..., Deployment], browser: Browser, tmp_path: Path
) -> None:
    routing = faq_routing(tmp_path / "deployment-1")  # where `deploy` puts its first deployment
    deployment = deploy(db.url, timeouts=CALM, routing=routing)
    site = deployment.urls[0]
    async with (
        deployment.client() as api,
        new_context(browser, width=360, height=740) as phone,
        new_context(browser) as desk,
    ):
        alice = await api.create_agent("alice", online=False)  # nobody online: it will queue
        bench = await desk.new_page()
        await sign_in(bench, site, "/workbench/", alice.token)
        shop = await phone.new_page()
        widget = await start_demo_chat(shop, site, "customer-bot")
        cid = await conversation_of(api, "customer-bot")
        await shows(widget, "#status", "Our assistant answers first")

        # The bot answers, labelled as the bot beside the team's name, with its buttons.
        await widget.fill("#message", QUESTION)
        await widget.press("#message", "Enter")
        answer = widget.locator("#transcript .message.bot")
        await shown(answer).to_contain_text("track your order", timeout=30_000)
        await shown(answer.locator(".sender")).to_contain_text("Customer service")
        await shown(answer.locator(".bot-tag")).to_have_text("Bot")
        await shown(answer.locator(".bot-tag")).to_be_visible()
        replies = widget.get_by_role("group", name="Suggested replies")
        await shown(replies.get_by_role("button")).to_have_text(
            ["When will it arrive?", HANDOFF_BUTTON]
        )
        await looked_at(widget, "widget-bot", widths=(360,))
        assert not await scrolls_sideways(widget)

        # The visitor presses the hand-off button from the keyboard: it is sent as their
        # message (with a client_message_id), the buttons go, the hand-off line shows, and
        # the queue.
        handoff = replies.get_by_role("button", name=HANDOFF_BUTTON)
        await handoff.focus()
        await handoff.press("Enter")
        await shown(widget.locator("#transcript .message.own").last).to_contain_text(HANDOFF_BUTTON)
        handed_off_line = widget.locator("#transcript .system.handoff")
        await shown(handed_off_line).to_have_text(
            "Connecting you to a person. Thank you for waiting.", timeout=30_000
        )
        await shows(widget, "#status", "You are number 1 in the queue")
        await shown(widget.locator(".quick-reply")).to_have_count(0)
        await shown(widget.locator("#message")).to_be_focused()
        tapped = [
            event["data"]
            for event in await api.events(cid)
            if event["type"] == "message.created" and event["data"]["sender_role"] == "visitor"
        ]
        assert [said["content"] for said in tapped] == [QUESTION, HANDOFF_BUTTON]
        assert all(said["client_message_id"].startswith("w-") for said in tapped)
        handed = await api.wait_for_event(cid, None, "conversation.handed_off")
        assert (handed["data"]["reason"], handed["data"]["matched_entries"]) == (
            "quick_reply",
            [TRACK_ORDER],
        )
        await looked_at(widget, "widget-bot-handed-off", widths=(360,))
        assert TRACK_ORDER not in await widget.content()

        # Alice comes online: the conversation is hers, with the bot's part and why it came.
        await bench.get_by_label("Status").select_option("online")
        await shows(bench, "#banners", "New conversation assigned: customer-bot")
        await bench.locator(f'button[data-id="{cid}"]').click()
        transcript = bench.locator("#transcript")
        await shown(transcript.locator(".message.visitor").first).to_contain_text(QUESTION)
        said_by_bot = transcript.locator(".message.bot")
        await shown(said_by_bot).to_have_count(1)
        await shown(said_by_bot.locator(".meta")).to_contain_text("Bot ·")
        await shown(said_by_bot).to_contain_text("track your order")
        await shown(said_by_bot).to_contain_text(
            f"Buttons offered: When will it arrive? · {HANDOFF_BUTTON}"
        )
        line = transcript.locator(".system.handoff")
        await shown(line).to_contain_text(
            "Handed off by the bot: the visitor pressed the button for a person (to general)"
        )
        await shown(line).to_contain_text(f"FAQ entries matched: {TRACK_ORDER}")
        await agent_sends(bench, "Hello, I am Alice: let me look at your parcel.")
        await looked_at(bench, "workbench-bot-handoff", widths=(1280,))

        # The visitor reads Alice (not the bot), and never the staff's words.
        await shows(widget, "#status", "You are chatting with Alice")
        alice_said = widget.locator("#transcript .message.theirs:not(.bot)")
        await shown(alice_said).to_contain_text("let me look at your parcel")
        await shown(widget.locator(".quick-reply")).to_have_count(0)
        page_text = await widget.content()
        assert TRACK_ORDER not in page_text and "Handed off by the bot" not in page_text
