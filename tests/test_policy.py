"""The policy file and the settings: validated at load, errors name the key."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from domain.policy import (
    Attachments,
    BotSettings,
    PolicyError,
    PolicySource,
    VisitorContext,
    format_duration,
    load_policy,
    parse_duration,
)
from settings import PROJECT_ROOT, Settings
from tests.support.policy import DEFAULT_GROUPS, PAYLOAD_KEY, STAFF_ASSIST, write_policy


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("24h", 86400),
        ("1.5h", 5400),
        ("2d", 172800),
        ("1500ms", 1.5),
        ("1s", 1),
        ("365d", 365 * 86400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    [
        *("", "5", "5x", "-3m", "0s", "m5", 90),
        *("250ms", "0.5s", "366d", "8761h", "5000000d", "99999999999999d", "9" * 400 + "s"),
    ],
)
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


DURATION_KEYS = [
    ("[timeouts]\nidle_warning_after = {}\n", "timeouts.idle_warning_after"),
    ("[timeouts]\nidle_close_after = {}\n", "timeouts.idle_close_after"),
    ("[timeouts]\nrating_window = {}\n", "timeouts.rating_window"),
    ('[[skill_groups]]\nname = "general"\nmax_queue_wait = {}\n', "skill_groups.0.max_queue_wait"),
    (
        '[[skill_groups]]\nname = "general"\nagent_first_reply_timeout = {}\n',
        "skill_groups.0.agent_first_reply_timeout",
    ),
]


@pytest.mark.parametrize(("template", "key"), DURATION_KEYS)
@pytest.mark.parametrize("value", ['"99999999999999d"', '"5000000d"', '"366d"', '"500ms"'])
def test_every_duration_of_the_file_is_from_a_second_to_a_year(
    tmp_path: Path, template: str, key: str, value: str
) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, template.format(value)))
    assert f"{key}: invalid duration {value.replace(chr(34), chr(39))}" in str(error.value)
    assert "from 1s to 365d" in str(error.value)
    load_policy(_write(tmp_path, template.format('"365d"')))


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ('"365d"', timedelta(days=365)),
        ('"10y"', timedelta(days=3650)),
        ('"90s"', timedelta(seconds=90)),
    ],
)
def test_transcripts_are_kept_up_to_ten_years(tmp_path: Path, value: str, kept: timedelta) -> None:
    policy = load_policy(_write(tmp_path, f"[retention]\ntranscripts = {value}\n"))
    assert policy.retention.transcripts == kept


def test_transcripts_are_kept_for_ever_without_retention(tmp_path: Path) -> None:
    assert load_policy(_write(tmp_path, "")).retention.transcripts is None


@pytest.mark.parametrize(
    ("line", "refusal"),
    [
        (
            'transcripts = "3651d"',
            "retention.transcripts: invalid duration '3651d': it must be from 1s to 3650d",
        ),
        ('transcripts = "11y"', "retention.transcripts: invalid duration '11y'"),
        ('transcripts = "0s"', "retention.transcripts: invalid duration '0s'"),
        ("batch_size = 0", "retention.batch_size: Input should be greater than or equal to 1"),
        ("batch_size = 1001", "retention.batch_size: Input should be less than or equal to 1000"),
    ],
)
def test_a_bad_retention_is_refused_naming_the_key(tmp_path: Path, line: str, refusal: str) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, f"[retention]\n{line}\n"))
    assert refusal in str(error.value)


def test_attachment_limits_default_and_take_units(tmp_path: Path) -> None:
    defaults = load_policy(_write(tmp_path, "")).attachments
    assert (defaults.max_image_bytes, defaults.max_video_bytes, defaults.max_file_bytes) == (
        10 * 2**20,
        50 * 2**20,
        20 * 2**20,
    )
    assert defaults.max_image_pixels == 40_000_000
    assert defaults.allowed == ["image", "video", "file"]
    assert defaults.max_uploads_per_minute == 10
    assert defaults.url_ttl == timedelta(minutes=10)
    policy = load_policy(
        _write(
            tmp_path,
            '[attachments]\nmax_image_bytes = "5MiB"\nmax_video_bytes = "100MB"\n'
            'max_file_bytes = 4096\nallowed = ["image"]\nurl_ttl = "2m"\n',
        )
    )
    limits = policy.attachments
    assert (limits.max_bytes("image"), limits.max_bytes("video"), limits.max_bytes("file")) == (
        5 * 2**20,
        100_000_000,
        4096,
    )
    assert limits.allowed == ["image"] and limits.url_ttl == timedelta(minutes=2)
    assert limits.largest_bytes == 100_000_000


@pytest.mark.parametrize(
    ("line", "refusal"),
    [
        (
            'max_image_bytes = "ten"',
            "attachments.max_image_bytes: could not parse value and unit from byte string",
        ),
        ("max_video_bytes = 0", "attachments.max_video_bytes: Input should be greater than 0"),
        (
            'max_file_bytes = "2GiB"',
            "attachments.max_file_bytes: Input should be less than or equal to 1073741824",
        ),
        (
            "max_image_pixels = 100_000_001",
            "attachments.max_image_pixels: Input should be less than or equal to 100000000",
        ),
        (
            "max_uploads_per_minute = 0",
            "attachments.max_uploads_per_minute: Input should be greater than or equal to 1",
        ),
        (
            'allowed = ["audio"]',
            "attachments.allowed.0: Input should be 'image', 'video' or 'file'",
        ),
        ('url_ttl = "25h"', "attachments.url_ttl: a fetch URL works for a day at most (24h)"),
        ('url_ttl = "500ms"', "attachments.url_ttl: invalid duration '500ms'"),
    ],
)
def test_a_bad_attachments_section_is_refused_naming_the_key(
    tmp_path: Path, line: str, refusal: str
) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, f"[attachments]\n{line}\n"))
    assert refusal in str(error.value)


def test_durations_read_as_text_in_system_messages() -> None:
    assert format_duration(timedelta(minutes=2)) == "2 minutes"
    assert format_duration(timedelta(seconds=90)) == "1 minute 30 seconds"
    assert format_duration(timedelta(hours=1)) == "1 hour"


def test_the_shipped_policy_file_loads() -> None:
    policy = load_policy(PROJECT_ROOT / "config" / "policy.toml")
    assert policy.timeouts.idle_warning_after == timedelta(minutes=3)
    assert policy.default_skill_group in policy.skill_group_names
    assert "2 minutes" in policy.idle_warning_text(policy.timeouts.idle_close_after)
    assert policy.retention.transcripts == timedelta(days=365)
    assert policy.canned_replies and policy.sop
    assert policy.attachments == Attachments()  # the file says the defaults aloud
    assert policy.bot == BotSettings()  # and the bot's, with help-centre chats going to it first
    assert policy.route(VisitorContext(channel="help_center")).bot == "faq"
    assert policy.route(VisitorContext(channel="web")).bot is None


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[timeouts]\nidle_warning_after = "5x"\n', "timeouts.idle_warning_after"),
        ('[timeouts]\nidle_close_afterr = "5m"\n', "timeouts.idle_close_afterr: unknown key"),
        ('default_skill_group = "vip"\n', "default_skill_group: 'vip' is not one of"),
        ('[[skill_groups]]\nname = "Bad Name"\n', "skill_groups.0.name"),
        ('[[skill_groups]]\nname = "a"\n[[skill_groups]]\nname = "a"\n', "duplicate name 'a'"),
        ('[texts]\nidle_warning = "closes in {minutes}"\n', "texts.idle_warning"),
        ("[timeouts\n", "invalid policy file"),
        ('[[ticket_sla]]\npriority = "asap"\n', "ticket_sla.0.priority"),
        (
            '[[ticket_sla]]\npriority = "high"\n[[ticket_sla]]\npriority = "high"\n',
            "ticket_sla.1.priority: duplicate priority 'high'",
        ),
        (
            '[[ticket_sla]]\npriority = "urgent"\nescalate_to = "nowhere"\n',
            "ticket_sla.0.escalate_to: unknown skill group 'nowhere'",
        ),
        (
            '[[ticket_sla]]\npriority = "low"\nfirst_response = "1h"\nremind_before = "2h"\n',
            "ticket_sla.0.remind_before: must be shorter",
        ),
        ('[tickets]\npending_close_after = "0s"\n', "tickets.pending_close_after"),
    ],
)
def test_a_bad_file_is_refused_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, text))
    assert named in str(error.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "nope.toml")


def _touch_later(path: Path) -> None:
    """Make sure the file's stamp changes even on coarse-grained file systems."""
    stamp = time.time() + 2
    os.utime(path, (stamp, stamp))


