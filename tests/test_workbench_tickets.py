"""Tickets (工单) in the agents' workbench, in a real browser (Debian's Chromium through
Playwright) against real API and worker processes on the dev server: an agent makes a ticket of
the conversation she holds, comments on it internally and publicly, sets it pending then
solved, and takes a breached one from her group's pool. The API is checked to hold the same,
and the app's (the customer's) side of the ticket to hold no internal comment.

The page is checked for serious and critical accessibility violations in a real state, and
screenshotted at 1280 px wide (tests/support/pages.py looked_at)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Browser
from playwright.async_api import expect as shown
from temporalio.testing import WorkflowEnvironment

from store.db import Database
from tests.support.api import APP_KEY, ApiClient, eventually, expect
from tests.support.backends import on_sqlite_alone
from tests.support.pages import SHOWN_WITHIN_MS, looked_at, new_context, shows, sign_in
from tests.support.policy import add_to_policy
from tests.support.processes import Deployment

pytestmark = pytest.mark.e2e

# No idle countdown closes the conversation while the browser works on it.
QUIET_VISITOR = {"idle_warning_after": "10m", "idle_close_after": "10m"}
# High tickets have due times to show; an urgent one breaches its first response at once.
TICKET_SLA = """
[[ticket_sla]]
priority = "high"
first_response = "4h"
resolution = "2d"

[[ticket_sla]]
priority = "urgent"
first_response = "1s"
"""
INTERNAL_COMMENT = "Courier says the parcel is at the Pudong depot"
PUBLIC_COMMENT = "We found your parcel: it ships again tomorrow."


@pytest.fixture
def dev_env(fresh_dev_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Its ticket workflows on a server of its own (conftest.py's fresh_dev_env says why)."""
    return fresh_dev_env


@pytest.fixture
def deployment(db: Database, deploy: Callable[..., Deployment]) -> Deployment:
    deployment = deploy(db.url, timeouts=QUIET_VISITOR)
    add_to_policy(deployment.settings.policy, TICKET_SLA)
    return deployment


async def _ticket(api: ApiClient, ticket_id: int, token: str) -> dict[str, Any]:
    return expect(await api.ticket(ticket_id, token), 200)


