"""Tickets (工单): every write in one locked transaction with its events, written through the
one ticket-event writer (`append_ticket_event`), and the SLA's next timer worked out from the
stored ticket (`ticket_plan`) for its workflow, which acts on a timer only if the stored
ticket still has it due (`act_on_timer`, invariant 8).

Who may change a status how (TRANSITIONS): staff move a ticket along; a customer's reply
reopens a pending or solved one; the workflow closes pending and solved ones on time. The
workflow owns the timers; a person's change is checked here, in the transaction that writes
it (no timer decides it), and its workflow is told to plan again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from domain.policy import Policy
from domain.types import (
    Audience,
    EventType,
    Role,
    TicketEventType,
    TicketPlan,
    TicketPriority,
    TicketStatus,
    TicketTimer,
)
from store import webhooks
from store.assignment import agent_skill_groups
from store.db import Database
from store.erasure import ERASED, erased
from store.events import ConversationNotFound, append_event
from store.models import (
    Agent,
    Conversation,
    LeftMessage,
    Ticket,
    TicketComment,
    TicketEvent,
    TicketLink,
    utcnow,
)

# A status change staff may ask for: (from, to).
TRANSITIONS = frozenset(
    {
        (TicketStatus.OPEN, TicketStatus.PENDING),
        (TicketStatus.OPEN, TicketStatus.SOLVED),
        (TicketStatus.PENDING, TicketStatus.OPEN),
        (TicketStatus.PENDING, TicketStatus.SOLVED),
        (TicketStatus.SOLVED, TicketStatus.OPEN),
        (TicketStatus.SOLVED, TicketStatus.CLOSED),
    }
)
# What a customer's reply does to a ticket's status (those not named keep theirs).
REOPENED_BY_CUSTOMER = frozenset({TicketStatus.PENDING, TicketStatus.SOLVED})
# Why a ticket closed by itself.
AUTO_CLOSED = "auto_closed"


class TicketNotFound(LookupError):
    pass


class TicketClosed(Exception):
    """A closed ticket takes no more changes or comments."""


class StatusChangeRefused(Exception):
    """Not a change staff may make from the ticket's status (TRANSITIONS)."""


class NotTicketStaff(Exception):
    """The agent is not of the ticket's (or the asked) group."""


class UnknownAgent(LookupError):
    """No such agent, or not of the ticket's group: it cannot be assigned."""


class LinkRefused(Exception):
    """The conversation or left message is another customer's, or does not exist."""


class LeftMessageTaken(Exception):
    """The left message was resolved already (by a call back, or another ticket)."""


# --- the one ticket-event writer ------------------------------------------------------------

_NEXT_TICKET_SEQ = (
    sa.update(Ticket)
    .where(col(Ticket.id) == sa.bindparam("of_ticket"))
    .values(last_seq=col(Ticket.last_seq) + 1)
    .returning(col(Ticket.last_seq))
)