def test_a_changed_file_applies_and_a_bad_edit_keeps_the_last_good(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "policy.toml", idle_warning_after="3m")
    source = PolicySource(path)
    assert source.current().timeouts.idle_warning_after == timedelta(minutes=3)

    write_policy(path, idle_warning_after="45s")
    _touch_later(path)
    assert source.current().timeouts.idle_warning_after == timedelta(seconds=45)

    path.write_text('[timeouts]\nidle_warning_after = "soon"\n')
    _touch_later(path)
    assert source.current().timeouts.idle_warning_after == timedelta(seconds=45)
    assert source.last_error is not None and "timeouts.idle_warning_after" in source.last_error


def test_a_refused_edit_is_logged_once_as_a_warning_with_the_key_and_the_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_policy(tmp_path / "policy.toml", idle_warning_after="3m")
    source = PolicySource(path)
    caplog.set_level("INFO", logger="switchboard.policy")
    path.write_text('[timeouts]\nidle_warning_after = "soon"\nidle_close_after = "400d"\n')
    _touch_later(path)
    for _ in range(3):  # looked at on every decision: said once per edit
        assert source.current().timeouts.idle_warning_after == timedelta(minutes=3)
    [refused] = [r for r in caplog.records if r.name == "switchboard.policy"]
    assert refused.levelname == "WARNING"
    line = refused.getMessage()
    assert "\n" not in line
    for said in ("timeouts.idle_warning_after", "'soon'", "timeouts.idle_close_after", "'400d'"):
        assert said in line, line
    with pytest.raises(PolicyError):
        source.reload()  # asked for by an admin: said again
    assert [r.levelname for r in caplog.records if r.name == "switchboard.policy"] == [
        "WARNING",
        "WARNING",
    ]


