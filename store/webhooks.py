"""The webhooks' outbox: what each endpoint of the policy's [[webhooks]] is owed, written in the
transaction of the event itself (so an event stored is an event owed, and one rolled back is
never sent), and what the courier (courier.py) needs to send it in order and record how it
went.

The endpoints reach the event writer through the engine: `route_webhooks(db, policy)` (the API
and the worker call it at start) puts the current policy's endpoints where `enqueue` finds them
from any session or connection of that database. A database nobody routed writes no outbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session, col

from domain.policy import VISITOR_UNREAD, Policy, WebhookEndpoint
from domain.types import EventType, Role
from store.db import Database
from store.models import Conversation, Message, WebhookDelivery, utcnow

Subject = Literal["conversation", "ticket"]
# pending: owed; delivered: the endpoint answered 2xx; failed: given up (give_up_after) or its
# endpoint left the policy; skipped: a visitor.unread the visitor read before it was due.
DeliveryStatus = Literal["pending", "delivered", "failed", "skipped"]
PENDING, DELIVERED, FAILED, SKIPPED = "pending", "delivered", "failed", "skipped"
# What a visitor.unread carries of the message: enough for a notification's line.
PREVIEW_CHARS = 100
# The events a visitor may want a push for: what staff (or the bot, or the policy) said to them.
_PUSHED_SENDERS = frozenset({Role.AGENT, Role.BOT, Role.SYSTEM})
_OPTION = "switchboard_webhooks"
# How often the event writer looks at the policy for its endpoints (an edit applies after it).
LOOK_INTERVAL = 1.0

PolicyOfNow = Callable[[], Policy]


@dataclass(frozen=True)
class Recipient:
    endpoint: str
    staff: bool


class WebhookRoutes:
    """Which endpoints want which event type, worked out once per policy version. Shared by a
    process's threads: each change replaces the whole state at once."""

    def __init__(self, policy: PolicyOfNow) -> None:
        self._policy = policy
        self._looked_at = -LOOK_INTERVAL
        # The policy version, its endpoints, and the recipients of each type asked for so far.
        self._state: tuple[str | None, tuple[WebhookEndpoint, ...], dict[str, Any]] = (
            None,
            (),
            {},
        )

    def recipients(self, event_type: str) -> tuple[Recipient, ...]:
        # Every event asks: the policy (a look at its file) once a second at most.
        now = time.monotonic()
        if now - self._looked_at >= LOOK_INTERVAL:
            self._looked_at = now
            policy = self._policy()
            if policy.version != self._state[0]:
                self._state = (policy.version, tuple(policy.webhooks), {})
        _version, endpoints, by_type = self._state
        if not endpoints:
            return ()
        found: tuple[Recipient, ...] | None = by_type.get(event_type)
        if found is None:
            found = tuple(
                Recipient(endpoint.key, endpoint.staff)
                for endpoint in endpoints
                if endpoint.wants(event_type)
            )
            by_type[event_type] = found
        return found


def route_webhooks(db: Database, policy: PolicyOfNow) -> None:
    """Have every event written through `db` go into the outbox of the endpoints of the policy
    in force (`policy()`: read at each event, so an edit applies at once)."""
    db.engine.update_execution_options(**{_OPTION: WebhookRoutes(policy)})


def _connection(session: Session | sa.Connection) -> sa.Connection:
    return session.connection() if isinstance(session, Session) else session


def _routes(connection: sa.Connection) -> WebhookRoutes | None:
    routes = connection.get_execution_options().get(_OPTION)
    return routes if isinstance(routes, WebhookRoutes) else None


_INSERT = sa.insert(WebhookDelivery)


def enqueue(
    session: Session | sa.Connection,
    *,
    subject: Subject,
    subject_id: str,
    seq: int,
    type: str,
    visitor_data: dict[str, Any],
    staff_data: dict[str, Any] | None = None,
    staff_only: bool = False,
    at: datetime | None = None,
) -> int:
    """Owe the event (`seq` of the subject's log, of `type`) to every endpoint that asked for
    its type, inside the caller's transaction: one row per endpoint, nothing when none asked.
    A visitor's endpoint gets `visitor_data` (nothing of a `staff_only` event); a staff one
    `visitor_data` with `staff_data` over it. The number of deliveries owed."""
    connection = _connection(session)
    routes = _routes(connection)
    if routes is None:
        return 0
    recipients = routes.recipients(type)
    if not recipients:
        return 0
    when = at or utcnow()
    rows = [
        {
            "endpoint": recipient.endpoint,
            "subject": subject,
            "subject_id": subject_id,
            "seq": seq,
            "type": type,
            "ordered": True,
            "data": {**visitor_data, **(staff_data or {})} if recipient.staff else visitor_data,
            "at": when,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": when,
        }
        for recipient in recipients
        if recipient.staff or not staff_only
    ]
    if rows:
        connection.execute(_INSERT, rows)
    return len(rows)


