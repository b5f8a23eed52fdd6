"""Which databases a test runs on: every test of the `db` and `empty_db` fixtures runs on both
(SQLite and PostgreSQL), but the few whose work is no database's own."""

from __future__ import annotations

import pytest


def on_sqlite_alone(database_fixture: str) -> pytest.MarkDecorator:
    """The test runs on the embedded database alone: what the store does is tested on both
    databases in its own tests, and this test's subject (a page, the codec, a process's own
    rule) is no database's; each run of it costs the suite seconds."""
    return pytest.mark.parametrize(database_fixture, ["sqlite"], indirect=True)
