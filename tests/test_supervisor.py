"""The supervisor's console is the Temporal UI: conversations in several states, found by the
README's own filters (real dev server, real visibility), described by their summary, current
details and snapshot, and listed by the UI itself in headless Chromium (Playwright driving
Debian's chromium: tests/support/pages.py)."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from playwright.async_api import Browser
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment

from domain.types import ConversationSnapshot
from settings import PROJECT_ROOT
from tests.support.api import bearer, eventually
from tests.support.backends import on_sqlite_alone
from tests.support.pages import SHOWN_WITHIN_MS, expect_on_page, new_context
from tests.support.policy import DEFAULT_GROUPS
from tests.support.processes import free_port
from tests.support.system import StartSystem, System
from tests.support.temporal import start_dev_server
from workflows import ConversationWorkflow
from workflows.gateway import workflow_id

pytestmark = pytest.mark.e2e

GROUPS = DEFAULT_GROUPS + (
    '[[skill_groups]]\nname = "callback"\nmax_queue_wait = "1s"\noverflow_to = "after_sales"\n'
)
ROUTING = (
    '[[routing]]\nwhen = { entry = "returns" }\nskill_group = "after_sales"\n'
    '[[routing]]\nwhen = { entry = "callback" }\nskill_group = "callback"\n'
)


def readme_filters() -> list[str]:
    """The filters the README offers supervisors, as written there."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("Ready-to-paste filters", 1)[1]
    block = section.split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


@dataclass
class Floor:
    """A contact-centre floor in several states at once."""

    system: System
    ui_port: int
    waited_long: str  # queued in after_sales before the threshold
    waited_short: str  # queued in after_sales after it
    active: str  # alice's
    idle_closed: str
    overflowed: str  # callback → after_sales
    threshold: datetime


@pytest.fixture
async def ui_env() -> AsyncIterator[tuple[WorkflowEnvironment, int]]:
    """A dev server of its own (its visibility holds only this test's conversations), with UI."""
    port = free_port()
    env = await start_dev_server(ui_port=port)
    yield env, port
    await env.shutdown()


@pytest.fixture
async def floor(ui_env, make_system: StartSystem) -> Floor:
    env, ui_port = ui_env
    system = await make_system(
        env, idle_warning_after="1s", idle_close_after="1s", groups=GROUPS, routing=ROUTING
    )
    _, alice = await system.create_agent("alice", max_concurrent=3)
    active, visitor = await system.start_conversation()
    await system.wait_for_state(active, visitor, "active")
    await system.post_message(active, visitor, "Hello")  # no agent message: no countdown
    idle, idle_visitor = await system.start_conversation()
    await system.wait_for_state(idle, idle_visitor, "active")
    await system.post_message(idle, alice, "Anything else?")  # then silence
    waited_long, first = await system.start_conversation(entry="returns")
    # (A new conversation is "queued" from the start; this event says it joined.)
    await system.wait_for_event(waited_long, first, "queue.position_changed")
    await asyncio.sleep(1.2)
    threshold = datetime.now(UTC).replace(microsecond=0)
    await asyncio.sleep(1.2)
    waited_short, second = await system.start_conversation(entry="returns")
    await system.wait_for_event(waited_short, second, "queue.position_changed")
    overflowed, _over_visitor = await system.start_conversation(entry="callback")
    await system.wait_for_event(overflowed, None, "conversation.overflowed")
    await system.wait_for_state(idle, idle_visitor, "closed")
    return Floor(
        system=system,
        ui_port=ui_port,
        waited_long=waited_long,
        waited_short=waited_short,
        active=active,
        idle_closed=idle,
        overflowed=overflowed,
        threshold=threshold,
    )


def _with_times(line: str, floor: Floor) -> str:
    """Put this run's times into a README filter (it shows example times): the waiting
    threshold for `QueuedAt <`, today's midnight for the others."""
    midnight = floor.threshold.replace(hour=0, minute=0, second=0)
    when = floor.threshold if "QueuedAt <" in line else midnight
    return re.sub(r'"\d{4}-\d\d-\d\dT[\d:.]+Z"', f'"{when:%Y-%m-%dT%H:%M:%SZ}"', line)