def append_ticket_event(
    session: Session,
    *,
    ticket_id: int,
    type: str,
    data: dict[str, Any] | None = None,
    staff_data: dict[str, Any] | None = None,
    staff_only: bool = False,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> TicketEvent:
    """Write one event of the ticket inside the caller's transaction, with the ticket's next
    seq (no gaps); with a dedupe_key, at most once. `data` is what everyone who reads the
    ticket reads (the app, for its customer), unless `staff_only`; `staff_data` what staff
    alone read of it. Every ticket event is written here."""
    session.flush()
    if dedupe_key is not None:
        existing = session.exec(
            select(TicketEvent).where(
                TicketEvent.ticket_id == ticket_id, TicketEvent.dedupe_key == dedupe_key
            )
        ).first()
        if existing is not None:
            return existing
    seq = session.connection().execute(_NEXT_TICKET_SEQ, {"of_ticket": ticket_id}).scalar()
    if seq is None:
        raise TicketNotFound(ticket_id)
    event = TicketEvent(
        ticket_id=ticket_id,
        seq=seq,
        type=type,
        data=data or {},
        staff_data=staff_data or None,
        audience=Audience.STAFF if staff_only else Audience.ALL,
        dedupe_key=dedupe_key,
        at=at or utcnow(),
    )
    session.add(event)
    session.flush()
    # Owed to the webhooks that asked for it, in the same transaction (ids, never text).
    webhooks.enqueue(
        session,
        subject="ticket",
        subject_id=str(ticket_id),
        seq=seq,
        type=type,
        visitor_data=event.data,
        staff_data=event.staff_data,
        staff_only=staff_only,
        at=event.at,
    )
    # The ORM's copy of the ticket (if loaded) must not write its stale last_seq back.
    for held in session.identity_map.values():
        if isinstance(held, Ticket) and held.id == ticket_id:
            set_committed_value(held, "last_seq", seq)
    return event


# --- SLA ------------------------------------------------------------------------------------


def sla_targets(
    policy: Policy, *, priority: str, skill_group: str, since: datetime
) -> tuple[datetime | None, datetime | None]:
    """When the first response and the resolution are due for a ticket of this priority and
    group made at `since`: in the group's business hours if it has [hours]."""
    sla = policy.sla_for(priority)
    if sla is None:
        return None, None
    hours = policy.group(skill_group).hours if skill_group in policy.skill_group_names else None

    def due(duration: Any) -> datetime | None:
        if duration is None:
            return None
        return since + duration if hours is None else hours.after_open_time(since, duration)

    return due(sla.first_response), due(sla.resolution)


def _timers(ticket: Ticket, policy: Policy, at: datetime) -> list[tuple[datetime, TicketTimer]]:
    """The timers the stored ticket has pending at `at`, each with when it is due."""
    timers: list[tuple[datetime, TicketTimer]] = []
    status = TicketStatus(ticket.status)
    if status in (TicketStatus.OPEN, TicketStatus.PENDING):
        sla = policy.sla_for(ticket.priority)
        remind = sla.remind_before if sla is not None else None
        targets = (
            (
                ticket.first_response_due_at,
                ticket.first_responded_at is None and ticket.first_response_breached_at is None,
                ticket.first_response_reminded,
                TicketTimer.FIRST_RESPONSE_REMINDER,
                TicketTimer.FIRST_RESPONSE_BREACH,
            ),
            (
                ticket.resolution_due_at,
                ticket.resolution_breached_at is None,
                ticket.resolution_reminded,
                TicketTimer.RESOLUTION_REMINDER,
                TicketTimer.RESOLUTION_BREACH,
            ),
        )
        for due, pending, reminded, reminder, breach in targets:
            if due is None or not pending:
                continue
            # A reminder only before its breach: once the breach is due, the breach it is.
            if remind is not None and not reminded and at < due:
                timers.append((due - remind, reminder))
            timers.append((due, breach))
    tickets = policy.tickets
    if status == TicketStatus.PENDING:
        timers.append(
            (ticket.status_since + tickets.pending_close_after, TicketTimer.PENDING_CLOSE)
        )
    if status == TicketStatus.SOLVED:
        timers.append((ticket.status_since + tickets.solved_close_after, TicketTimer.SOLVED_CLOSE))
    return sorted(timers)


def _breach_at(ticket: Ticket) -> datetime | None:
    """The earliest SLA target neither met nor breached (None: none)."""
    if ticket.status not in (TicketStatus.OPEN, TicketStatus.PENDING):
        return None
    pending = []
    if (
        ticket.first_response_due_at is not None
        and ticket.first_responded_at is None
        and ticket.first_response_breached_at is None
    ):
        pending.append(ticket.first_response_due_at)
    if ticket.resolution_due_at is not None and ticket.resolution_breached_at is None:
        pending.append(ticket.resolution_due_at)
    return min(pending, default=None)


def _plan(ticket: Ticket, policy: Policy, at: datetime) -> TicketPlan:
    timers = _timers(ticket, policy, at)
    due_at, timer = timers[0] if timers else (None, None)
    return TicketPlan(
        status=ticket.status,
        priority=ticket.priority,
        assignee_id=ticket.assignee_id,
        version=ticket.version,
        timer=timer,
        due_at=due_at,
        sla_breach_at=_breach_at(ticket),
    )


def ticket_plan(db: Database, *, policy: Policy, ticket_id: int, at: datetime) -> TicketPlan:
    """The stored ticket, and the timer its workflow waits for next; recorded as read by its
    workflow (`told_version`), so the reconciler leaves it be."""
    with db.write() as session:
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            raise TicketNotFound(ticket_id)
        session.execute(
            sa.update(Ticket)
            .where(col(Ticket.id) == ticket_id, col(Ticket.told_version) < ticket.version)
            .values(told_version=ticket.version)
        )
        return _plan(ticket, policy, at)


@dataclass(frozen=True)
class UntoldTicket:
    ticket_id: int
    version: int


def untold_tickets(db: Database, *, older_than: timedelta, limit: int) -> list[UntoldTicket]:
    """Tickets whose workflow has not read their newest change `older_than` after it: the
    API's signal was lost to a crash or an engine outage.
    At most `limit`, the longest untold first."""
    with db.read() as session:
        rows = session.execute(
            sa.select(col(Ticket.id), col(Ticket.version))
            .where(
                col(Ticket.told_version) < col(Ticket.version),
                col(Ticket.updated_at) < utcnow() - older_than,
            )
            .order_by(col(Ticket.updated_at))
            .limit(limit)
        ).all()
    return [UntoldTicket(ticket_id, version) for ticket_id, version in rows]


def act_on_timer(
    db: Database, *, policy: Policy, ticket_id: int, timer: TicketTimer, at: datetime
) -> bool:
    """What a timer of the ticket's workflow does, if the stored ticket still has it due at
    `at` (a status, a priority or a first response changed meanwhile: declined, False).
    Reminder → `ticket.sla_reminder`; breach → `ticket.sla_breached` and the escalation the
    priority's SLA asks for; pending or solved too long → closed. Written once (dedupe)."""
    with db.write() as session:
        ticket = session.get(Ticket, ticket_id, with_for_update=True)
        if ticket is None:
            raise TicketNotFound(ticket_id)
        due = dict((kind, when) for when, kind in _timers(ticket, policy, at))
        if timer not in due or due[timer] > at:
            return False
        key = f"{timer}:{ticket.version}"
        sla_name = "first_response" if timer.startswith("first_response") else "resolution"
        when = due[timer]
        if timer in (TicketTimer.FIRST_RESPONSE_REMINDER, TicketTimer.RESOLUTION_REMINDER):
            if timer == TicketTimer.FIRST_RESPONSE_REMINDER:
                ticket.first_response_reminded = True
            else:
                ticket.resolution_reminded = True
            breach_at = (
                ticket.first_response_due_at
                if timer == TicketTimer.FIRST_RESPONSE_REMINDER
                else ticket.resolution_due_at
            )
            assert breach_at is not None
            _touch(session, ticket)
            append_ticket_event(
                session,
                ticket_id=ticket_id,
                type=TicketEventType.SLA_REMINDER,
                data={"sla": sla_name, "breach_at": breach_at.isoformat()},
                staff_only=True,
                dedupe_key=key,
                at=at,
            )
        elif timer in (TicketTimer.FIRST_RESPONSE_BREACH, TicketTimer.RESOLUTION_BREACH):
            if timer == TicketTimer.FIRST_RESPONSE_BREACH:
                ticket.first_response_breached_at = when
            else:
                ticket.resolution_breached_at = when
            _touch(session, ticket)
            append_ticket_event(
                session,
                ticket_id=ticket_id,
                type=TicketEventType.SLA_BREACHED,
                data={"sla": sla_name, "due_at": when.isoformat()},
                staff_only=True,
                dedupe_key=key,
                at=at,
            )
            _escalate(session, ticket, policy, sla_name=sla_name, at=at)
        else:
            _set_status(
                session,
                ticket,
                TicketStatus.CLOSED,
                at=at,
                by_role=Role.SYSTEM,
                reason=AUTO_CLOSED,
                dedupe_key=key,
            )
        return True


def _escalate(
    session: Session, ticket: Ticket, policy: Policy, *, sla_name: str, at: datetime
) -> None:
    """The escalation the ticket's priority's SLA asks for on a breach, if any."""
    sla = policy.sla_for(ticket.priority)
    if sla is None or not (sla.escalate_priority or sla.escalate_to):
        return
    changes: dict[str, Any] = {}
    if sla.escalate_priority:
        raised = TicketPriority(ticket.priority).raised()
        if raised != ticket.priority:
            ticket.priority = raised
            changes["priority"] = raised.value
    if sla.escalate_to and sla.escalate_to != ticket.skill_group:
        ticket.skill_group = sla.escalate_to
        ticket.assignee_id = None  # to the group's pool
        changes["skill_group"] = sla.escalate_to
        changes["assignee_id"] = None
    if not changes:
        return
    _touch(session, ticket)
    append_ticket_event(
        session,
        ticket_id=ticket.id or 0,
        type=TicketEventType.ESCALATED,
        data={"sla": sla_name, **changes},
        staff_only=True,
        dedupe_key=f"escalated:{sla_name}",
        at=at,
    )


def _touch(session: Session, ticket: Ticket, at: datetime | None = None) -> None:
    ticket.version += 1
    ticket.updated_at = at or utcnow()
    session.add(ticket)


def _set_status(
    session: Session,
    ticket: Ticket,
    status: TicketStatus,
    *,
    at: datetime,
    by_role: str,
    reason: str | None = None,
    dedupe_key: str | None = None,
) -> None:
    previous = ticket.status
    ticket.status = status
    ticket.status_since = at
    if status == TicketStatus.CLOSED:
        ticket.closed_at = at
    _touch(session, ticket, at)
    data: dict[str, Any] = {"status": str(status), "previous": previous, "by_role": str(by_role)}
    if reason is not None:
        data["reason"] = reason
    append_ticket_event(
        session,
        ticket_id=ticket.id or 0,
        type=TicketEventType.STATUS_CHANGED,
        data=data,
        dedupe_key=dedupe_key,
        at=at,
    )


# --- staff's and the app's writes ----------------------------------------------------------


@dataclass(frozen=True)
class Author:
    """Who writes: staff (their role and id), the app for its customer, or the system."""

    role: Role
    id: str

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.AGENT, Role.SUPERVISOR, Role.ADMIN)


