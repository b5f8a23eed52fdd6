"""The migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import alembic.command
import alembic.config
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from store.db import MIGRATIONS, Database


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


def test_the_webhooks_and_tickets_migrations_go_down_to_0014_and_up_again(db: Database) -> None:
    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        alembic.command.downgrade(config, "0014")
        assert MigrationContext.configure(connection).get_current_revision() == "0014"
        tables = set(sa.inspect(connection).get_table_names())
        assert not {"ticket", "ticket_events", "webhook_delivery"} & tables
    db.create_schema()
    assert _differences(db) == []
    with db.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == "0017"
