"""The visitor's widget in a real browser: started from the demo shop's page (the app's site and
backend, as an integrator's would be) or a shop on its own origin, embedded with its one script
tag, on the real API, worker and dev server. The agent's side is driven over the API.

Each scenario covers a lot: a whole conversation to a rating on a phone's screen; a network drop
and a reload in the middle of a chat, then the idle warning and the auto-close; out of hours to
a left message, in Chinese. Every state the visitor sees passes the accessibility check."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.async_api import Browser, Frame, Page

from api.main import create_app
from store.db import Database
from store.models import Conversation
from tests.support.api import ApiClient, eventually, expect
from tests.support.backends import on_sqlite_alone
from tests.support.media import phone_exif, photo
from tests.support.pages import (
    WIDGET_FRAME,
    accessibility_problems,
    agent_sends,
    expect_on_page,
    image_shown,
    looked_at,
    new_context,
    scrolls_sideways,
    serve_page,
    shows,
    sign_in,
    start_demo_chat,
    widget_frame,
)
from tests.support.policy import DEFAULT_GROUPS, production_settings, write_policy
from tests.support.processes import CALLBACK_GROUP, CALLBACK_ROUTING, Deployment, free_port

pytestmark = pytest.mark.e2e

# Timers that stay out of the way until a test shortens them.
CALM = {"idle_warning_after": "1h", "idle_close_after": "1h", "rating_window": "1h"}


async def conversation_of(api: ApiClient, customer_id: str) -> str:
    """The id of the customer's newest conversation (the demo's backend started it)."""

    async def newest() -> str | None:
        listed = expect(await api.customer_conversations(customer_id), 200)
        return listed[0]["id"] if listed else None

    return await eventually(newest, what=f"a conversation of {customer_id}")


async def no_accessibility_problems(where: Any, state: str) -> None:
    problems = await accessibility_problems(where)
    assert not problems, f"{state}: {problems}"


async def transcript(frame: Frame | Page) -> list[str]:
    """The texts of the widget's messages, in order (own and the agent's)."""
    return await frame.locator("#transcript .message .text").all_inner_texts()


@on_sqlite_alone("empty_db")
async def test_a_whole_conversation_on_a_phone_to_a_five_star_rating(
    empty_db: Database, deploy: Callable[..., Deployment], browser: Browser
) -> None:
    deployment = deploy(empty_db.url, timeouts=CALM)
    site = deployment.urls[0]
    async with (
        deployment.client() as api,
        new_context(browser, width=360, height=740) as phone,
        new_context(browser) as desk,
    ):
        alice = await api.create_agent("alice", online=False)  # nobody online: it queues
        bench = await desk.new_page()
        await sign_in(bench, site, "/workbench/", alice.token)
        page = await phone.new_page()
        await page.goto(f"{site}/demo/")
        await no_accessibility_problems(page, "the demo page")
        widget = await start_demo_chat(page, site, "customer-phone")
        cid = await conversation_of(api, "customer-phone")

        await shows(widget, "#status", "You are number 1 in the queue")
        await looked_at(widget, "widget-queued", widths=(360,))
        assert not await scrolls_sideways(widget) and not await scrolls_sideways(page)

        # Alice comes online in her workbench: the conversation is hers, on both screens.
        await bench.get_by_label("Status").select_option("online")
        await shows(bench, "#banners", "New conversation assigned: customer-phone")
        await shows(widget, "#status", "You are chatting with Alice")
        await shows(widget, "#transcript", "Alice joined the chat.")
        await bench.locator(f'button[data-id="{cid}"]').click()

        # The visitor types (Alice sees it), then sends; Alice has the conversation open, so
        # it is read at once and the visitor's message gets its ticks.
        await widget.fill("#message", "Where is my parcel? 📦")
        await shows(bench, "#typing", "The visitor is typing…")
        await widget.press("#message", "Enter")
        await shows(bench, "#transcript", "Where is my parcel? 📦")
        await shows(widget, "#transcript .message.own", "✓✓")
        tick = widget.locator("#transcript .message.own .tick")
        assert await tick.get_attribute("aria-label") == "Read"
        asked = await api.wait_for_event(cid, alice.token, "message.created")
        assert asked["data"]["client_message_id"].startswith("w-")

        # Alice types (the visitor sees it), then answers with text and an emoji.
        composer = bench.locator("#composer-text")
        await composer.press_sequentially("It ships tomorrow.")
        await shows(widget, "#typing", "Alice is typing…")
        await composer.press("Enter")
        await agent_sends(bench, "👍")
        await shows(widget, "#transcript", "👍")
        assert await transcript(widget) == ["Where is my parcel? 📦", "It ships tomorrow.", "👍"]
        await shows(widget, "#typing", "")  # a message ends the typing
        shown_last = [
            event["seq"]
            for event in await api.events(cid, alice.token)
            if event["type"] == "message.created"
        ][-1]

        # The widget marks what the visitor saw: Alice's workbench shows the receipt.
        async def read_all() -> bool:
            return (await api.conversation(cid, alice.token))["visitor_read_seq"] >= shown_last

        await eventually(read_all, what="the visitor's read mark")
        await shows(bench, f'#transcript [data-seq="{shown_last}"] .receipt', "Read")

        # The visitor sends a photo from the phone's gallery (its EXIF says where it was taken)
        # with the picker: both sides show its thumbnail, and Alice opens the whole photo,
        # which says nothing of where it was taken any more.
        taken = photo("JPEG", (800, 600), exif=phone_exif())
        photo_file = {"name": "IMG_0001.jpg", "mimeType": "image/jpeg", "buffer": taken}
        await widget.set_input_files("#attach-input", files=[photo_file])
        await image_shown(widget, "#transcript .message.own .attachment-thumbnail", 320)
        await expect_delivered(widget, 2)
        await image_shown(bench, "#transcript .message.visitor .attachment-thumbnail", 320)
        await bench.get_by_role("button", name="Open the photo").click()
        whole = await image_shown(bench, "#attachment-viewer img", 800)
        assert whole.startswith("/v1/conversations/") and "?ticket=" in whole
        fetched = await desk.request.get(site + whole)
        opened = Image.open(io.BytesIO(await fetched.body()))
        assert (opened.format, opened.size, dict(opened.getexif())) == ("JPEG", (800, 600), {})
        await bench.keyboard.press("Escape")
        await expect_on_page(bench.locator("#attachment-viewer")).to_be_hidden()
        # A web page named like a photo is refused: the visitor reads why; nothing is sent.
        web_page = b"<!doctype html><html><script>alert(1)</script></html>"
        page_file = {"name": "offer.jpg", "mimeType": "image/jpeg", "buffer": web_page}
        await widget.set_input_files("#attach-input", files=[page_file])
        await shows(widget, "#attach-error", "offer.jpg was not sent: ")
        assert await widget.locator("#transcript .message.own").count() == 2
        await looked_at(widget, "widget-chatting", widths=(360,))
        assert not await scrolls_sideways(widget)

        # Alice closes: the closing text, then the rating, which her workbench shows.
        await bench.get_by_role("button", name="Close conversation").click()
        await shows(bench, "#chat-title", "State: Closed")
        await shows(widget, "#transcript", "Solved, thank you.")
        await shows(widget, "#status", "This chat has ended.")
        await shows(widget, "#panel", "How did we do?")
        await looked_at(widget, "widget-rating", widths=(360,))
        assert not await scrolls_sideways(widget)
        await widget.click("#panel .star:nth-of-type(5)")
        await widget.check("#panel input[name=resolved][value=yes]")
        await widget.fill("#rating-comment", "Quick and kind")
        await widget.click("#panel button[type=submit]")
        await shows(widget, "#panel", "Thank you for your rating!")
        await shows(bench, "#transcript .rating", "The visitor rated ★★★★★ (5 of 5): resolved")

        # The same chat as a full page (a phone's way): it asks the page that opened it for
        # the session, then shows the conversation from its events.
        await page.click("#switchboard-widget button")  # the embed's close button
        async with page.expect_popup() as opening:
            await page.click("#full-page")
        full_page = await opening.value
        await shows(full_page, "#panel", "Thank you for your rating!")
        await shows(full_page, "#transcript", "Solved, thank you.")
        assert await transcript(full_page) == await transcript(widget)
        assert not await scrolls_sideways(full_page)
        await no_accessibility_problems(full_page, "the full page, rated")

    rating = (await _conversation(deployment, cid))["rating"]
    assert (rating["status"], rating["score"], rating["resolved"]) == ("rated", 5, True)
    with empty_db.read() as session:
        stored = session.get(Conversation, cid)
        assert stored is not None and stored.rating_comment == "Quick and kind"


async def _conversation(deployment: Deployment, cid: str) -> dict[str, Any]:
    async with deployment.client() as api:
        return await api.conversation(cid)


@on_sqlite_alone("empty_db")
async def test_a_network_drop_and_a_reload_lose_and_double_nothing_then_the_chat_idles_out(
    empty_db: Database, deploy: Callable[..., Deployment], browser: Browser
) -> None:
    deployment = deploy(empty_db.url, timeouts=CALM)
    site = deployment.urls[0]
    async with (
        deployment.client() as api,
        new_context(browser) as visitor,
        new_context(browser) as desk,
    ):
        alice = await api.create_agent("alice")
        bench = await desk.new_page()
        await sign_in(bench, site, "/workbench/", alice.token)
        page = await visitor.new_page()
        widget = await start_demo_chat(page, site, "customer-train")
        cid = await conversation_of(api, "customer-train")
        await shows(widget, "#status", "You are chatting with Alice")
        await bench.locator(f'button[data-id="{cid}"]').click()
        await widget.fill("#message", "Hello")
        await widget.press("#message", "Enter")
        await expect_delivered(widget, 1)
        await agent_sends(bench, "Hi, what can I do for you?")
        await shows(widget, "#transcript", "Hi, what can I do for you?")

        # The train enters a tunnel: what the visitor sends waits, what the agent sends comes.
        await visitor.set_offline(True)
        await shows(widget, "#notice", "You are offline")
        for text in ("My order is late", "It is SO-1001"):
            await widget.fill("#message", text)
            await widget.press("#message", "Enter")
        await agent_sends(bench, "Let me look.")
        await shows(widget, "#transcript .message.own:last-of-type", "It is SO-1001")
        assert await widget.locator(".message.own[data-seq]").count() == 1  # only "Hello"
        await visitor.set_offline(False)
        await shows(widget, "#transcript", "Let me look.")
        await expect_delivered(widget, 3)
        await shows(bench, "#transcript", "It is SO-1001")

        # A reload: the transcript once, and the stream goes on from where it was.
        await page.reload()
        widget = await widget_frame(page)
        await shows(widget, "#transcript", "Let me look.")
        await agent_sends(bench, "Found it: it ships today.")
        await shows(widget, "#transcript", "Found it: it ships today.")
        await expect_delivered(widget, 3)
        # A message the API never got (its requests fail) waits in the tab across a reload,
        # and is sent once they go through.
        await visitor.route("**/v1/conversations/*/messages", lambda route: route.abort())
        await widget.fill("#message", "Kept across a reload")
        await widget.press("#message", "Enter")
        waiting = widget.locator(".message.own", has_text="Kept across a reload")
        await expect_on_page(waiting).to_have_attribute("data-delivery", "retrying")
        await page.reload()
        widget = await widget_frame(page)
        await shows(widget, "#transcript", "Kept across a reload")
        await visitor.unroute("**/v1/conversations/*/messages")
        await expect_delivered(widget, 4)
        await shows(bench, "#transcript", "Kept across a reload")

        # Both sides hold each message once, in the same order (the log's: the agent's
        # "Let me look." was stored while the visitor's two waited).
        stored = [
            event["data"]["content"]
            for event in await api.events(cid, alice.token)
            if event["type"] == "message.created"
        ]
        assert stored == [
            "Hello",
            "Hi, what can I do for you?",
            "Let me look.",
            "My order is late",
            "It is SO-1001",
            "Found it: it ships today.",
            "Kept across a reload",
        ]
        assert await transcript(widget) == stored
        assert await bench.locator("#transcript .message .text").all_inner_texts() == stored

        # The visitor closes the chat's panel: the agent's next message waits on its button,
        # unread, until the panel opens again.
        await page.click("#switchboard-widget button")  # the embed's close button
        await agent_sends(bench, "Are you still with me?")
        unseen = [
            event["seq"]
            for event in await api.events(cid, alice.token)
            if event["type"] == "message.created"
        ][-1]
        await shows(page, "body > button", "Chat with us (1)")
        assert (await api.conversation(cid, alice.token))["visitor_read_seq"] < unseen
        await page.click("body > button")
        await shows(widget, "#transcript", "Are you still with me?")
        await shows(bench, f'#transcript [data-seq="{unseen}"] .receipt', "Read")
        assert await page.inner_text("body > button") == "Chat with us"

        # The visitor goes quiet: the idle warning, then the auto-close, on both screens
        # (shorter timers now).
        write_policy(
            deployment.settings.policy,
            idle_warning_after="2s",
            idle_close_after="2s",
            rating_window="1h",
            groups=DEFAULT_GROUPS + CALLBACK_GROUP,
            routing=CALLBACK_ROUTING,
        )
        expect(await api.reload_policy(), 200)
        # (The countdown running since Alice's message keeps its durations: a further message
        # of hers does not restart it. The visitor's answer ends it; her next starts one anew.)
        await widget.fill("#message", "Yes, still here")
        await widget.press("#message", "Enter")
        await shows(bench, "#transcript", "Yes, still here")
        await agent_sends(bench, "Anything else?")
        await shows(widget, "#transcript .system.warning", "Still there? This chat closes in")
        await shows(bench, "#transcript .system", "Still there? This chat closes in")
        await shows(widget, "#transcript .system.closing", "Closed for inactivity.")
        await shows(widget, "#status", "This chat has ended.")
        await shows(widget, "#panel", "How did we do?")
        await shows(bench, "#transcript", "Closed for inactivity.")
        await shows(bench, "#chat-title", "State: Closed")
        await looked_at(widget, "widget-idle-closed", widths=(1280,))


async def expect_delivered(widget: Frame, count: int) -> None:
    """The visitor's `count` messages are all stored (each with its seq): none pending."""
    delivered = widget.locator(".message.own[data-seq]")
    await eventually(
        lambda: _counted(delivered, count), what=f"{count} of the visitor's messages delivered"
    )
    assert await widget.locator(".message.own").count() == count