def _groups(session: Session, author: Author, supervised: frozenset[str]) -> frozenset[str] | None:
    """The groups whose tickets the author works on (None: every group)."""
    if author.role in (Role.ADMIN, Role.APP, Role.SYSTEM):
        return None
    if author.role == Role.SUPERVISOR:
        return supervised
    return frozenset(agent_skill_groups(session, author.id))


def may_work_on(
    session: Session, ticket: Ticket, author: Author, supervised: frozenset[str]
) -> bool:
    """Admins, the app (its customers' tickets), agents of the ticket's group or its
    assignee, supervisors of its group."""
    groups = _groups(session, author, supervised)
    if groups is None:
        return True
    return ticket.skill_group in groups or (
        author.role == Role.AGENT and ticket.assignee_id == author.id
    )


def _check_assignee(session: Session, skill_group: str, assignee_id: str | None) -> None:
    if assignee_id is None:
        return
    agent = session.get(Agent, assignee_id)
    if agent is None or agent.disabled or skill_group not in agent_skill_groups(session, agent.id):
        raise UnknownAgent(assignee_id)


@dataclass(frozen=True)
class NewTicket:
    subject: str
    description: str = ""
    priority: TicketPriority = TicketPriority.NORMAL
    skill_group: str | None = None  # None: the conversation's, or the policy's default
    assignee_id: str | None = None
    customer_id: str | None = None  # None: the conversation's or the left message's
    conversation_id: str | None = None
    left_message_id: int | None = None