def enqueue_conversation_event(
    connection: sa.Connection,
    *,
    conversation_id: str,
    seq: int,
    type: str,
    data: dict[str, Any],
    staff_data: dict[str, Any] | None,
    staff_only: bool,
    at: datetime,
) -> None:
    """A conversation's event into the outbox (store/events.py calls it for every event), and
    what the visitor was told into the offline push (visitor.unread)."""
    enqueue(
        connection,
        subject="conversation",
        subject_id=conversation_id,
        seq=seq,
        type=type,
        visitor_data=data,
        staff_data=staff_data,
        staff_only=staff_only,
        at=at,
    )
    pushed = type == EventType.IDLE_WARNING or (
        type == EventType.MESSAGE_CREATED and data.get("sender_role") in _PUSHED_SENDERS
    )
    if pushed and not staff_only:
        # A system message's text is the policy's (the idle warning); a message's is joined
        # in when it is sent.
        preview = data.get("text")
        _enqueue_unread(
            connection,
            conversation_id=conversation_id,
            seq=seq,
            data={"event_type": type}
            | ({"preview": preview[:PREVIEW_CHARS]} if isinstance(preview, str) else {}),
            at=at,
        )


def _enqueue_unread(
    connection: sa.Connection,
    *,
    conversation_id: str,
    seq: int,
    data: dict[str, Any],
    at: datetime,
) -> None:
    routes = _routes(connection)
    recipients = () if routes is None else routes.recipients(VISITOR_UNREAD)
    if not recipients:
        return
    # Sent when due (courier.py decides: at once without an open stream of the visitor's, or
    # once unread that long), and not at all once the visitor has read it.
    connection.execute(
        _INSERT,
        [
            {
                "endpoint": recipient.endpoint,
                "subject": "conversation",
                "subject_id": conversation_id,
                "seq": seq,
                "type": VISITOR_UNREAD,
                "ordered": False,
                "data": data,
                "at": at,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": at,
            }
            for recipient in recipients
        ],
    )


# --- the courier's side -----------------------------------------------------------------------

_EARLIER = sa.orm.aliased(WebhookDelivery)
# Due, unclaimed, and (if ordered) with no earlier delivery of its subject to its endpoint
# still pending: the heads of the lanes.
_DUE = (
    sa.select(col(WebhookDelivery.id))
    .where(
        col(WebhookDelivery.status) == PENDING,
        col(WebhookDelivery.next_attempt_at) <= sa.bindparam("now"),
        sa.or_(
            col(WebhookDelivery.claimed_until).is_(None),
            col(WebhookDelivery.claimed_until) < sa.bindparam("now"),
        ),
        sa.or_(
            sa.not_(col(WebhookDelivery.ordered)),
            ~sa.exists().where(
                _EARLIER.subject_id == WebhookDelivery.subject_id,
                _EARLIER.endpoint == WebhookDelivery.endpoint,
                _EARLIER.subject == WebhookDelivery.subject,
                _EARLIER.ordered,
                _EARLIER.status == PENDING,
                _EARLIER.seq < WebhookDelivery.seq,
            ),
        ),
    )
    .order_by(col(WebhookDelivery.id))
    .limit(sa.bindparam("limit"))
)


@dataclass(frozen=True)
class Outgoing:
    """A delivery a courier holds: what to send, and to which endpoint."""

    id: int
    endpoint: str
    subject: str
    subject_id: str
    seq: int
    type: str
    data: dict[str, Any]
    at: datetime
    attempts: int


def claim_due(
    db: Database, *, endpoints: Sequence[str], hold: timedelta, limit: int
) -> list[Outgoing]:
    """Take up to `limit` deliveries that are due (the first pending one of each subject and
    endpoint) for `hold`: no other courier sends them meanwhile. One killed while it holds them
    loses them to the next look once `hold` has passed (sent again, with the same id)."""
    now = utcnow()
    with db.read() as session:  # most looks find nothing: no write transaction for them
        ids = list(session.execute(_DUE, {"now": now, "limit": limit}).scalars())
    if not ids:
        return []
    with db.write() as session:
        # Again in the claim's transaction: still due, still first of their subjects.
        ids = list(
            session.execute(
                _DUE.where(col(WebhookDelivery.id).in_(ids)), {"now": now, "limit": limit}
            ).scalars()
        )
        claimed = session.execute(
            sa.update(WebhookDelivery)
            .where(
                col(WebhookDelivery.id).in_(ids),
                col(WebhookDelivery.status) == PENDING,
                sa.or_(
                    col(WebhookDelivery.claimed_until).is_(None),
                    col(WebhookDelivery.claimed_until) < now,
                ),
            )
            .values(claimed_until=now + hold)
            .returning(*WebhookDelivery.__table__.columns)  # type: ignore[attr-defined]
        ).all()
    known = set(endpoints)
    outgoing = [
        Outgoing(
            id=row.id,
            endpoint=row.endpoint,
            subject=row.subject,
            subject_id=row.subject_id,
            seq=row.seq,
            type=row.type,
            data=row.data or {},
            at=row.at,
            attempts=row.attempts,
        )
        for row in claimed
    ]
    orphans = [item.id for item in outgoing if item.endpoint not in known]
    if orphans:  # its endpoint left the policy: nothing to send it to
        with db.write() as session:
            session.execute(
                sa.update(WebhookDelivery)
                .where(col(WebhookDelivery.id).in_(orphans))
                .values(status=FAILED, claimed_until=None, last_error="endpoint not in the policy")
            )
    return sorted((item for item in outgoing if item.endpoint in known), key=lambda o: o.id)


