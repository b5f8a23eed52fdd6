"""conversation.erased_at and admin_action: a customer's text erased on request or with age

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("erased_at", store.models.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "admin_action",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("by_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("at", store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("conversations", sa.Integer(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_admin_action_at"), "admin_action", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_admin_action_at"), table_name="admin_action")
    op.drop_table("admin_action")
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_column("erased_at")
