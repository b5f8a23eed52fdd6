"""message.acknowledged dropped (a repeated message is signalled again instead); an index for
the rate limit's count

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Writing the flag after each signal was a second write transaction per message; a repeat
    # of a stored message now tells the workflow again (it ignores a seq it has seen).
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("acknowledged")
        batch_op.create_index(
            "ix_message_sender_recent", ["conversation_id", "sender_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_sender_recent")
        batch_op.add_column(
            sa.Column("acknowledged", sa.Boolean(), nullable=False, server_default=sa.true())
        )
