"""bot: the bot's answers (bot_turn) and a conversation's bot and hand-off

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.models

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    at = store.models.UTCDateTime(timezone=True)
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bot", text(length=16), nullable=True))
        batch_op.add_column(sa.Column("handoff_reason", text(length=64), nullable=True))
        batch_op.add_column(sa.Column("handed_off_at", at, nullable=True))
    op.create_table(
        "bot_turn",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", text(length=32), nullable=False),
        sa.Column("visitor_seq", sa.Integer(), nullable=False),
        sa.Column("kind", text(length=16), nullable=False),
        sa.Column("entry_id", text(length=64), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("handoff_reason", text(length=64), nullable=True),
        sa.Column("handoff_group", text(length=64), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("at", at, nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("conversation_id", "visitor_seq"),
    )
    with op.batch_alter_table("bot_turn", schema=None) as batch_op:
        batch_op.create_index("ix_bot_turn_at", ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bot_turn", schema=None) as batch_op:
        batch_op.drop_index("ix_bot_turn_at")
    op.drop_table("bot_turn")
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_column("handed_off_at")
        batch_op.drop_column("handoff_reason")
        batch_op.drop_column("bot")