async def _counted(locator: Any, count: int) -> bool:
    return await locator.count() == count


def _closed_today() -> str:
    """`night`, open every day all day but today (UTC): a special day without hours."""
    today = datetime.now(UTC).date().isoformat()
    days = ", ".join(f'{day} = ["00:00-24:00"]' for day in ("mon", "tue", "wed", "thu", "fri"))
    return (
        '[[skill_groups]]\nname = "night"\n[skill_groups.hours]\ntimezone = "UTC"\n'
        f'weekly = {{ {days}, sat = ["00:00-24:00"], sun = ["00:00-24:00"] }}\n'
        f'special = {{ "{today}" = [] }}\n'
    )


@on_sqlite_alone("empty_db")
async def test_out_of_hours_the_visitor_leaves_a_message_for_the_team_in_chinese(
    empty_db: Database, deploy: Callable[..., Deployment], browser: Browser
) -> None:
    deployment = deploy(
        empty_db.url,
        timeouts=CALM,
        groups=DEFAULT_GROUPS + _closed_today(),
        routing='[[routing]]\nwhen = { entry = "after_hours" }\nskill_group = "night"\n',
    )
    site = deployment.urls[0]
    async with (
        deployment.client() as api,
        new_context(browser, locale="zh-CN") as visitor,
        new_context(browser) as desk,
    ):
        # The night team's agent works the messages left while the group was closed.
        nina = await api.create_agent("nina", skill_groups=["night"], online=False)
        page = await visitor.new_page()
        widget = await start_demo_chat(page, site, "customer-night", entry="after_hours")
        cid = await conversation_of(api, "customer-night")

        # The closing message names the next opening; the form says it in the visitor's words.
        await shows(widget, "#transcript .system.closing", "we open again")
        await shows(widget, "#status", "会话已结束")
        await shows(widget, "#panel h2", "给我们留言")
        await shows(widget, "#panel .opening", "我们将于")
        assert await widget.evaluate("document.documentElement.lang") == "zh-CN"
        await looked_at(widget, "widget-left-message-zh", widths=(360,))

        await widget.fill("#left-content", "请明天给我回电 订单 SO-1001")
        await widget.fill("#left-contact", "138 0000 0000")
        await widget.click("#panel button[type=submit]")
        await shows(widget, "#panel", "感谢留言")

        # Listed for the team in the workbench: Nina calls back and marks it, with a note.
        bench = await desk.new_page()
        await sign_in(bench, site, "/workbench/", nina.token)
        [left] = [left for left in await api.left_messages() if left["conversation_id"] == cid]
        item = bench.locator(f'#left-messages li[data-id="{left["id"]}"]')
        await shows(bench, "#left-messages", "请明天给我回电 订单 SO-1001")
        await expect_on_page(item).to_contain_text("Contact: 138 0000 0000")
        await expect_on_page(item).to_contain_text("night · ")
        await looked_at(bench, "workbench-left-messages")
        await item.get_by_role("button", name="Called back…").click()
        await item.get_by_label("Note (staff only)").fill("Called, parcel re-sent")
        await item.get_by_role("button", name="Mark called back").click()
        await shows(bench, "#left-messages", "No message waits for a call back.")

        [resolved] = [
            left
            for left in await api.left_messages(status="resolved")
            if left["conversation_id"] == cid
        ]
    assert (
        resolved["content"],
        resolved["contact"],
        resolved["skill_group"],
        resolved["resolved_by"],
        resolved["resolution_note"],
    ) == ("请明天给我回电 订单 SO-1001", "138 0000 0000", "night", "nina", "Called, parcel re-sent")