@dataclass(frozen=True)
class MessageInfo:
    """What a delivery of a conversation's message joins in when it is sent."""

    content: str | None
    visitor_read_seq: int
    visitor_stream_until: datetime | None
    customer_id: str


def message_info(db: Database, *, conversation_id: str, seq: int) -> MessageInfo | None:
    """The message at `seq` (its text, None for another event) and how far the visitor has
    read, for a delivery of it; None if the conversation is gone."""
    with db.read() as session:
        row = session.execute(
            sa.select(
                col(Conversation.visitor_read_seq),
                col(Conversation.visitor_stream_until),
                col(Conversation.customer_id),
            ).where(col(Conversation.id) == conversation_id)
        ).first()
        if row is None:
            return None
        content = session.execute(
            sa.select(col(Message.content)).where(
                col(Message.conversation_id) == conversation_id, col(Message.seq) == seq
            )
        ).scalar()
    return MessageInfo(content, row[0], row[1], row[2])


def record_delivered(db: Database, delivery_id: int) -> None:
    with db.write() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(col(WebhookDelivery.id) == delivery_id)
            .values(
                status=DELIVERED,
                attempts=col(WebhookDelivery.attempts) + 1,
                delivered_at=utcnow(),
                claimed_until=None,
                last_error=None,
            )
        )


def record_failed(db: Database, delivery_id: int, *, error: str, retry_at: datetime | None) -> None:
    """A failed attempt: tried again at `retry_at`, or (None) given up."""
    values: dict[str, Any] = {
        "attempts": col(WebhookDelivery.attempts) + 1,
        "claimed_until": None,
        "last_error": error[:300],
    }
    if retry_at is None:
        values["status"] = FAILED
    else:
        values["next_attempt_at"] = retry_at
    with db.write() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(col(WebhookDelivery.id) == delivery_id)
            .values(**values)
        )


def postpone(db: Database, delivery_id: int, *, until: datetime) -> None:
    """Not due yet after all (a visitor.unread while the visitor may still read it)."""
    with db.write() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(col(WebhookDelivery.id) == delivery_id)
            .values(next_attempt_at=until, claimed_until=None)
        )


def skip_read(db: Database, delivery_id: int) -> None:
    """A visitor.unread for a message the visitor has read: nothing to push."""
    with db.write() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(col(WebhookDelivery.id) == delivery_id)
            .values(status=SKIPPED, claimed_until=None)
        )


# --- ops --------------------------------------------------------------------------------------


def list_deliveries(
    db: Database,
    *,
    status: DeliveryStatus | None,
    endpoint: str | None,
    after: int,
    limit: int,
) -> list[WebhookDelivery]:
    """Deliveries in id order after `after`, of a status and endpoint if given."""
    query = sa.select(WebhookDelivery).where(col(WebhookDelivery.id) > after)
    if status is not None:
        query = query.where(col(WebhookDelivery.status) == status)
    if endpoint is not None:
        query = query.where(col(WebhookDelivery.endpoint) == endpoint)
    with db.read() as session:
        return list(session.execute(query.order_by(col(WebhookDelivery.id)).limit(limit)).scalars())


def redeliver(db: Database, delivery_id: int) -> WebhookDelivery | None:
    """Send it again now, with its id (delivered or given up); None if there is none."""
    with db.write() as session:
        delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery is None:
            return None
        delivery.status = PENDING
        delivery.next_attempt_at = utcnow()
        delivery.claimed_until = None
        session.add(delivery)
        session.flush()
        return delivery


def delivery_counts(db: Database) -> dict[str, int]:
    """How many deliveries are pending (owed) and failed (given up)."""
    with db.read() as session:
        counted = dict(
            session.execute(
                sa.select(col(WebhookDelivery.status), sa.func.count())
                .where(col(WebhookDelivery.status).in_([PENDING, FAILED]))
                .group_by(col(WebhookDelivery.status))
            ).all()
        )
    return {PENDING: counted.get(PENDING, 0), FAILED: counted.get(FAILED, 0)}


def erase_deliveries(session: Session, conversation_id: str, erased: Callable[..., Any]) -> None:
    """The text the conversation's owed deliveries carry (a note to a staff endpoint), erased
    as the conversation's events are (store/erasure.py hands its function)."""
    rows = session.execute(
        sa.select(
            col(WebhookDelivery.id), col(WebhookDelivery.type), col(WebhookDelivery.data)
        ).where(
            col(WebhookDelivery.subject) == "conversation",
            col(WebhookDelivery.subject_id) == conversation_id,
        )
    ).all()
    for delivery_id, event_type, data in rows:
        changed = erased(event_type, data)
        if changed != data:
            session.execute(
                sa.update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id)
                .values(data=changed)
            )
