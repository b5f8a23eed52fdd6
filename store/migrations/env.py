"""Alembic environment: run by store.db.Database.create_schema (make run, the worker, the API)
with the connection it passes in; `alembic` on the command line is for writing new revisions."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from store import models  # noqa: F401  (registers the tables)

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations through store.db.Database.create_schema()")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