def create_ticket(
    db: Database,
    *,
    policy: Policy,
    new: NewTicket,
    author: Author,
    supervised: frozenset[str] = frozenset(),
    may_use_conversation: Any = None,
) -> Ticket:
    """Store a ticket with its `ticket.created` event: from a conversation (linked, its
    customer's context copied), from a left message (linked with its conversation, and
    resolved), or for a customer. `may_use_conversation(conversation) -> bool` says whether
    the author may make a ticket of that conversation. Errors: ConversationNotFound,
    LinkRefused (an unknown left message, or another customer's), LeftMessageTaken,
    NotTicketStaff, UnknownAgent."""
    now = utcnow()
    with db.write() as session:
        conversation: Conversation | None = None
        left: LeftMessage | None = None
        if new.left_message_id is not None:
            left = session.get(LeftMessage, new.left_message_id, with_for_update=True)
            if left is None:
                raise LinkRefused(f"left message {new.left_message_id}")
            if left.status != "open":
                raise LeftMessageTaken(new.left_message_id)
            if new.conversation_id not in (None, left.conversation_id):
                raise LinkRefused("the left message is of another conversation")
        conversation_id = new.conversation_id or (left.conversation_id if left else None)
        if conversation_id is not None:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None:
                raise ConversationNotFound(conversation_id)
            # A left message's conversation is its group's to work on (checked below).
            explicit = new.conversation_id is not None
            if explicit and may_use_conversation is not None:
                if not may_use_conversation(conversation):
                    raise NotTicketStaff(conversation_id)
        customer_id = (
            conversation.customer_id
            if conversation is not None
            else left.customer_id
            if left is not None
            else new.customer_id
        )
        if customer_id is None:
            raise LinkRefused("a ticket needs a customer, a conversation or a left message")
        if new.customer_id is not None and new.customer_id != customer_id:
            raise LinkRefused("the conversation is another customer's")
        skill_group = (
            new.skill_group
            or (left.skill_group if left is not None else None)
            or (conversation.skill_group if conversation is not None else None)
            or policy.default_skill_group
        )
        if skill_group not in policy.skill_group_names:
            raise LinkRefused(f"unknown skill group {skill_group!r}")
        groups = _groups(session, author, supervised)
        if groups is not None and skill_group not in groups:
            raise NotTicketStaff(skill_group)
        if groups is not None and left is not None and left.skill_group not in groups:
            raise NotTicketStaff(left.id)  # a left message of another group's
        assignee_id = new.assignee_id
        if assignee_id is None and author.role == Role.AGENT:
            assignee_id = author.id  # who makes it works it, unless they name someone
        _check_assignee(session, skill_group, assignee_id)
        first_due, resolution_due = sla_targets(
            policy, priority=new.priority, skill_group=skill_group, since=now
        )
        ticket = Ticket(
            subject=new.subject,
            description=new.description,
            status=TicketStatus.OPEN,
            priority=new.priority,
            skill_group=skill_group,
            assignee_id=assignee_id,
            customer_id=customer_id,
            attributes=conversation.attributes if conversation is not None else None,
            order_id=conversation.order_id if conversation is not None else None,
            created_by_role=author.role,
            created_by_id=author.id,
            created_at=now,
            updated_at=now,
            status_since=now,
            first_response_due_at=first_due,
            resolution_due_at=resolution_due,
            version=1,
        )
        session.add(ticket)
        session.flush()
        assert ticket.id is not None
        append_ticket_event(
            session,
            ticket_id=ticket.id,
            type=TicketEventType.CREATED,
            data={"status": ticket.status, "priority": ticket.priority},
            staff_data={
                "skill_group": skill_group,
                "assignee_id": assignee_id,
                "by_role": author.role,
                "by_id": author.id,
            },
            at=now,
        )
        if conversation is not None:
            _link(session, ticket, conversation_id=conversation.id)
        if left is not None:
            _link(session, ticket, left_message_id=left.id)
            left.status = "resolved"
            left.resolved_at = now
            left.resolved_by = author.id
            left.resolution_note = f"ticket {ticket.id}"
            session.add(left)
            append_event(
                session,
                conversation_id=left.conversation_id,
                type=EventType.LEFT_MESSAGE_RESOLVED,
                data={"left_message_id": left.id},
                staff_data={"resolved_by": author.id, "ticket_id": ticket.id},
            )
        return ticket


