"""Service hours of a skill group: weekly windows in its time zone, holidays, special days.

Windows are "HH:MM-HH:MM" in local time; "24:00" ends a window at midnight; several windows a
day make split shifts. A day with no windows (or a holiday) is closed all day. Local times are
turned into instants with the zone's rules, so DST changes need no special care from callers.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_LOOKAHEAD_DAYS = 400


def _minutes(hours: str, minutes: str, *, text: str) -> int:
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > 24 * 60:
        raise ValueError(f"window {text!r}: no such time of day")
    return value


def parse_window(text: str) -> tuple[int, int]:
    """'09:00-12:30' → (540, 750) minutes since local midnight; '13:30-24:00' ends at 1440."""
    match = _WINDOW.match(text.strip())
    if not match:
        raise ValueError(f"window {text!r}: write it as HH:MM-HH:MM, e.g. 09:00-18:00")
    start = _minutes(match[1], match[2], text=text)
    end = _minutes(match[3], match[4], text=text)
    if start >= 24 * 60 or start >= end:
        raise ValueError(f"window {text!r}: must end after it starts, on the same day")
    return start, end


def _check_windows(windows: list[str]) -> list[str]:
    spans = sorted(parse_window(window) for window in windows)
    for (_s1, end1), (start2, _e2) in pairwise(spans):
        if start2 < end1:
            raise ValueError(f"windows overlap: {', '.join(windows)}")
    return windows


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Asia/Shanghai)"
        ) from None
    return name


Windows = Annotated[list[str], AfterValidator(_check_windows)]


class ServiceHours(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: Annotated[str, AfterValidator(_check_zone)] = "UTC"
    weekly: dict[str, Windows] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list)
    special: dict[date, Windows] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_days(self) -> ServiceHours:
        unknown = sorted(set(self.weekly) - set(DAYS))
        if unknown:
            raise ValueError(f"weekly: unknown day {unknown[0]!r} (use {', '.join(DAYS)})")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def windows_on(self, day: date) -> list[tuple[int, int]]:
        """Open windows of one local calendar day, in minutes since its midnight."""
        if day in self.special:
            return sorted(parse_window(w) for w in self.special[day])
        if day in self.holidays:
            return []
        return sorted(parse_window(w) for w in self.weekly.get(DAYS[day.weekday()], []))

    def _instant(self, day: date, minute: int) -> datetime:
        local = datetime.combine(day, time()) + timedelta(minutes=minute)
        # Wall-clock arithmetic, then the zone's rules: a time skipped by DST maps past the gap.
        return local.replace(tzinfo=self.zone).astimezone(UTC)

    def spans(self, around: datetime) -> list[tuple[datetime, datetime]]:
        """Open spans (UTC) of the local days from the day before `around` on, merged across
        midnight (…-24:00 followed by 00:00-… is one span)."""
        start_day = around.astimezone(self.zone).date() - timedelta(days=1)
        merged: list[tuple[datetime, datetime]] = []
        for offset in range(_LOOKAHEAD_DAYS):
            day = start_day + timedelta(days=offset)
            for start, end in self.windows_on(day):
                span = (self._instant(day, start), self._instant(day, end))
                if merged and span[0] <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], span[1]))
                else:
                    merged.append(span)
            if merged and merged[-1][0] > around and offset > 8:
                break
        return merged

    def is_open(self, at: datetime) -> bool:
        return any(start <= at < end for start, end in self.spans(at))

    def next_closing(self, at: datetime) -> datetime:
        """When the group next closes from `at` on: the end of the open span `at` is in, or
        `at` itself if the group is closed then."""
        for start, end in self.spans(at):
            if start <= at < end:
                return end
        return at

    def next_opening(self, at: datetime) -> datetime | None:
        """When the group next opens after `at` (None if never within a year)."""
        for start, end in self.spans(at):
            if start <= at < end:
                return at
            if start > at:
                return start
        return None

    def after_open_time(self, start: datetime, duration: timedelta) -> datetime | None:
        """The instant `duration` of open time has passed from `start` on (a ticket's SLA
        target counted in business hours); None if the group never opens that long within
        a year."""
        remaining = duration
        cursor = start
        limit = start + timedelta(days=_LOOKAHEAD_DAYS)
        while cursor < limit:
            later = [(max(s, cursor), e) for s, e in self.spans(cursor) if e > cursor]
            if not later:
                return None
            for begin, end in later:
                if remaining <= end - begin:
                    return begin + remaining
                remaining -= end - begin
                cursor = end
        return None
