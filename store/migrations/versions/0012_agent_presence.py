"""agent.last_seen_at and the agent's own events in their feed: agent presence

An online agent whose workbench holds no stream for the policy's presence timeout goes away by
itself. `agent.last_seen_at` is the last sign of that workbench; agents there already are given
now (those online get the whole timeout to connect after the upgrade). A feed entry is a
conversation's event (`event_id`) or one of the agent's own, kept in the entry itself (`type`,
`at`, `data`): exactly one of the two.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.models

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KIND = "ck_agent_event_kind"


def upgrade() -> None:
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_seen_at", store.models.UTCDateTime(timezone=True), nullable=True)
        )
    agent = sa.table("agent", sa.column("last_seen_at", store.models.UTCDateTime(timezone=True)))
    op.execute(agent.update().values(last_seen_at=datetime.now(UTC)))
    with op.batch_alter_table("agent_event", schema=None) as batch_op:
        batch_op.alter_column("event_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(
            sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(sa.Column("at", store.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("data", sa.JSON(), nullable=True))
        batch_op.create_check_constraint(_KIND, "(event_id IS NULL) <> (type IS NULL)")


def downgrade() -> None:
    # The agent's own events have no place in the older feed: they go (their seqs with them).
    agent_event = sa.table("agent_event", sa.column("event_id", sa.Integer()))
    op.execute(agent_event.delete().where(agent_event.c.event_id.is_(None)))
    with op.batch_alter_table("agent_event", schema=None) as batch_op:
        batch_op.drop_constraint(_KIND, type_="check")
        batch_op.drop_column("data")
        batch_op.drop_column("at")
        batch_op.drop_column("type")
        batch_op.alter_column("event_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.drop_column("last_seen_at")
