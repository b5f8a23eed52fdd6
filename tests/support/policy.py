"""Builders of what a test deployment reads: its policy file and its settings."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING

from settings import Settings
from tests.support.api import ADMIN_TOKEN, APP_KEY

if TYPE_CHECKING:
    from temporalio.testing import WorkflowEnvironment

    from store.db import Database

DEFAULT_TIMEOUTS = {"idle_warning_after": "3m", "idle_close_after": "2m", "rating_window": "1h"}

DEFAULT_GROUPS = '[[skill_groups]]\nname = "general"\n[[skill_groups]]\nname = "after_sales"\n'

# Canned replies for every group, for `general` and for `after_sales` (in English and Chinese),
# and an SOP for conversations that came in through the `refund` entry.
STAFF_ASSIST = """
[[canned_replies]]
shortcut = "hello"
title = "Greeting"
text = "Hello {customer_name}, this is {agent_name}. How can I help?"

[[canned_replies]]
shortcut = "refund"
title = "Refund started"
text = "The refund of order {order_id} is on its way. 退款已提交。"
skill_groups = ["general"]

[[canned_replies]]
shortcut = "label"
title = "退货标签"
text = "{agent_name} 已为您发送退货标签。"
skill_groups = ["after_sales"]

[[sop]]
title = "Refund request"
when = { entry = "refund" }
steps = [
  { text = "Check the order's payment and delivery state" },
  { text = "Tell the customer the refund has started", canned_reply = "refund" },
]
"""

# A group's service hours that end at 23:59 UTC every day, opening again at midnight: it closes
# within a day of any test (`the_next_closing` says when, on the server's clock).
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOSING_AT_23_59 = (
    "[skill_groups.hours]\nweekly = { "
    + ", ".join(f'{day} = ["00:00-23:59"]' for day in _DAYS)
    + " }\n"
)


async def the_next_closing(env: WorkflowEnvironment) -> datetime:
    """When groups with CLOSING_AT_23_59 close next; first past midnight if that is under
    three minutes away on the server's clock, so a conversation started now queues first."""
    now = await env.get_current_time()
    if now.time() >= time(23, 56):
        await env.sleep(300)
        now = await env.get_current_time()
    return datetime.combine(now.date(), time(23, 59), tzinfo=UTC)


# The suite's agents hold no stream but where a test is about presence (tests/test_presence.py):
# a day to connect keeps the others online however slowly a test runs.
DEFAULT_PRESENCE_TIMEOUT = "1d"


def write_policy(
    path: Path,
    *,
    groups: str = DEFAULT_GROUPS,
    routing: str = "",
    presence_timeout: str = DEFAULT_PRESENCE_TIMEOUT,
    **timeouts: str,
) -> Path:
    """A test policy: second-to-minute timeouts, test texts; `groups` and `routing` are TOML;
    `presence_timeout`: how long an online agent without a stream stays online."""
    values = {**DEFAULT_TIMEOUTS, **timeouts}
    path.write_text(
        'default_skill_group = "general"\n'
        "[timeouts]\n"
        + "".join(f'{key} = "{value}"\n' for key, value in values.items())
        + f'[agents]\npresence_timeout = "{presence_timeout}"\n'
        + groups
        + routing
        + "[texts]\n"
        'idle_warning = "Still there? This chat closes in {idle_close_after}."\n'
        "[texts.closing]\n"
        'idle_timeout = "Closed for inactivity."\n'
        'agent_closed = "Solved, thank you."\n'
    )
    return path


def add_to_policy(path: Path, toml: str) -> None:
    """Add tables to the policy file at `path` (read again as it changes)."""
    path.write_text(path.read_text() + toml)


def keep_transcripts(path: Path, transcripts: str) -> None:
    """Add `[retention] transcripts` to the policy file at `path` (read again as it changes)."""
    add_to_policy(path, f'[retention]\ntranscripts = "{transcripts}"\n')


# The tests' waits poll 20 times a second from one address with one token, and some tests start
# hundreds of conversations: these limits are tests/test_limits.py's own to lower.
# Payload keys (32 bytes in base64, as SWITCHBOARD_PAYLOAD_KEY takes them): production needs one;
# a second for rotations.
PAYLOAD_KEY = base64.b64encode(b"test-payload-key-0123456789abcde").decode()
NEW_PAYLOAD_KEY = base64.b64encode(b"newer-payload-key-0123456789abcd").decode()

UNLIMITED_REQUESTS = {
    "max_requests_per_minute_per_address": 1_000_000,
    "max_requests_per_minute_per_caller": 1_000_000,
    "max_conversations_per_minute": 1_000_000,
}


def test_settings(
    db: Database | str, policy_path: Path, task_queue: str, address: str, *, payload_key: str = ""
) -> Settings:
    """Settings for a test deployment (`db` is a Database or a database URL): no metrics
    address (tests run side by side), requests not limited (UNLIMITED_REQUESTS), and payloads
    encrypted with `payload_key` if given."""
    return Settings(
        env="test",
        database_url=db if isinstance(db, str) else db.url,
        policy=policy_path,
        task_queue=task_queue,
        temporal_address=address,
        admin_token=ADMIN_TOKEN,
        app_key=APP_KEY,
        secret_key="test-secret-key-0123456789",
        metrics_address="",
        payload_key=payload_key,
        # Each deployment's files beside its policy (a test's own directory).
        attachments_url=(policy_path.parent / "attachments").as_uri(),
        **UNLIMITED_REQUESTS,
    )


test_settings.__test__ = False  # type: ignore[attr-defined]  # a builder, not a test


def production_settings() -> Settings:
    """Settings production accepts (strong, distinct secrets and a payload key), for what a
    production process serves and logs."""
    return Settings(
        env="production",
        admin_token="a-production-admin-token",
        app_key="a-production-app-key",
        secret_key="a-production-secret-key",
        payload_key=PAYLOAD_KEY,
    )