def _link(
    session: Session,
    ticket: Ticket,
    *,
    conversation_id: str | None = None,
    left_message_id: int | None = None,
) -> bool:
    """Link once; False if it was linked already."""
    assert ticket.id is not None
    existing = session.exec(
        select(TicketLink).where(
            TicketLink.ticket_id == ticket.id,
            TicketLink.conversation_id == conversation_id
            if conversation_id is not None
            else TicketLink.left_message_id == left_message_id,
        )
    ).first()
    if existing is not None:
        return False
    session.add(
        TicketLink(
            ticket_id=ticket.id, conversation_id=conversation_id, left_message_id=left_message_id
        )
    )
    append_ticket_event(
        session,
        ticket_id=ticket.id,
        type=TicketEventType.LINKED,
        data={"conversation_id": conversation_id, "left_message_id": left_message_id},
        staff_only=True,
    )
    return True


def _load(session: Session, ticket_id: int, author: Author, supervised: frozenset[str]) -> Ticket:
    ticket = session.get(Ticket, ticket_id, with_for_update=True)
    if ticket is None:
        raise TicketNotFound(ticket_id)
    if not may_work_on(session, ticket, author, supervised):
        raise NotTicketStaff(ticket_id)
    return ticket


_UNCHANGED: Any = object()