async def _listed(env: WorkflowEnvironment, query: str) -> set[str]:
    return {execution.id async for execution in env.client.list_workflows(query)}


async def test_the_readme_filters_find_exactly_the_right_conversations(floor: Floor) -> None:
    env = floor.system.env
    waiting, alices, auto_closed, overflowed_today = readme_filters()
    expected = {
        waiting: {floor.waited_long},
        alices: {floor.active},
        auto_closed: {floor.idle_closed},
        overflowed_today: {floor.overflowed},
    }
    for line, conversations in expected.items():
        query = _with_times(line, floor)
        wanted = {workflow_id(conversation) for conversation in conversations}

        async def found(query: str = query, wanted: set[str] = wanted) -> set[str] | None:
            listed = await _listed(env, query)
            return listed if listed == wanted else None

        await eventually(found, timeout=20, what=f"{query!r} to list {wanted}")


async def test_summary_details_and_snapshot_tell_where_a_conversation_stands(
    floor: Floor,
) -> None:
    client = floor.system.env.client
    waiting = client.get_workflow_handle(workflow_id(floor.overflowed))
    description = await waiting.describe()
    assert await description.static_summary() == "web · callback · standard"

    async def moved_on() -> ConversationSnapshot | None:
        # The workflow takes the new queue a moment after the activity wrote the event.
        snapshot = await waiting.query(ConversationWorkflow.snapshot)
        return snapshot if snapshot.skill_group == "after_sales" else None

    snapshot = await eventually(moved_on, what="the workflow to be in after_sales")
    assert (snapshot.state, snapshot.overflow_hops) == ("queued", 1)
    assert snapshot.routing_rule == 1 and snapshot.policy_version
    assert snapshot.overflow_at is None  # after_sales has no maximum wait
    metadata = await waiting.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details = metadata.current_details
    assert details.startswith("**queued** · web · after_sales")
    assert "waiting since" in details and "overflow hops 1" in details
    assert f"policy {snapshot.policy_version}" in details

    active = client.get_workflow_handle(workflow_id(floor.active))
    assert (
        "agent: **alice**"
        in (
            await active.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        ).current_details
    )
    assert (
        "Hello"
        not in (
            await active.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        ).current_details
    ), "customer text in the details"

    closed = await client.get_workflow_handle(workflow_id(floor.idle_closed)).query(
        ConversationWorkflow.snapshot
    )
    assert (closed.state, closed.close_reason) == ("closed", "idle_timeout")
    assert closed.closed_at is not None and closed.rating_expires_at is not None

    seen = await floor.system.snapshot(floor.waited_short)
    assert seen["queue_position"] == 2  # behind the one that waited longer
    assert seen["workflow"]["state"] == "queued"
    _, visitor = await floor.system.start_conversation()
    refused = await floor.system.http.get(
        f"/v1/admin/conversations/{floor.waited_short}/snapshot", headers=bearer(visitor)
    )
    assert refused.status_code == 403


# The UI shows Temporal's visibility, which the filters' test above checks on both databases.
@on_sqlite_alone("db")
async def test_the_temporal_ui_lists_the_filtered_conversations(
    floor: Floor, browser: Browser
) -> None:
    waiting = _with_times(readme_filters()[0], floor)
    url = (
        f"http://127.0.0.1:{floor.ui_port}/namespaces/default/workflows?query="
        + urllib.parse.quote(waiting)
    )
    long_id, short_id = workflow_id(floor.waited_long), workflow_id(floor.waited_short)

    async def visible() -> bool:
        return long_id in {e.id async for e in floor.system.env.client.list_workflows(waiting)}

    await eventually(visible, timeout=20, what="visibility to catch up")
    async with new_context(browser) as supervisor:
        page = await supervisor.new_page()
        await page.goto(url)
        # The UI is a single-page app: its list renders a while after the page loads.
        listed = page.get_by_role("table", name="Workflows")
        await expect_on_page(listed).to_contain_text(long_id, timeout=SHOWN_WITHIN_MS)
        text = await listed.inner_text()
    assert short_id not in text and workflow_id(floor.active) not in text