@on_sqlite_alone("db")
async def test_an_agent_works_a_ticket_from_her_conversation_in_the_workbench(
    deployment: Deployment, browser: Browser
) -> None:
    base = deployment.urls[0]
    async with deployment.client() as api, new_context(browser) as desk:
        alice = await api.create_agent("alice")
        cid, visitor = await api.start_conversation("cust-21", order_id="SO-2001")
        await api.wait_for(cid, state="active", agent_id="alice")
        await api.say(cid, visitor, "My parcel SO-2001 never arrived")
        # The app makes one for the same customer in the group's pool: urgent, soon breached.
        pooled = expect(
            await api.create_ticket(
                APP_KEY,
                subject="Invoice needed",
                customer_id="cust-21",
                skill_group="general",
                priority="urgent",
            ),
            201,
        )

        page = await desk.new_page()
        await sign_in(page, base, "/workbench/", alice.token)
        await page.locator(f'button[data-id="{cid}"]').click()
        await shown(page.locator("#panel-body")).to_contain_text("SO-2001")
        await shown(page.locator("#transcript")).to_contain_text("never arrived")

        # 创建工单: the form beside the chat.
        await page.locator("#ticket-button").click()
        form = page.locator("#ticket-form-slot form")
        await shown(form.get_by_label("Subject")).to_be_focused()
        await form.get_by_label("Subject").fill("Parcel SO-2001 lost")
        await form.get_by_label("Description").fill("Trace it with the courier")
        await form.get_by_label("Priority").select_option("high")
        await looked_at(page, "workbench-ticket-create")
        await form.get_by_role("button", name="Create ticket").click()
        await shows(page, "#banners", "created: Parcel SO-2001 lost")
        mine = expect(await api.tickets(alice.token, assignee_id="alice"), 200)["tickets"]
        assert [ticket["subject"] for ticket in mine] == ["Parcel SO-2001 lost"]
        ticket_id = mine[0]["id"]
        # The new ticket shows beside the conversation, linked to it.
        listed = page.locator(f'#customer-tickets li[data-id="{ticket_id}"]')
        await shown(listed).to_contain_text("linked to this conversation")

        await listed.get_by_role("button", name=f"Open the ticket: #{ticket_id}").click()
        await shown(page.locator("#ticket-desk")).to_be_visible()
        await shown(page.locator("#ticket-title")).to_have_text(f"#{ticket_id} Parcel SO-2001 lost")
        summary = page.locator("#ticket-summary")
        await shown(summary).to_contain_text("Open · Priority: High · Assignee: you")
        facts = page.locator("#ticket-facts")
        for fact in ("cust-21", "SO-2001", "First response due", "Resolution due", cid):
            await shown(facts).to_contain_text(fact)
        await shown(page.locator(f'#ticket-list button[data-id="{ticket_id}"]')).to_be_visible()

        # An internal comment (the default), then a public one, labelled as the customer's.
        comment_text = page.get_by_label("Comment", exact=True)
        await comment_text.fill(INTERNAL_COMMENT)
        await page.get_by_role("button", name="Add internal comment").click()
        internal = page.locator("#ticket-comments .comment.internal")
        await shown(internal).to_contain_text(INTERNAL_COMMENT)
        await shown(internal).to_contain_text("Internal: staff only")
        await page.get_by_role("radio", name="Public: the customer reads this").check()
        await shown(page.locator("#comment-warning")).to_be_visible()
        await comment_text.fill(PUBLIC_COMMENT)
        await page.get_by_role("button", name="Send to the customer").click()
        public = page.locator("#ticket-comments .comment.public")
        await shown(public).to_contain_text(PUBLIC_COMMENT)
        await shown(public).to_contain_text("Public: the customer reads this")
        # The next comment is internal again unless chosen otherwise.
        await shown(page.get_by_role("radio", name="Internal: staff only")).to_be_checked()

        await page.get_by_role("button", name="Set pending").click()
        await shown(summary).to_contain_text("Pending")

        # All of her groups' tickets: the app's urgent one among them, marked breached with
        # its due time.
        async def breached() -> bool:
            return bool((await _ticket(api, pooled["id"], alice.token))["breached"])

        await eventually(breached, what="the pooled ticket breached")
        await page.get_by_label("Show").select_option("all")
        item = page.locator(f'#ticket-list button[data-id="{pooled["id"]}"]')
        await shown(item).to_contain_text("SLA breached: was due", timeout=SHOWN_WITHIN_MS)
        await shown(page.locator("#ticket-list button")).to_have_count(2)
        await looked_at(page, "workbench-tickets")
        await page.get_by_role("button", name="Mark solved").click()
        await shown(summary).to_contain_text("Solved")
        await shown(page.get_by_role("button", name="Reopen")).to_be_visible()

        # The API holds the same.
        stored = await _ticket(api, ticket_id, alice.token)
        assert (stored["status"], stored["priority"], stored["assignee_id"]) == (
            "solved",
            "high",
            "alice",
        )
        assert [(c["content"], c["public"]) for c in stored["comments"]] == [
            (INTERNAL_COMMENT, False),
            (PUBLIC_COMMENT, True),
        ]
        assert [link["conversation_id"] for link in stored["links"]] == [cid]
        changes = [
            event["data"].get("status")
            for event in await api.ticket_events(ticket_id, alice.token)
            if event["type"] == "ticket.status_changed"
        ]
        assert changes == ["pending", "solved"]

        # The customer's side (the app's view): the public comment, never the internal one.
        app_events = await api.ticket_events(ticket_id, APP_KEY)
        assert INTERNAL_COMMENT not in json.dumps(app_events)
        assert all(event["data"].get("public") is not False for event in app_events)
        app_view = await _ticket(api, ticket_id, APP_KEY)
        assert [c["content"] for c in app_view["comments"]] == [PUBLIC_COMMENT]

        # The group's pool holds the app's ticket alone: she takes it.
        await page.get_by_label("Show").select_option("pool")
        await shown(page.locator(f'#ticket-list button[data-id="{ticket_id}"]')).to_have_count(0)
        await item.click()
        await page.get_by_role("button", name="Take it").click()
        await shown(summary).to_contain_text("Assignee: you")
        taken = await _ticket(api, pooled["id"], alice.token)
        assert taken["assignee_id"] == "alice"
