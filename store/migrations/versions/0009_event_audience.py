"""event.audience and event.staff_data: what a visitor may read of an event; message text once

Every event is for `all` (the visitor too) or for `staff` only, and what staff alone may read
of an event that everyone sees (agents' ids, transfer notes, requeue reasons) is kept apart in
`staff_data`. The rows written before are split here the same way, and a message's text is
dropped from its `message.created` event (the message row keeps it).

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What staff alone read of the events written before this revision (frozen here: the code's
# writers say it for new events), and the events that are staff's alone.
_STAFF_KEYS = {
    "message.created": ("sender_id",),
    "message.read": ("by_id",),
    "conversation.routed": ("skill_group", "priority", "routing_rule"),
    "conversation.state_changed": ("agent_id", "skill_group"),
    "conversation.assigned": ("agent_id", "transferred"),
    "conversation.transferred": ("from_agent_id", "to_agent_id", "to_skill_group", "by", "note"),
    "conversation.requeued": ("agent_id", "reason"),
    "left_message.resolved": ("resolved_by",),
}
_STAFF_ONLY = ("conversation.overflowed",)
_BATCH = 500


def upgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "audience", sa.String(length=8), nullable=False, server_default=sa.text("'all'")
            )
        )
        batch_op.add_column(sa.Column("staff_data", sa.JSON(), nullable=True))
    event = sa.table(
        "event",
        sa.column("id", sa.Integer),
        sa.column("type", sa.String),
        sa.column("data", sa.JSON),
        sa.column("staff_data", sa.JSON),
        sa.column("audience", sa.String),
    )
    connection = op.get_bind()
    connection.execute(event.update().where(event.c.type.in_(_STAFF_ONLY)).values(audience="staff"))
    after = 0
    while True:
        rows = connection.execute(
            sa.select(event.c.id, event.c.type, event.c.data)
            .where(event.c.id > after, event.c.type.in_(list(_STAFF_KEYS)))
            .order_by(event.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        for event_id, type_, data in rows:
            public: dict[str, Any] = dict(data or {})
            public.pop("content", None)  # the message row holds the text
            staff = {key: public.pop(key) for key in _STAFF_KEYS[type_] if key in public}
            connection.execute(
                event.update()
                .where(event.c.id == event_id)
                .values(data=public, staff_data=staff or None)
            )
        after = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_column("staff_data")
        batch_op.drop_column("audience")
