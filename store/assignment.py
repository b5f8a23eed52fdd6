"""Queues and assignment: joining a skill group's queue, pairing its head with an agent,
releasing the agent, telling waiting visitors their place.

Invariant 3 of the design: the capacity check and the assignment happen in one transaction.
The queue head is row-locked (PostgreSQL) or the whole write is serialised (SQLite); the agent's
load is raised by a conditional UPDATE that re-checks capacity under the row lock, so no agent
ever exceeds `max_concurrent` and no conversation is assigned twice, whatever runs at once.
Invariant 4: joining and serving one group's queue are serialised (lock_queue), so enqueue
times follow commit order and nobody is served before an earlier arrival.

Lock order of an assignment: the group's queue lock, the queue entries, the chosen agent's row,
the conversation's row (a lifecycle write locks the conversation's entry before anything else,
store/lifecycle.py). What it only reads (skills, skips, who else is online) it does not lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from domain.queueing import moved
from domain.types import AgentStatus, ConversationState, EventType, Role
from store.db import Database
from store.estimate import group_pace
from store.events import append_events
from store.models import (
    Agent,
    AgentSkill,
    Assignment,
    Conversation,
    QueueEntry,
    QueueSkip,
    utcnow,
)


@dataclass(frozen=True)
class NewAssignment:
    conversation_id: str
    agent_id: str
    skill_group: str


def queue_order() -> tuple[sa.ColumnElement[object], ...]:
    """Higher priority first, then first come first served (the ticket breaks ties)."""
    return (
        col(QueueEntry.priority).desc(),
        col(QueueEntry.enqueued_at).asc(),
        col(QueueEntry.id).asc(),
    )


def _skips(conversation_id: str, agent_id: sa.ColumnElement[str]) -> sa.Exists:
    """Whether the conversation skips this agent: they let it go unanswered, or handed it on."""
    return sa.exists().where(
        col(QueueSkip.conversation_id) == conversation_id,
        col(QueueSkip.agent_id) == agent_id,
    )


def _candidate_agent(session: Session, skill_group: str, conversation_id: str) -> Agent | None:
    """Least-loaded online agent of the group with room; ties to the longest since assigned.
    An agent the conversation skips is passed over only while another agent of the group,
    one it does not skip, is online to serve it (with room now, or once they have some): with
    nobody else online, a skipped agent takes it rather than leave the visitor waiting for no
    one."""
    other, other_skill = aliased(Agent), aliased(AgentSkill)
    someone_else_online = sa.exists().where(
        other_skill.skill_group == skill_group,
        other_skill.agent_id == other.id,
        other.role == Role.AGENT,
        other.status == AgentStatus.ONLINE,
        ~_skips(conversation_id, other.id),
    )
    return session.exec(
        select(Agent)
        .join(AgentSkill, col(AgentSkill.agent_id) == col(Agent.id))
        .where(
            AgentSkill.skill_group == skill_group,
            Agent.role == Role.AGENT,  # supervisors oversee; they are never assigned
            Agent.status == AgentStatus.ONLINE,
            col(Agent.active_count) < col(Agent.max_concurrent),
            sa.or_(~_skips(conversation_id, col(Agent.id)), ~someone_else_online),
        )
        .order_by(
            col(Agent.active_count).asc(),
            col(Agent.last_assigned_at).asc().nulls_first(),
            col(Agent.id).asc(),
        )
        .limit(1)
    ).first()


def take_capacity(session: Session, agent_id: str, now: datetime) -> bool:
    """Raise the agent's load by one if they are still online and below capacity."""
    result = session.execute(
        sa.update(Agent)
        .where(
            col(Agent.id) == agent_id,
            col(Agent.status) == AgentStatus.ONLINE,
            col(Agent.active_count) < col(Agent.max_concurrent),
        )
        .values(active_count=col(Agent.active_count) + 1, last_assigned_at=now)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def lock_queue(session: Session, skill_group: str) -> None:
    """Serialise joining and serving one group's queue, so enqueue times follow commit order
    (nobody can be served while someone with an earlier enqueue time is still joining).
    SQLite's write transactions are serialised already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": f"switchboard.queue.{skill_group}"},
        )


def join_queue(
    session: Session,
    conversation: Conversation,
    *,
    skill_group: str,
    priority: int,
    expected_handling_time: timedelta | None = None,
) -> QueueEntry:
    """Put a conversation in a group's queue, once. A conversation that queued before keeps its
    original enqueue time, so it does not lose its place. `expected_handling_time`: the group's
    in the policy, where the estimated wait starts (store/estimate.py)."""
    lock_queue(session, skill_group)
    existing = session.exec(
        select(QueueEntry).where(QueueEntry.conversation_id == conversation.id)
    ).first()
    if existing is not None:
        return existing
    conversation.skill_group = skill_group
    conversation.priority = priority
    conversation.queued_at = conversation.queued_at or utcnow()
    session.add(conversation)
    entry = QueueEntry(
        conversation_id=conversation.id,
        skill_group=skill_group,
        priority=priority,
        enqueued_at=conversation.queued_at,
        expected_handling_seconds=(
            None if expected_handling_time is None else expected_handling_time.total_seconds()
        ),
    )
    session.add(entry)
    session.flush()
    return entry


class _HeadTaken(Exception):
    pass


def _first_servable(session: Session, skill_group: str) -> tuple[QueueEntry, Agent] | None:
    """The first waiting conversation, in queue order, that an agent with room may take, and
    that agent. Only agents it skips (no first reply, or they handed it on) differ from one
    conversation to the next, so a conversation nobody may take does not hold up those behind
    it, and the search stops at the first one that skips nobody."""
    entries = session.exec(
        select(QueueEntry)
        .where(QueueEntry.skill_group == skill_group)
        .order_by(*queue_order())
        .limit(_SKIPPED_HEADS_LOOKED_PAST + 1)
        .with_for_update()
    ).all()
    if not entries:
        # PostgreSQL skips a head that a concurrent assignment deleted while we waited for
        # its lock; look again rather than leave the rest of the queue waiting.
        if session.exec(select(QueueEntry.id).where(QueueEntry.skill_group == skill_group)).first():
            raise _HeadTaken
        return None
    for entry in entries:
        agent = _candidate_agent(session, skill_group, entry.conversation_id)
        if agent is not None:
            return entry, agent
        skipped_someone = session.exec(
            select(QueueSkip.agent_id).where(QueueSkip.conversation_id == entry.conversation_id)
        ).first()
        if skipped_someone is None:
            return None  # nobody has room for anyone
    return None


# How many conversations that only skipped agents could take an assignment looks past.
_SKIPPED_HEADS_LOOKED_PAST = 20


def assign_next(db: Database, skill_group: str) -> NewAssignment | None:
    """Assign the head of one group's queue, if an agent has room. One transaction."""
    with db.write() as session:
        lock_queue(session, skill_group)
        served = _first_servable(session, skill_group)
        if served is None:
            return None
        entry, agent = served
        now = utcnow()
        for _attempt in range(3):
            if take_capacity(session, agent.id, now):
                break
            next_agent = _candidate_agent(session, skill_group, entry.conversation_id)
            if next_agent is None:
                return None
            agent = next_agent
        else:
            return None  # lost every race for capacity; the next trigger tries again
        return _hand_over(session, entry, agent.id, now)


def _hand_over(session: Session, entry: QueueEntry, agent_id: str, now: datetime) -> NewAssignment:
    """The queued conversation leaves its queue for the agent whose capacity was just taken:
    its row and the assignment log say so (its workflow is told after the commit)."""
    session.delete(entry)
    session.execute(
        sa.update(Conversation)
        .where(col(Conversation.id) == entry.conversation_id)
        .values(agent_id=agent_id, assigned_at=now, load_released=False)
    )
    assert entry.id is not None
    session.add(
        Assignment(
            conversation_id=entry.conversation_id,
            agent_id=agent_id,
            skill_group=entry.skill_group,
            queue_ticket=entry.id,
            priority=entry.priority,
            enqueued_at=entry.enqueued_at,
            assigned_at=now,
        )
    )
    return NewAssignment(entry.conversation_id, agent_id, entry.skill_group)


class NotWaiting(Exception):
    """The conversation waits in no queue (served already, closed, or not yet routed)."""


class CannotTake(Exception):
    """The agent may not take the conversation now: the message says why."""


def assign_to(db: Database, *, conversation_id: str, agent_id: str) -> NewAssignment:
    """A supervisor's choice: the queued conversation goes to this agent of its group, if they
    are online with room, whoever is ahead of it (those behind it keep their order). The
    same transaction and lock order as assign_next. Unknown agent → LookupError."""
    with db.write() as session:
        waiting = session.exec(
            select(QueueEntry.skill_group).where(QueueEntry.conversation_id == conversation_id)
        ).first()
        if waiting is None:
            raise NotWaiting(conversation_id)
        lock_queue(session, waiting)
        entry = session.exec(
            select(QueueEntry)
            .where(QueueEntry.conversation_id == conversation_id)
            .with_for_update()
        ).first()
        if entry is None:  # served while we waited for the queue
            raise NotWaiting(conversation_id)
        agent = session.get(Agent, agent_id)
        if agent is None or agent.role != Role.AGENT:
            raise LookupError(agent_id)
        if agent.disabled or entry.skill_group not in agent_skill_groups(session, agent_id):
            raise CannotTake(f"{agent_id} is not an agent of {entry.skill_group}")
        now = utcnow()
        if not take_capacity(session, agent_id, now):
            raise CannotTake(f"{agent_id} is not online with room for another conversation")
        return _hand_over(session, entry, agent_id, now)


def _heads_by_urgency(db: Database, skill_groups: list[str]) -> list[str]:
    """The groups with someone waiting, the most urgent head first (priority, then age)."""
    with db.read() as session:
        entries = session.exec(
            select(QueueEntry)
            .where(col(QueueEntry.skill_group).in_(skill_groups))
            .order_by(*queue_order())
        ).all()
    seen: dict[str, None] = {}
    for entry in entries:
        seen.setdefault(entry.skill_group)
    return list(seen)


def dispatch(
    db: Database, skill_groups: Iterable[str], *, announce_places: bool = True
) -> list[NewAssignment]:
    """Assign waiting conversations in these groups until queues or capacity run out. When
    an agent serves several groups, the most urgent head across them goes first. Those still
    waiting are told their new places, unless `announce_places` is False (the caller tells
    them: after signalling the assigned conversations' workflows, say)."""
    groups = sorted(set(skill_groups))
    made: list[NewAssignment] = []
    while groups:
        progressed = False
        for group in _heads_by_urgency(db, groups):
            try:
                assignment = assign_next(db, group)
            except _HeadTaken:
                progressed = True
                break
            if assignment is not None:
                made.append(assignment)
                progressed = True
                break
        if not progressed:
            break
    if announce_places:
        announce(db, {assignment.skill_group for assignment in made})
    return made


def release_agent(session: Session, conversation_id: str, now: datetime) -> str | None:
    """Drop the load a conversation holds on its agent, exactly once. Returns the agent id."""
    agent_id = session.execute(
        sa.update(Conversation)
        .where(
            col(Conversation.id) == conversation_id,
            col(Conversation.agent_id).is_not(None),
            col(Conversation.load_released).is_(False),
        )
        .values(load_released=True)
        .returning(Conversation.agent_id)
    ).scalar_one_or_none()
    if agent_id is None:
        return None
    release_load(session.connection(), conversation_id, agent_id, now)
    return agent_id


# A conversation's load dropped off its agent: built once.
_DROP_LOAD = (
    sa.update(Agent)
    .where(col(Agent.id) == sa.bindparam("of_agent"), col(Agent.active_count) > 0)
    .values(active_count=col(Agent.active_count) - 1)
)
_END_ASSIGNMENT = (
    sa.update(Assignment)
    .where(
        col(Assignment.conversation_id) == sa.bindparam("of_conversation"),
        col(Assignment.released_at).is_(None),
    )
    .values(released_at=sa.bindparam("released_at"))
)


def release_load(
    connection: sa.Connection, conversation_id: str, agent_id: str, now: datetime
) -> None:
    """The rest of `release_agent` once the caller has set the conversation's load_released
    (in the same transaction; store/lifecycle.py's close does, with the rest of its changes
    to the row): the agent's count and the assignment's end."""
    connection.execute(_DROP_LOAD, {"of_agent": agent_id})
    connection.execute(_END_ASSIGNMENT, {"of_conversation": conversation_id, "released_at": now})


def announce_positions(session: Session, skill_group: str) -> None:
    """Tell every waiting visitor of the group whose place changed, or whose estimated wait
    moved by more than ESTIMATE_MOVED_SHARE of the one last told (one event each)."""
    lock_queue(session, skill_group)
    entries = session.exec(
        select(QueueEntry)
        .where(QueueEntry.skill_group == skill_group)
        .order_by(*queue_order())
        .with_for_update()
    ).all()
    if not entries:
        return
    pace = group_pace(session, skill_group)
    told: list[tuple[str, dict[str, Any]]] = []
    for position, entry in enumerate(entries, start=1):
        wait = pace.wait(position)
        if entry.announced_position == position and not moved(entry.announced_wait, wait):
            continue
        entry.announced_position, entry.announced_wait = position, wait
        session.add(entry)
        told.append(
            (
                entry.conversation_id,
                {"skill_group": skill_group, "position": position, "estimated_wait": wait},
            )
        )
    # Everyone behind a served head moves up: one statement for them all, not a few each.
    append_events(session, type=EventType.QUEUE_POSITION, items=told)


def announce(db: Database, skill_groups: Iterable[str]) -> None:
    """Tell waiting visitors their new places and estimates, each group with someone waiting in
    its own short transaction (kept out of the assignment's, so its locks are held briefly;
    telling twice is harmless)."""
    groups = set(skill_groups)
    if not groups:
        return
    for group in sorted(groups & set(waiting_groups(db))):
        with db.write() as session:
            announce_positions(session, group)


def agent_skill_groups(session: Session, agent_id: str) -> list[str]:
    return list(session.exec(select(AgentSkill.skill_group).where(AgentSkill.agent_id == agent_id)))


def waiting_groups(db: Database) -> list[str]:
    """The skill groups with someone in their queue."""
    with db.read() as session:
        return list(session.exec(select(QueueEntry.skill_group).distinct()))


def stranded_assignments(db: Database, *, older_than: timedelta) -> list[tuple[str, str]]:
    """(conversation, agent) pairs assigned in the database for longer than `older_than` that
    their workflows have not recorded (the conversation is still queued): the signal was lost."""
    cutoff = utcnow() - older_than
    with db.read() as session:
        rows = session.exec(
            select(Conversation.id, Conversation.agent_id).where(
                Conversation.state == ConversationState.QUEUED,
                col(Conversation.agent_id).is_not(None),
                col(Conversation.assigned_at) < cutoff,
            )
        ).all()
    return [(conversation_id, agent_id) for conversation_id, agent_id in rows if agent_id]


def queue_position(session: Session, entry: QueueEntry) -> int:
    """1-based place in the group's queue."""
    ahead = session.exec(
        select(sa.func.count())
        .select_from(QueueEntry)
        .where(
            QueueEntry.skill_group == entry.skill_group,
            sa.or_(
                col(QueueEntry.priority) > entry.priority,
                sa.and_(
                    col(QueueEntry.priority) == entry.priority,
                    sa.or_(
                        col(QueueEntry.enqueued_at) < entry.enqueued_at,
                        sa.and_(
                            col(QueueEntry.enqueued_at) == entry.enqueued_at,
                            col(QueueEntry.id) < entry.id,
                        ),
                    ),
                ),
            ),
        )
    ).one()
    return int(ahead) + 1
