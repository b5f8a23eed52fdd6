"""tickets: tickets (工单), their links, comments and events (ticket_events)

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.models

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    at = store.models.UTCDateTime(timezone=True)
    op.create_table(
        "ticket",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", text(length=200), nullable=False),
        sa.Column("description", text(), nullable=False),
        sa.Column("status", text(length=16), nullable=False),
        sa.Column("priority", text(length=16), nullable=False),
        sa.Column("skill_group", text(length=64), nullable=False),
        sa.Column("assignee_id", text(length=64), nullable=True),
        sa.Column("customer_id", text(length=200), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("order_id", text(length=64), nullable=True),
        sa.Column("created_by_role", text(length=16), nullable=False),
        sa.Column("created_by_id", text(length=200), nullable=False),
        sa.Column("created_at", at, nullable=False),
        sa.Column("updated_at", at, nullable=False),
        sa.Column("status_since", at, nullable=False),
        sa.Column("closed_at", at, nullable=True),
        sa.Column("first_response_due_at", at, nullable=True),
        sa.Column("resolution_due_at", at, nullable=True),
        sa.Column("first_responded_at", at, nullable=True),
        sa.Column("first_response_reminded", sa.Boolean(), nullable=False),
        sa.Column("resolution_reminded", sa.Boolean(), nullable=False),
        sa.Column("first_response_breached_at", at, nullable=True),
        sa.Column("resolution_breached_at", at, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("told_version", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.create_index("ix_ticket_group_status", ["skill_group", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_ticket_assignee_id"), ["assignee_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ticket_customer_id"), ["customer_id"], unique=False)
    op.create_table(
        "ticket_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", text(length=32), nullable=True),
        sa.Column("left_message_id", sa.Integer(), nullable=True),
        sa.Column("linked_at", at, nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"]),
        sa.ForeignKeyConstraint(["left_message_id"], ["left_message.id"]),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "conversation_id"),
        sa.UniqueConstraint("ticket_id", "left_message_id"),
    )
    with op.batch_alter_table("ticket_link", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ticket_link_conversation_id"), ["conversation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_ticket_link_ticket_id"), ["ticket_id"], unique=False)
    op.create_table(
        "ticket_comment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("author_role", text(length=16), nullable=False),
        sa.Column("author_id", text(length=200), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("content", text(), nullable=False),
        sa.Column("created_at", at, nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ticket_comment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ticket_comment_ticket_id"), ["ticket_id"], unique=False
        )
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", text(length=64), nullable=False),
        sa.Column("at", at, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("staff_data", sa.JSON(), nullable=True),
        sa.Column("audience", text(length=8), nullable=False),
        sa.Column("dedupe_key", text(length=128), nullable=True),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "dedupe_key"),
        sa.UniqueConstraint("ticket_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("ticket_events")
    with op.batch_alter_table("ticket_comment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_comment_ticket_id"))
    op.drop_table("ticket_comment")
    with op.batch_alter_table("ticket_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_link_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_ticket_link_conversation_id"))
    op.drop_table("ticket_link")
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_customer_id"))
        batch_op.drop_index(batch_op.f("ix_ticket_assignee_id"))
        batch_op.drop_index("ix_ticket_group_status")
    op.drop_table("ticket")
