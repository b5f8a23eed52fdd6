"""The policy file and the settings: validated at load, errors name the key."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from domain.policy import PolicyError, PolicySource, format_duration, load_policy, parse_duration
from settings import PROJECT_ROOT, Settings
from tests.utils import write_policy


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("24h", 86400), ("1.5h", 5400), ("2d", 172800), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "-3m", "0s", "m5", 90])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_durations_read_as_text_in_system_messages() -> None:
    assert format_duration(timedelta(minutes=2)) == "2 minutes"
    assert format_duration(timedelta(seconds=90)) == "1 minute 30 seconds"
    assert format_duration(timedelta(hours=1)) == "1 hour"


def test_the_shipped_policy_file_loads() -> None:
    policy = load_policy(PROJECT_ROOT / "config" / "policy.toml")
    assert policy.timeouts.idle_warning_after == timedelta(minutes=3)
    assert policy.default_skill_group in policy.skill_group_names
    assert "2 minutes" in policy.idle_warning_text(policy.timeouts.idle_close_after)


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


def test_a_bad_file_at_start_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        PolicySource(_write(tmp_path, "default_skill_group = 3\n"))


def test_production_refuses_development_secrets() -> None:
    with pytest.raises(ValidationError, match="SWITCHBOARD_ADMIN_TOKEN"):
        Settings(env="production", app_key="a" * 32, secret_key="b" * 32)
    with pytest.raises(ValidationError, match="SWITCHBOARD_SECRET_KEY"):
        Settings(env="production", admin_token="a" * 32, app_key="c" * 32, secret_key="short")
    ok = Settings(env="production", admin_token="a" * 32, app_key="c" * 32, secret_key="d" * 32)
    assert ok.env == "production"
    assert Settings().admin_token == "dev-admin-token"  # development works out of the box
