"""Limits counted in the database, so they hold across any number of API processes: how many
rows a caller wrote within a window, and when there is room for one more."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from store.models import utcnow


class RateLimited(Exception):
    """The caller wrote its limit within the window: room again in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


def check_rate(
    connection: sa.Connection,
    recent: sa.Select[Any],
    params: Mapping[str, Any],
    *,
    limit: int,
    window: timedelta,
) -> None:
    """Raise RateLimited if `recent` (the count and the oldest time of the caller's rows since
    the bind parameter `since`) finds `limit` rows within `window` from now."""
    now = utcnow()
    count, oldest = connection.execute(recent, {**params, "since": now - window}).one()
    if count >= limit:
        # The oldest of them leaves the window first: then there is room for one more.
        frees_in = (oldest + window - now).total_seconds()
        raise RateLimited(retry_after=max(1, math.ceil(frees_in)))
