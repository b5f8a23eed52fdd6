"""queue_entry.announced_wait and expected_handling_seconds: the estimated wait

A waiting visitor is told their estimated wait again when it moves by more than a share of the
one last told (announced_wait). Each entry keeps the group's expected handling time from the
policy when it joined: the estimate's start while the group has little history of its own.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("queue_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("announced_wait", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("expected_handling_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("queue_entry", schema=None) as batch_op:
        batch_op.drop_column("expected_handling_seconds")
        batch_op.drop_column("announced_wait")