def test_a_bad_file_at_start_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        PolicySource(_write(tmp_path, "default_skill_group = 3\n"))


def test_production_needs_three_different_secrets() -> None:
    admin, app, secret = "a" * 32, "c" * 32, "d" * 32
    for same in [
        {"admin_token": admin, "app_key": admin, "secret_key": secret},
        {"admin_token": admin, "app_key": app, "secret_key": app},
        {"admin_token": secret, "app_key": app, "secret_key": secret},
    ]:
        with pytest.raises(ValidationError, match="a different value for each"):
            Settings(env="production", **same)
    Settings(env="test", admin_token=admin, app_key=admin)  # tests and development may share


def test_production_refuses_development_secrets() -> None:
    with pytest.raises(ValidationError, match="SWITCHBOARD_ADMIN_TOKEN"):
        Settings(env="production", app_key="a" * 32, secret_key="b" * 32)
    with pytest.raises(ValidationError, match="SWITCHBOARD_SECRET_KEY"):
        Settings(env="production", admin_token="a" * 32, app_key="c" * 32, secret_key="short")
    strong = {"admin_token": "a" * 32, "app_key": "c" * 32, "secret_key": "d" * 32}
    ok = Settings(env="production", payload_key=PAYLOAD_KEY, **strong)
    assert ok.env == "production"
    assert Settings().admin_token == "dev-admin-token"  # development works out of the box


ROUTED = """
default_skill_group = "general"
[[skill_groups]]
name = "general"
[[skill_groups]]
name = "vip"
overflow_to = "general"
[[skill_groups]]
name = "after_sales"
max_queue_length = 20
max_queue_wait = "5m"
overflow_to = "general"
agent_first_reply_timeout = "2m"
[skill_groups.hours]
timezone = "Asia/Shanghai"
weekly = { mon = ["09:00-12:00", "13:30-24:00"], sat = [], sun = ["10:00-18:00"] }
holidays = ["2026-10-01"]
special = { "2026-12-31" = ["09:00-15:00"] }

[[routing]]
when = { channel = "order_page", tier = "vip" }
skill_group = "vip"
priority = 10
[[routing]]
when = { has_order = true }
skill_group = "after_sales"
priority = 5
"""