def update_ticket(
    db: Database,
    *,
    policy: Policy,
    ticket_id: int,
    author: Author,
    supervised: frozenset[str] = frozenset(),
    status: TicketStatus | None = None,
    priority: TicketPriority | None = None,
    assignee_id: str | None = _UNCHANGED,
) -> Ticket:
    """Change the status (as TRANSITIONS allow), the priority or the assignee (None: the
    group's pool), each with its event. Errors: TicketNotFound, NotTicketStaff, TicketClosed,
    StatusChangeRefused, UnknownAgent."""
    now = utcnow()
    with db.write() as session:
        ticket = _load(session, ticket_id, author, supervised)
        if ticket.status == TicketStatus.CLOSED:
            raise TicketClosed(ticket_id)
        if status is not None and status != ticket.status:
            if (TicketStatus(ticket.status), status) not in TRANSITIONS:
                raise StatusChangeRefused(f"{ticket.status} → {status}")
            _set_status(session, ticket, status, at=now, by_role=author.role)
        if priority is not None and priority != ticket.priority:
            ticket.priority = priority
            # The new priority's targets, from the ticket's creation, for those still running.
            first_due, resolution_due = sla_targets(
                policy, priority=priority, skill_group=ticket.skill_group, since=ticket.created_at
            )
            if ticket.first_responded_at is None and ticket.first_response_breached_at is None:
                ticket.first_response_due_at = first_due
                ticket.first_response_reminded = False
            if ticket.resolution_breached_at is None:
                ticket.resolution_due_at = resolution_due
                ticket.resolution_reminded = False
            _touch(session, ticket, now)
            append_ticket_event(
                session,
                ticket_id=ticket_id,
                type=TicketEventType.PRIORITY_CHANGED,
                data={"priority": priority.value},
                staff_data={"by_id": author.id},
                at=now,
            )
        if assignee_id is not _UNCHANGED and assignee_id != ticket.assignee_id:
            _check_assignee(session, ticket.skill_group, assignee_id)
            ticket.assignee_id = assignee_id
            _touch(session, ticket, now)
            append_ticket_event(
                session,
                ticket_id=ticket_id,
                type=TicketEventType.ASSIGNED,
                data={"assignee_id": assignee_id, "skill_group": ticket.skill_group},
                staff_data={"by_id": author.id},
                staff_only=True,
                at=now,
            )
        return ticket


