"""Which databases a test runs on: every test of the `db` and `empty_db` fixtures runs on both
(SQLite and PostgreSQL), but the few whose work is no database's own."""

from __future__ import annotations

import os

import pytest


def on_sqlite_alone(database_fixture: str) -> pytest.MarkDecorator:
    """The test runs on the embedded database alone: what the store does is tested on both
    databases in its own tests, and this test's subject (a page, the codec, a process's own
    rule) is no database's; each run of it costs the suite seconds."""
    return pytest.mark.parametrize(database_fixture, ["sqlite"], indirect=True)


SOAK = os.environ.get("SWITCHBOARD_SOAK") == "1"


def on_postgres_alone_but_in_the_soak(database_fixture: str) -> pytest.MarkDecorator:
    """A long test run on PostgreSQL alone in CI (where a second database's run would cost the
    suite a minute), and on both with SWITCHBOARD_SOAK=1."""
    backends = ["sqlite", "postgres"] if SOAK else ["postgres"]
    return pytest.mark.parametrize(database_fixture, backends, indirect=True)
