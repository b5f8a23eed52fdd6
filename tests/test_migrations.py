"""The migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from store.db import Database


def _differences(db: Database) -> list[object]:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def test_migrated_schema_matches_the_models(db: Database) -> None:
    # The `db` fixture has run create_schema, i.e. every migration up to head.
    assert _differences(db) == []
    with db.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() is not None


def test_upgrading_again_or_at_once_is_harmless(db: Database) -> None:
    others = [Database(db.url) for _ in range(3)]
    failures: list[BaseException] = []

    def migrate(other: Database) -> None:
        try:
            other.create_schema()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=migrate, args=(other,)) for other in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in others:
        other.dispose()
    assert not failures, failures
    db.create_schema()
    assert _differences(db) == []