async def test_the_demo_and_its_backend_are_not_served_in_production() -> None:
    production = production_settings()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(production)), base_url="http://sb"
    ) as http:
        assert (await http.get("/demo/")).status_code == 404
        assert (await http.get("/demo/demo.js")).status_code == 404
        for headers in ({}, {"Authorization": f"Bearer {production.app_key}"}):
            started = await http.post(
                "/demo/conversations", json={"customer_id": "c-1"}, headers=headers
            )
            assert started.status_code == 404, started.text
        # The widget is served, with its strict policy: scripts of its own origin only.
        widget = await http.get("/widget/")
        assert widget.status_code == 200 and "widget.js" in widget.text
        policy = widget.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy
        assert "frame-ancestors 'self'" in policy
        assert widget.headers["x-content-type-options"] == "nosniff"
        assert widget.headers["referrer-policy"] == "no-referrer"


@on_sqlite_alone("empty_db")
async def test_a_shop_on_its_own_origin_embeds_the_widget_with_one_tag(
    empty_db: Database, deploy: Callable[..., Deployment], browser: Browser
) -> None:
    port = free_port()
    shop = f"http://127.0.0.1:{port}"
    deployment = deploy(empty_db.url, timeouts=CALM, extra_env={"SWITCHBOARD_CORS_ORIGINS": shop})
    site = deployment.urls[0]
    async with deployment.client() as api, new_context(browser) as visitor:
        alice = await api.create_agent("alice")
        # The shop's backend started the conversation and renders the tag with what it got.
        visit = await api.start_conversation("customer-shop")
        tag = (
            f'<script src="{site}/widget/embed.js" data-open="true" '
            f'data-conversation-id="{visit.conversation_id}" '
            f'data-visitor-token="{visit.token}"></script>'
        )
        html = f'<!doctype html><html lang="en"><title>A shop</title><h1>A shop</h1>{tag}</html>'
        with serve_page(html, port):
            page = await visitor.new_page()
            await page.goto(f"{shop}/")
            widget = await widget_frame(page)
            await shows(widget, "#status", "You are chatting with Alice")
            await api.say(visit.conversation_id, alice.token, "Welcome to the shop!")
            await shows(widget, "#transcript", "Welcome to the shop!")
            # Nothing of the token in the widget's address: it came by postMessage.
            assert visit.token not in widget.url

            # The same page on an origin the API does not list: the browser refuses to frame
            # the widget there (frame-ancestors), so no page of a stranger's shows the chat.
            stranger = await visitor.new_page()
            await stranger.goto(f"http://localhost:{port}/")
            element = await stranger.wait_for_selector(WIDGET_FRAME, state="attached")
            framed = await element.content_frame()
            assert framed is not None
            await framed.wait_for_url(lambda url: url != "about:blank")  # it tried the widget
            await framed.wait_for_load_state()
            assert framed.url.startswith("chrome-error:")  # refused, as Chromium shows it
            assert await framed.query_selector("#status") is None
