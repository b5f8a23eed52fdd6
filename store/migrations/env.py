"""Alembic environment. Processes migrate through store.db.Database.create_schema, which passes
its connection in; the `alembic` command line (alembic.ini) uses SWITCHBOARD_DATABASE_URL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

from settings import get_settings
from store import models  # noqa: F401  (registers the tables)
from store.db import create_engine


def run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    with create_engine(get_settings().database_url).begin() as connection:
        run(connection)