def add_comment(
    db: Database,
    *,
    ticket_id: int,
    author: Author,
    content: str,
    public: bool,
    supervised: frozenset[str] = frozenset(),
) -> tuple[Ticket, TicketComment]:
    """A comment with its `ticket.commented` event (an internal one: staff only). Staff's
    first public comment meets the first-response target; a customer's reply (the app's)
    reopens a pending or solved ticket. Errors: TicketNotFound, NotTicketStaff,
    TicketClosed."""
    now = utcnow()
    with db.write() as session:
        ticket = _load(session, ticket_id, author, supervised)
        if ticket.status == TicketStatus.CLOSED:
            raise TicketClosed(ticket_id)
        role = "customer" if author.role == Role.APP else author.role.value
        author_id = ticket.customer_id if author.role == Role.APP else author.id
        comment = TicketComment(
            ticket_id=ticket_id,
            author_role=role,
            author_id=author_id,
            public=public,
            content=content,
            created_at=now,
        )
        session.add(comment)
        session.flush()
        _touch(session, ticket, now)
        append_ticket_event(
            session,
            ticket_id=ticket_id,
            type=TicketEventType.COMMENTED,
            data={"comment_id": comment.id, "author_role": role, "public": public},
            staff_data=None if role == "customer" else {"author_id": author_id},
            staff_only=not public,
            at=now,
        )
        if author.is_staff and public and ticket.first_responded_at is None:
            ticket.first_responded_at = now
        if role == "customer" and ticket.status in REOPENED_BY_CUSTOMER:
            previous = ticket.status
            _set_status(session, ticket, TicketStatus.OPEN, at=now, by_role="customer")
            append_ticket_event(
                session,
                ticket_id=ticket_id,
                type=TicketEventType.REOPENED,
                data={"previous": previous},
                at=now,
            )
        return ticket, comment


def link_to_ticket(
    db: Database,
    *,
    ticket_id: int,
    author: Author,
    supervised: frozenset[str] = frozenset(),
    conversation_id: str | None = None,
    left_message_id: int | None = None,
) -> Ticket:
    """Link a conversation or a left message of the ticket's customer (linked already: no
    change). Errors: TicketNotFound, NotTicketStaff, LinkRefused."""
    with db.write() as session:
        ticket = _load(session, ticket_id, author, supervised)
        if conversation_id is not None:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None or conversation.customer_id != ticket.customer_id:
                raise LinkRefused("not a conversation of the ticket's customer")
        if left_message_id is not None:
            left = session.get(LeftMessage, left_message_id)
            if left is None or left.customer_id != ticket.customer_id:
                raise LinkRefused("not a left message of the ticket's customer")
        if _link(session, ticket, conversation_id=conversation_id, left_message_id=left_message_id):
            _touch(session, ticket)
        return ticket


# --- reads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketDetail:
    ticket: Ticket
    comments: list[TicketComment]
    links: list[TicketLink]


def ticket_detail(
    db: Database,
    *,
    ticket_id: int,
    author: Author,
    supervised: frozenset[str] = frozenset(),
    staff: bool,
) -> TicketDetail:
    """The ticket, its comments (internal ones for staff alone) and its links."""
    with db.read() as session:
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            raise TicketNotFound(ticket_id)
        if not may_work_on(session, ticket, author, supervised):
            raise NotTicketStaff(ticket_id)
        query = select(TicketComment).where(TicketComment.ticket_id == ticket_id)
        if not staff:
            query = query.where(col(TicketComment.public).is_(True))
        comments = list(session.exec(query.order_by(col(TicketComment.id))))
        links = list(
            session.exec(
                select(TicketLink)
                .where(TicketLink.ticket_id == ticket_id)
                .order_by(col(TicketLink.id))
            )
        )
        return TicketDetail(ticket, comments, links)


def _breached() -> sa.ColumnElement[bool]:
    return sa.or_(
        col(Ticket.first_response_breached_at).is_not(None),
        col(Ticket.resolution_breached_at).is_not(None),
    )


def list_tickets(
    db: Database,
    *,
    author: Author,
    supervised: frozenset[str] = frozenset(),
    status: Sequence[TicketStatus] = (),
    skill_group: str | None = None,
    assignee_id: str | None = None,
    unassigned: bool | None = None,
    breached: bool | None = None,
    customer_id: str | None = None,
    after: int = 0,
    limit: int = 50,
) -> list[Ticket]:
    """A page of tickets, by id, after the id `after`: those the author works on (an agent's
    groups' and their own, a supervisor's groups', all for admins and the app). `unassigned`
    true: the groups' pools alone; false: assigned ones alone."""
    query = select(Ticket).where(col(Ticket.id) > after)
    if status:
        query = query.where(col(Ticket.status).in_(list(status)))
    if skill_group is not None:
        query = query.where(Ticket.skill_group == skill_group)
    if assignee_id is not None:
        query = query.where(Ticket.assignee_id == assignee_id)
    if unassigned is not None:
        pooled = col(Ticket.assignee_id).is_(None)
        query = query.where(pooled if unassigned else sa.not_(pooled))
    if customer_id is not None:
        query = query.where(Ticket.customer_id == customer_id)
    if breached is not None:
        query = query.where(_breached() if breached else sa.not_(_breached()))
    with db.read() as session:
        groups = _groups(session, author, supervised)
        if groups is not None:
            mine = col(Ticket.skill_group).in_(sorted(groups))
            if author.role == Role.AGENT:
                mine = sa.or_(mine, Ticket.assignee_id == author.id)
            query = query.where(mine)
        return list(session.exec(query.order_by(col(Ticket.id)).limit(limit)))