def test_routing_first_match_wins(tmp_path: Path) -> None:
    from domain.policy import VisitorContext

    policy = load_policy(_write(tmp_path, ROUTED))
    vip = policy.route(VisitorContext(channel="order_page", tier="vip", has_order=True))
    assert (vip.skill_group, vip.priority, vip.rule) == ("vip", 10, 0)
    order = policy.route(VisitorContext(channel="web", tier="vip", has_order=True))
    assert (order.skill_group, order.priority, order.rule) == ("after_sales", 5, 1)
    plain = policy.route(VisitorContext(channel="web"))
    assert (plain.skill_group, plain.priority, plain.rule) == ("general", 0, None)
    after_sales = policy.group("after_sales")
    assert after_sales.max_queue_wait == timedelta(minutes=5)
    assert after_sales.hours is not None and after_sales.hours.timezone == "Asia/Shanghai"
    assert after_sales.on_closing == "keep"  # the default: those waiting wait on
    closing = load_policy(
        _write(tmp_path, ROUTED.replace("max_queue_length = 20", 'on_closing = "close"', 1))
    )
    assert closing.group("after_sales").on_closing == "close"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            ('skill_group = "vip"\npriority = 10', 'skill_group = "gold"\npriority = 10'),
            "routing.0.skill_group: unknown skill group 'gold'",
        ),
        (
            ('overflow_to = "general"\nagent', 'overflow_to = "nowhere"\nagent'),
            "after_sales.overflow_to: unknown skill group 'nowhere'",
        ),
        (
            ('name = "general"\n', 'name = "general"\noverflow_to = "vip"\n'),
            "overflow_to makes a cycle: general → vip → general",
        ),
        (('timezone = "Asia/Shanghai"', 'timezone = "Asia/Atlantis"'), "unknown time zone"),
        (("sat = []", 'sat = ["10:00-12:00", "11:00-13:00"]'), "windows overlap"),
        (('max_queue_wait = "5m"', 'max_queue_wait = "soon"'), "max_queue_wait"),
        (
            ("when = { has_order = true }", "when = { has_parcel = true }"),
            "has_parcel: unknown key",
        ),
        (
            ('agent_first_reply_timeout = "2m"', 'on_closing = "later"'),
            "skill_groups.2.on_closing: Input should be 'keep' or 'close'",
        ),
        (
            ('name = "general"\n', 'name = "general"\non_closing = "close"\n'),
            "on_closing = \"close\" needs [hours]: group 'general' never closes without them",
        ),
    ],
)
def test_bad_routing_and_groups_are_refused(
    tmp_path: Path, change: tuple[str, str], named: str
) -> None:
    assert named in _refusal(tmp_path, ROUTED, change)


def _refusal(tmp_path: Path, policy: str, change: tuple[str, str]) -> str:
    """Why the policy, with `change` (old, new) made once, is refused at load."""
    old, new = change
    assert old in policy
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, policy.replace(old, new, 1)))
    return str(error.value)


# The shipped test groups, their canned replies and SOPs, and a second SOP for any order.
ASSISTED = (
    DEFAULT_GROUPS
    + STAFF_ASSIST
    + '[[sop]]\ntitle = "Orders"\nwhen = { has_order = true }\nsteps = [{ text = "Look it up" }]\n'
)


def test_canned_replies_and_sops_load_and_the_first_matching_sop_wins(tmp_path: Path) -> None:
    from domain.policy import VisitorContext

    policy = load_policy(_write(tmp_path, ASSISTED))
    every = policy.canned_replies_for(None, "")  # an admin's
    assert [reply.shortcut for reply in every] == ["hello", "refund", "label"]
    after_sales = policy.canned_replies_for(frozenset({"after_sales"}), "")
    assert [reply.shortcut for reply in after_sales] == ["hello", "label"]
    refund = policy.sop_for(VisitorContext(channel="web", entry="refund", has_order=True))
    assert refund is not None and refund.title == "Refund request"
    order = policy.sop_for(VisitorContext(channel="web", has_order=True))
    assert order is not None and order.title == "Orders"
    assert policy.sop_for(VisitorContext(channel="web")) is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            ('shortcut = "refund"', 'shortcut = "hello"'),
            "canned_replies.1.shortcut: duplicate shortcut 'hello' (canned_replies.0 has it)",
        ),
        (
            ('skill_groups = ["after_sales"]', 'skill_groups = ["after_sales", "billing"]'),
            "canned_replies.2.skill_groups: unknown skill group 'billing'",
        ),
        (
            ("this is {agent_name}", "this is {agent}"),
            "canned_replies.0.text: unknown placeholder {agent}: only {customer_name}, "
            "{agent_name}, {order_id} may be used",
        ),
        (
            ("order {order_id}", "order {order_id:>12}"),
            "canned_replies.1.text: unknown placeholder {order_id:>12}",
        ),
        (("this is {agent_name}", "this is {agent_name"), "canned_replies.0.text: expected '}'"),
        (
            ('canned_reply = "refund"', 'canned_reply = "refunds"'),
            "sop.0.steps.1.canned_reply: unknown canned reply 'refunds'",
        ),
        (('shortcut = "hello"', 'shortcut = "Hello there"'), "canned_replies.0.shortcut"),
        (('title = "Greeting"', 'title = ""'), "canned_replies.0.title"),
        (('title = "Refund request"', f'title = "{"x" * 101}"'), "sop.0.title"),
        (('steps = [{ text = "Look it up" }]', "steps = []"), "sop.1.steps"),
        (("when = { has_order = true }", "when = { has_parcel = true }"), "has_parcel"),
    ],
)
def test_bad_canned_replies_and_sops_are_refused_naming_the_key(
    tmp_path: Path, change: tuple[str, str], named: str
) -> None:
    assert named in _refusal(tmp_path, ASSISTED, change)


