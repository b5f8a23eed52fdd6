"""attachment: files uploaded to a conversation (photos, videos, PDFs)

What our inspection of the bytes found (never the uploaded name), where the bytes are in the
object store, and the message that carries it once sent.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.models

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table(
        "attachment",
        sa.Column("id", text(length=32), nullable=False),
        sa.Column("conversation_id", text(length=32), nullable=False),
        sa.Column("uploaded_by_role", text(length=16), nullable=False),
        sa.Column("uploaded_by_id", text(length=200), nullable=False),
        sa.Column("kind", text(length=16), nullable=False),
        sa.Column("content_type", text(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("object_key", text(length=200), nullable=False),
        sa.Column("thumbnail_key", text(length=200), nullable=True),
        sa.Column("message_seq", sa.Integer(), nullable=True),
        sa.Column("created_at", store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attachment_conversation_id"), ["conversation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attachment_conversation_id"))
    op.drop_table("attachment")
