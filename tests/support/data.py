"""Builders of database rows, for tests of the store layer (no API, no Temporal); a message
stored without its signal (what a crash between the two leaves); and changes made straight in
the database where the API has no way (yet) to make them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.policy import Policy
from domain.types import MessageType, Role, TicketStatus
from store.assignment import join_queue
from store.db import Database
from store.lifecycle import close_conversation
from store.messages import StoredMessage, store_message
from store.models import (
    Agent,
    AgentSkill,
    Conversation,
    QueueSkip,
    Ticket,
    TicketComment,
    utcnow,
)
from store.tickets import Author, NewTicket, add_comment, create_ticket
from tests.support.canary import Canary


def add_agent(
    db: Database,
    agent_id: str,
    *,
    max_concurrent: int,
    skill_groups: list[str] | None = None,
    status: str = "online",
    active_count: int = 0,
    role: str = "agent",
) -> None:
    """An agent of these groups (general by default); `active_count`: the load they carry;
    `role` supervisor: one who oversees the groups."""
    with db.write() as session:
        session.add(
            Agent(
                id=agent_id,
                name=agent_id,
                token_hash=uuid.uuid4().hex,
                status=status,
                max_concurrent=max_concurrent,
                active_count=active_count,
                role=role,
            )
        )
        session.flush()
        session.add_all(
            AgentSkill(agent_id=agent_id, skill_group=group)
            for group in skill_groups or ["general"]
        )


def disable_agent(db: Database, agent_id: str) -> None:
    """The agent is disabled (its token stops working) even while they hold conversations,
    which POST /v1/agents/{id}/deactivate refuses: what the tests of ending access need."""
    with db.write() as session:
        session.execute(sa.update(Agent).where(col(Agent.id) == agent_id).values(disabled=True))


def wait_until_blocked_by(db: Database, session: Session, *, timeout: float = 30) -> None:
    """Until another PostgreSQL connection waits for a lock that `session`'s open transaction
    holds (a concurrent write has reached the point where it must wait for this one)."""
    holder = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    deadline = time.monotonic() + timeout
    while True:
        with db.read() as reader:
            blocked = reader.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": holder},
            ).scalar_one()
        if blocked:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing waited for a lock of backend {holder}")
        time.sleep(0.02)


def end_rating_window(db: Database, conversation_id: str) -> None:
    """The closed conversation's rating window ended a moment ago (as if it had been waited
    out: its visitor's token no longer works)."""
    with db.write() as session:
        ended = session.execute(
            sa.update(Conversation)
            .where(col(Conversation.id) == conversation_id, col(Conversation.state) == "closed")
            .values(rating_expires_at=utcnow() - timedelta(seconds=1))
        ).rowcount
    assert ended == 1, f"{conversation_id} is not closed"


def new_conversation(
    session: Session, *, queued_at: datetime | None = None, **fields: Any
) -> Conversation:
    """A queued conversation of a new customer; `fields` set other columns (state, agent_id,
    close_reason, …)."""
    conversation_id = uuid.uuid4().hex[:16]
    conversation = Conversation(
        **{
            "id": conversation_id,
            "customer_id": f"customer-{conversation_id}",
            "open_customer_key": f"customer-{conversation_id}",
            "channel": "web",
            "state": "queued",
            "queued_at": queued_at,
            **fields,
        }
    )
    session.add(conversation)
    session.flush()
    return conversation


def skip_agent(db: Database, conversation_id: str, agent_id: str) -> None:
    """The conversation skips the agent from now on (as a missed first reply leaves it)."""
    with db.write() as session:
        session.add(QueueSkip(conversation_id=conversation_id, agent_id=agent_id))


