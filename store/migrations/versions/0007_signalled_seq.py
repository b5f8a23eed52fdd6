"""conversation.signalled_seq: how far its workflow has been told of its messages (the
reconciler signals the rest); a conversation's messages indexed by seq

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("signalled_seq", sa.Integer(), nullable=False, server_default="0")
        )
    # What is stored already was told (or is past telling): the reconciler starts from here.
    op.execute("UPDATE conversation SET signalled_seq = last_seq")
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index("ix_message_conversation_seq", ["conversation_id", "seq"])
        batch_op.drop_index("ix_message_conversation_id")


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index("ix_message_conversation_id", ["conversation_id"])
        batch_op.drop_index("ix_message_conversation_seq")
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_column("signalled_seq")