def test_a_canned_reply_is_filled_as_written_and_a_missing_value_by_its_fallback(
    tmp_path: Path,
) -> None:
    policy = load_policy(
        _write(
            tmp_path,
            '[canned_reply_fallbacks]\ncustomer_name = "亲"\n'
            '[[canned_replies]]\nshortcut = "hi"\ntitle = "Hi"\n'
            'text = "{customer_name}, {{not a placeholder}} {order_id} / {order_id}"\n',
        )
    )
    [reply] = policy.canned_replies
    named = reply.filled(
        {"customer_name": "Li {order_id}", "order_id": "SO-1"}, policy.canned_reply_fallbacks
    )
    assert named.text == "Li {order_id}, {not a placeholder} SO-1 / SO-1"  # a value stays a value
    assert named.unfilled == []
    unnamed = reply.filled({"customer_name": None}, policy.canned_reply_fallbacks)
    assert unnamed.text == "亲, {not a placeholder} your order / your order"
    assert unnamed.unfilled == ["customer_name", "order_id"]


BOT_FIRST = '[[routing]]\nwhen = { channel = "web" }\nskill_group = "general"\nbot = "faq"\n'
WEBHOOK = (
    '[bot.webhook]\nurl = "https://bot.example.com/answer"\nsecret = "sixteen-chars-at-least"\n'
)


def test_a_rule_sends_its_conversations_to_the_bot_and_the_bot_settings_default(
    tmp_path: Path,
) -> None:
    policy = load_policy(_write(tmp_path, BOT_FIRST + '[[routing]]\nskill_group = "general"\n'))
    assert policy.route(VisitorContext(channel="web")).bot == "faq"
    assert policy.route(VisitorContext(channel="app")).bot is None
    assert policy.bot.file == "bot.toml"
    assert policy.bot.idle_close_after == timedelta(minutes=10)
    assert policy.bot.invite_rating is False and policy.bot.webhook is None

    webhook = load_policy(_write(tmp_path, BOT_FIRST.replace('"faq"', '"webhook"') + WEBHOOK))
    assert webhook.route(VisitorContext(channel="web")).bot == "webhook"
    assert webhook.bot.webhook is not None
    assert webhook.bot.webhook.timeout == timedelta(seconds=5)
    assert webhook.bot.webhook.attempts == 3
    # Its secret is never shown where the policy is (GET /v1/admin/policy).
    assert webhook.bot.webhook.secret.get_secret_value() == "sixteen-chars-at-least"
    assert "sixteen-chars-at-least" not in str(webhook.model_dump(mode="json"))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            BOT_FIRST.replace('"faq"', '"webhook"'),
            'routing.0.bot: "webhook" needs [bot.webhook] (its url and secret)',
        ),
        (BOT_FIRST.replace('"faq"', '"gpt"'), "routing.0.bot: Input should be 'faq' or 'webhook'"),
        (WEBHOOK.replace("sixteen-chars-at-least", "short"), "bot.webhook.secret"),
        (WEBHOOK + 'timeout = "31s"\n', "a visitor waits for the bot's answer: 30s at most"),
        (WEBHOOK + "attempts = 6\n", "bot.webhook.attempts"),
        (WEBHOOK.replace("https://bot.example.com/answer", "ftp://bot"), "bot.webhook.url"),
        ('[bot]\nidle_close_after = "forever"\n', "bot.idle_close_after"),
        ("[bot]\nmax_misses = 2\n", "bot.max_misses: unknown key"),
    ],
)
def test_a_bad_bot_setting_is_refused_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_write(tmp_path, text))
    assert named in str(error.value)