def enqueue_conversations(
    db: Database,
    count: int,
    *,
    skill_group: str = "general",
    priority: int = 0,
    enqueued_at: datetime | None = None,
    expected_handling_time: timedelta | None = None,
) -> list[str]:
    """Queued conversations, one transaction each, in this order. Returns their ids.
    `expected_handling_time`: the group's in the policy (None: the policy's default)."""
    ids = []
    for _ in range(count):
        with db.write() as session:
            conversation = new_conversation(session, queued_at=enqueued_at)
            join_queue(
                session,
                conversation,
                skill_group=skill_group,
                priority=priority,
                expected_handling_time=expected_handling_time,
            )
        ids.append(conversation.id)
    return ids


def store_unsignalled(
    db: Database, *, conversation_id: str, sender_role: str, sender_id: str, content: str
) -> StoredMessage:
    """A message stored exactly as the API stores it, whose signal never went out: what an API
    process killed between the commit and the signal leaves behind. Raises as store_message
    does (closed, not theirs, not active)."""
    return store_message(
        db,
        conversation_id=conversation_id,
        sender_role=sender_role,
        sender_id=sender_id,
        client_message_id=f"unsignalled-{uuid.uuid4().hex}",
        type=MessageType.TEXT,
        content=content,
    )


def closed_conversation(db: Database, *, content: str, closed_ago: timedelta) -> str:
    """A conversation of a new customer with one visitor message, closed by its visitor
    `closed_ago` (written straight to the database: no workflow). Returns its id."""
    with db.write() as session:
        conversation_id = new_conversation(session).id
    store_unsignalled(
        db,
        conversation_id=conversation_id,
        sender_role=Role.VISITOR,
        sender_id=f"visitor:{conversation_id}",
        content=content,
    )
    close_conversation(
        db=db, policy=Policy(), conversation_id=conversation_id, reason="visitor_closed"
    )
    with db.write() as session:
        session.execute(
            sa.update(Conversation)
            .where(col(Conversation.id) == conversation_id)
            .values(closed_at=utcnow() - closed_ago)
        )
    return conversation_id


def close_ticket(db: Database, ticket_id: int, *, closed_ago: timedelta) -> None:
    """The ticket closed `closed_ago`, written straight to the database, and marked told: no
    worker's reconciler starts its workflow (on the session's dev server a `ticket-<id>` of
    one test's could stand in another's way)."""
    with db.write() as session:
        session.execute(
            sa.update(Ticket)
            .where(col(Ticket.id) == ticket_id)
            .values(
                status=TicketStatus.CLOSED,
                closed_at=utcnow() - closed_ago,
                told_version=col(Ticket.version),
            )
        )


def app_ticket(
    db: Database, canary: Canary, *, customer_id: str, closed_ago: timedelta | None
) -> int:
    """A ticket the app made for its customer (no workflow), its subject, description and one
    comment the canary's, closed `closed_ago` (None: open). Returns its id."""
    app = Author(Role.APP, "app")
    ticket = create_ticket(
        db,
        policy=Policy(),
        new=NewTicket(
            subject=canary("subject"),
            description=canary("description"),
            skill_group="general",
            customer_id=customer_id,
        ),
        author=app,
    )
    assert ticket.id is not None
    add_comment(db, ticket_id=ticket.id, author=app, content=canary("comment"), public=True)
    if closed_ago is not None:
        close_ticket(db, ticket.id, closed_ago=closed_ago)
    return ticket.id


def ticket_texts(db: Database, ticket_id: int) -> list[str]:
    """The ticket's subject, description and comments."""
    with db.read() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        comments = session.exec(
            select(TicketComment.content).where(TicketComment.ticket_id == ticket_id)
        ).all()
    return [ticket.subject, ticket.description, *comments]


@dataclass(frozen=True)
class RanStatement:
    """A statement the database's write engine ran: its SQL (whitespace collapsed), and
    whether SQLAlchemy compiled it (False: run as prepared text, store/db.py's Prepared)."""

    sql: str
    compiled: bool


@contextmanager
def statements_run(db: Database) -> Iterator[list[RanStatement]]:
    """The statements the write engine runs inside the block, in order."""
    seen: list[RanStatement] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        seen.append(RanStatement(" ".join(statement.split()), context.compiled is not None))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
