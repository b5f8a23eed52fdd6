"""Service hours across time zones, DST, midnight, 24:00, holidays and special days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from domain.hours import ServiceHours

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=zone).astimezone(UTC)  # type: ignore[misc]


AFTER_SALES = ServiceHours(
    timezone="Asia/Shanghai",
    weekly={
        "mon": ["09:00-12:00", "13:30-24:00"],
        "tue": ["00:00-02:00", "09:00-18:00"],
        "sat": [],
        "sun": ["10:00-18:00"],
    },
    holidays=["2026-10-01"],
    special={"2026-12-31": ["09:00-15:00"]},
)


@pytest.mark.parametrize(
    ("local", "open_"),
    [
        ((2026, 11, 23, 8, 59), False),  # Monday before opening
        ((2026, 11, 23, 9, 0), True),
        ((2026, 11, 23, 12, 30), False),  # the lunch gap of a split shift
        ((2026, 11, 23, 13, 30), True),
        ((2026, 11, 23, 23, 59), True),  # 24:00 ends at midnight…
        ((2026, 11, 24, 1, 0), True),  # …and Tuesday's 00:00 window carries on
        ((2026, 11, 24, 2, 0), False),
        ((2026, 11, 25, 10, 0), False),  # Wednesday has no windows: closed
        ((2026, 11, 28, 10, 0), False),  # Saturday: []
        ((2026, 11, 29, 17, 59), True),
    ],
)
def test_open_in_the_groups_own_time_zone(local: tuple[int, ...], open_: bool) -> None:
    assert AFTER_SALES.is_open(at(SHANGHAI, *local)) is open_


def test_next_opening_skips_gaps_closed_days_and_holidays() -> None:
    lunch = at(SHANGHAI, 2026, 11, 23, 12, 5)
    assert AFTER_SALES.next_opening(lunch) == at(SHANGHAI, 2026, 11, 23, 13, 30)
    tuesday_night = at(SHANGHAI, 2026, 11, 24, 19, 0)
    assert AFTER_SALES.next_opening(tuesday_night) == at(SHANGHAI, 2026, 11, 29, 10, 0)
    now_open = at(SHANGHAI, 2026, 11, 23, 10, 0)
    assert AFTER_SALES.next_opening(now_open) == now_open


def test_next_closing_ends_the_open_span_across_midnight_and_lunch() -> None:
    morning = at(SHANGHAI, 2026, 11, 23, 10, 0)
    assert AFTER_SALES.next_closing(morning) == at(SHANGHAI, 2026, 11, 23, 12, 0)
    evening = at(SHANGHAI, 2026, 11, 23, 20, 0)  # Monday's 24:00 runs on into Tuesday's 00:00
    assert AFTER_SALES.next_closing(evening) == at(SHANGHAI, 2026, 11, 24, 2, 0)
    lunch = at(SHANGHAI, 2026, 11, 23, 12, 30)  # closed now: it closes at once
    assert AFTER_SALES.next_closing(lunch) == lunch
    assert AFTER_SALES.next_opening(AFTER_SALES.next_closing(morning)) == at(
        SHANGHAI, 2026, 11, 23, 13, 30
    )


def test_holidays_and_special_days() -> None:
    hours = ServiceHours(
        timezone="Asia/Shanghai",
        weekly={"thu": ["09:00-18:00"]},
        holidays=["2026-10-01"],
        special={"2026-12-31": ["09:00-15:00"]},
    )
    assert not hours.is_open(at(SHANGHAI, 2026, 10, 1, 10, 0))  # a Thursday, but a holiday
    assert hours.next_opening(at(SHANGHAI, 2026, 10, 1, 10, 0)) == at(SHANGHAI, 2026, 10, 8, 9, 0)
    assert hours.is_open(at(SHANGHAI, 2026, 12, 31, 14, 59))  # a Thursday with special hours
    assert not hours.is_open(at(SHANGHAI, 2026, 12, 31, 16, 0))


def test_dst_changes_keep_local_opening_times() -> None:
    hours = ServiceHours(
        timezone="Europe/Berlin", weekly={d: ["08:00-20:00"] for d in ("sat", "sun", "mon")}
    )
    # Berlin moves to summer time on 2026-03-29 (a Sunday): 08:00 local is 06:00 UTC, not 07:00.
    assert hours.next_opening(at(BERLIN, 2026, 3, 28, 21, 0)) == datetime(
        2026, 3, 29, 6, 0, tzinfo=UTC
    )
    assert hours.is_open(datetime(2026, 3, 29, 6, 0, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 3, 29, 5, 59, tzinfo=UTC))
    # …and back on 2026-10-25: 08:00 local is 07:00 UTC again.
    assert hours.next_opening(at(BERLIN, 2026, 10, 24, 21, 0)) == datetime(
        2026, 10, 25, 7, 0, tzinfo=UTC
    )


def test_a_window_in_the_skipped_dst_hour_opens_when_the_clock_comes_back() -> None:
    hours = ServiceHours(timezone="America/New_York", weekly={"sun": ["02:30-05:00"]})
    # 2026-03-08 02:00 → 03:00 in New York: 02:30 does not exist that day.
    opening = hours.next_opening(at(NEW_YORK, 2026, 3, 7, 12, 0))
    assert opening is not None
    assert opening.astimezone(NEW_YORK).hour == 3
    assert hours.is_open(opening)


def test_across_midnight_in_utc() -> None:
    # Shanghai 06:00-10:00 is 22:00-02:00 UTC the day before: open across the UTC midnight.
    hours = ServiceHours(timezone="Asia/Shanghai", weekly={"wed": ["06:00-10:00"]})
    assert hours.is_open(datetime(2026, 11, 24, 23, 30, tzinfo=UTC))
    assert hours.is_open(datetime(2026, 11, 25, 1, 30, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 11, 25, 2, 0, tzinfo=UTC))


def test_always_closed_has_no_next_opening() -> None:
    assert ServiceHours(weekly={}).next_opening(datetime(2026, 1, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"weekly": {"mon": ["9-17"]}}, "write it as HH:MM-HH:MM"),
        ({"weekly": {"mon": ["18:00-09:00"]}}, "must end after it starts"),
        ({"weekly": {"mon": ["09:00-24:30"]}}, "no such time of day"),
        ({"weekly": {"mon": ["09:00-12:00", "11:00-13:00"]}}, "windows overlap"),
        ({"weekly": {"monday": ["09:00-12:00"]}}, "unknown day 'monday'"),
        ({"special": {"2026-12-31": ["09:00-25:00"]}}, "no such time of day"),
        ({"holidays": ["2026-13-01"]}, "holidays"),
    ],
)
def test_bad_hours_are_refused_with_the_reason(hours: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        ServiceHours.model_validate(hours)
    assert message in str(error.value)


def test_open_time_counts_only_the_groups_hours() -> None:
    hours = ServiceHours(timezone="Asia/Shanghai", weekly={"mon": ["09:00-12:00", "13:30-18:00"]})
    monday_11 = at(SHANGHAI, 2026, 11, 23, 11, 0)
    # One hour left before lunch, then 1.5 hours after it.
    assert hours.after_open_time(monday_11, timedelta(hours=2.5)) == at(
        SHANGHAI, 2026, 11, 23, 15, 0
    )
    # Started while closed: counted from the next opening, a week on once Monday is used up.
    sunday = at(SHANGHAI, 2026, 11, 22, 20, 0)
    assert hours.after_open_time(sunday, timedelta(hours=1)) == at(SHANGHAI, 2026, 11, 23, 10, 0)
    assert hours.after_open_time(monday_11, timedelta(hours=8)) == at(
        SHANGHAI, 2026, 11, 30, 11, 30
    )
    assert ServiceHours(timezone="UTC").after_open_time(monday_11, timedelta(hours=1)) is None