def ticket_events_after(
    db: Database, *, ticket_id: int, after_seq: int, limit: int, staff: bool
) -> list[tuple[TicketEvent, dict[str, Any]]]:
    """A page of the ticket's events in seq order, each with its data as the reader reads it
    (staff: `data` with `staff_data` over it; the app: public events' `data` alone)."""
    query = select(TicketEvent).where(
        TicketEvent.ticket_id == ticket_id, col(TicketEvent.seq) > after_seq
    )
    if not staff:
        query = query.where(TicketEvent.audience == Audience.ALL)
    with db.read() as session:
        events = list(session.exec(query.order_by(col(TicketEvent.seq)).limit(limit)))
    return [
        (event, {**event.data, **(event.staff_data or {})} if staff else event.data)
        for event in events
    ]


def ticket_figures(db: Database, *, skill_groups: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Per group: (open tickets — open or pending —, of them breached)."""
    if not skill_groups:
        return {}
    active = col(Ticket.status).in_([TicketStatus.OPEN, TicketStatus.PENDING])
    with db.read() as session:
        rows = session.execute(
            sa.select(
                col(Ticket.skill_group),
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((_breached(), 1), else_=0)), 0),
            )
            .where(active, col(Ticket.skill_group).in_(list(skill_groups)))
            .group_by(col(Ticket.skill_group))
        ).all()
    return {group: (int(count), int(breached)) for group, count, breached in rows}


def _erase_tickets(session: Session, tickets: Sequence[Ticket]) -> None:
    """The tickets' text (subject, description, the context copied from the app, every
    comment) replaced by the marker; their shape (status, times, events) stays."""
    for ticket in tickets:
        ticket.subject = ERASED
        ticket.description = ERASED
        ticket.attributes = erased(ticket.attributes)
        ticket.order_id = None if ticket.order_id is None else ERASED
        session.add(ticket)
    if tickets:
        session.execute(
            sa.update(TicketComment)
            .where(col(TicketComment.ticket_id).in_([ticket.id for ticket in tickets]))
            .values(content=ERASED)
        )


def erase_customer_tickets(db: Database, *, customer_id: str) -> int:
    """A customer's erase (api/routes/customers.py): the text of their tickets erased, in one
    transaction. How many tickets."""
    with db.write() as session:
        tickets = list(
            session.exec(select(Ticket).where(Ticket.customer_id == customer_id).with_for_update())
        )
        _erase_tickets(session, tickets)
        return len(tickets)


def erase_expired_tickets(db: Database, *, older_than: timedelta, limit: int) -> tuple[int, bool]:
    """The retention run's: the text of up to `limit` tickets closed more than `older_than` ago
    and not erased yet (a closed ticket takes no new text), the longest closed first, in one
    transaction; how many, and whether `limit` were due (more may be)."""
    # A customer's erase may have come first, and comments after it (the ticket still open).
    unerased_comment = (
        sa.exists()
        .where(col(TicketComment.ticket_id) == col(Ticket.id))
        .where(col(TicketComment.content) != ERASED)
    )
    with db.write() as session:
        tickets = list(
            session.exec(
                select(Ticket)
                .where(
                    Ticket.status == TicketStatus.CLOSED,
                    col(Ticket.closed_at) < utcnow() - older_than,
                    sa.or_(col(Ticket.subject) != ERASED, unerased_comment),
                )
                .order_by(col(Ticket.closed_at), col(Ticket.id))
                .limit(limit)
                .with_for_update()
            )
        )
        _erase_tickets(session, tickets)
    return len(tickets), len(tickets) == limit
