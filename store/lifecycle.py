"""The conversation's lifecycle writes: what its workflow stores when it routes, queues, records
an assignment, transfers, requeues, warns, closes and asks for a rating. One write transaction
each (a move through the queues then tells those waiting their new places, in short
transactions of its own, as `announce` does).

Each may run twice (the activity that calls it is retried): a repeat finds what the first run
stored, answers what it answered, and writes nothing new (its events carry dedupe keys). Where
something newer was stored meanwhile (an agent took the conversation while it was being moved,
it closed already, the visitor rated it), the write keeps what is stored and says what it found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.policy import Policy, SkillGroup
from domain.types import (
    LEFT_MESSAGE,
    LEFT_MESSAGE_REASONS,
    Audience,
    ConversationState,
    EventType,
    QueuePlacement,
    RatingStatus,
    Role,
    RouteResult,
    TransferResult,
)
from store.assignment import (
    agent_skill_groups,
    announce,
    join_queue,
    lock_queue,
    release_agent,
    release_load,
    take_capacity,
)
from store.db import Database
from store.erasure import erased
from store.events import ConversationNotFound, append_event, change_state, state_changed
from store.models import (
    Agent,
    AgentSkill,
    Assignment,
    Conversation,
    Event,
    Message,
    QueueEntry,
    QueueSkip,
    utcnow,
)
from store.notes import write_note

T = TypeVar("T")


class ConversationUnassigned(Exception):
    """An assignment to record, but the conversation has no agent."""


class Declined(Exception):
    """A decision taken because nothing happened (no reply, no answer, no agent in time),
    declined: something newer is stored (invariant 8). The workflow resumes from what it found."""


class NewerMessage(Declined):
    """A message was stored after the silence began; this is the newest one."""

    def __init__(self, message_id: int, seq: int, sender_role: str) -> None:
        super().__init__(f"message {seq} came after the silence began: not idle")
        self.message_id = message_id
        self.seq = seq
        self.sender_role = sender_role


class AssignedMeanwhile(Declined):
    """An agent took the conversation while it waited: it is theirs, not closed for the wait."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id} took the conversation while it waited")
        self.agent_id = agent_id


def _newest_message(session: Session, conversation_id: str) -> Message | None:
    return session.exec(
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(col(Message.seq).desc())
        .limit(1)
    ).first()


def _refuse_if_written_since(session: Session, conversation_id: str, seq: int) -> None:
    """With the conversation's row locked (a message being stored commits first, or waits and
    then finds the decision written), refuse a decision for silence since `seq` if a newer
    message is stored."""
    newest = _newest_message(session, conversation_id)
    if newest is not None and newest.seq > seq and newest.id is not None:
        raise NewerMessage(newest.id, newest.seq, newest.sender_role)


def _refuse_if_answered(session: Session, conversation: Conversation, agent_id: str) -> None:
    """Refuse a requeue for no first reply if the agent's reply is stored: an agent's message is
    taken only while they hold the conversation, so one of theirs since it was assigned to them
    is their reply. The workflow hears of the newest message (the visitor may have written
    after it)."""
    if conversation.agent_id != agent_id or conversation.assigned_at is None:
        return
    replied = session.exec(
        select(Message.id).where(
            Message.conversation_id == conversation.id,
            Message.sender_id == agent_id,
            Message.sender_role == Role.AGENT,
            col(Message.created_at) >= conversation.assigned_at,
        )
    ).first()
    newest = _newest_message(session, conversation.id)
    if replied is not None and newest is not None and newest.id is not None:
        raise NewerMessage(newest.id, newest.seq, newest.sender_role)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a write answers, and the skill groups of an agent whose load it dropped (their
    queues may be served now)."""

    result: T
    freed_groups: list[str] = field(default_factory=list)


def _conversation(session: Session, conversation_id: str, *, lock: bool = False) -> Conversation:
    conversation = session.get(Conversation, conversation_id, with_for_update=lock)
    if conversation is None:
        raise ConversationNotFound(conversation_id)
    return conversation


def _group(policy: Policy, name: str | None) -> SkillGroup:
    """The policy's group; one removed from the policy since falls back to the default."""
    if name in policy.skill_group_names:
        return policy.group(name)
    return policy.group(policy.default_skill_group)


def group_open_at(
    policy: Policy, name: str | None, at: datetime
) -> tuple[SkillGroup, bool, datetime | None]:
    """The policy's group (`_group`), whether it is open at `at`, and if not when it opens."""
    group = _group(policy, name)
    hours = group.hours
    is_open = hours is None or hours.is_open(at)
    return group, is_open, None if is_open or hours is None else hours.next_opening(at)


def _placed(group: SkillGroup, entry: QueueEntry, at: datetime | None = None) -> QueuePlacement:
    """The placement in `group`, its service hours seen from `at` (now if not given)."""
    wait = group.max_queue_wait
    first_reply = group.agent_first_reply_timeout
    closes_at = group.hours.next_closing(at or utcnow()) if group.hours else None
    return QueuePlacement(
        skill_group=group.name,
        accepted=True,
        queued_at=entry.enqueued_at,
        overflow_to=group.overflow_to,
        max_queue_wait_s=wait.total_seconds() if wait else None,
        first_reply_timeout_s=first_reply.total_seconds() if first_reply else None,
        closes_at=closes_at,
        on_closing=group.on_closing,
        next_opening=group.hours.next_opening(closes_at) if group.hours and closes_at else None,
    )


def _refused(group: SkillGroup, because: str) -> QueuePlacement:
    return QueuePlacement(
        skill_group=group.name,
        accepted=False,
        refused_because=because,
        overflow_to=group.overflow_to,
    )


def _queue_entry(
    session: Session, conversation_id: str, *, lock: bool = False
) -> QueueEntry | None:
    """The conversation's queue entry, if it waits. `lock` before anything else: an assignment
    that holds it finishes first (the lock order shared with assignment: entry, agent,
    conversation)."""
    query = select(QueueEntry).where(QueueEntry.conversation_id == conversation_id)
    return session.exec(query.with_for_update() if lock else query).first()


def _stored_seq(session: Session, conversation_id: str, dedupe_key: str) -> int | None:
    """The seq of the event written with this key, if it was."""
    return session.exec(
        select(Event.seq).where(
            Event.conversation_id == conversation_id, Event.dedupe_key == dedupe_key
        )
    ).first()


def route_conversation(
    *, db: Database, policy: Policy, conversation_id: str, at: datetime
) -> RouteResult:
    """Route by the policy's rules (once: a repeat keeps the first decision) and say whether
    the group is open at `at` and, if not, when it opens."""
    with db.write() as session:
        conversation = _conversation(session, conversation_id)
        if conversation.skill_group is None:
            route = policy.route(conversation.visitor_context())
            conversation.skill_group = route.skill_group
            conversation.priority = route.priority
            conversation.routing_rule = route.rule
            conversation.bot = route.bot
        conversation.policy_version = policy.version
        session.add(conversation)
        group, is_open, next_opening = group_open_at(policy, conversation.skill_group, at)
        # A bot answers first, open or not (out of hours it offers the left message); one that
        # has handed off routes on to the queue.
        bot = conversation.bot if conversation.handoff_reason is None else None
        if bot is not None and conversation.state == ConversationState.QUEUED:
            change_state(
                session,
                conversation=conversation,
                state=ConversationState.BOT,
                dedupe_key="state:bot",
            )
        append_event(
            session,
            conversation_id=conversation.id,
            type=EventType.ROUTED,
            data={
                "open": is_open,
                "next_opening": next_opening.isoformat() if next_opening else None,
            },
            staff_data={
                "skill_group": group.name,
                "priority": conversation.priority,
                "routing_rule": conversation.routing_rule,
                "bot": conversation.bot,
            },
            dedupe_key="routed",
        )
        return RouteResult(
            skill_group=group.name,
            priority=conversation.priority,
            rule=conversation.routing_rule,
            is_open=is_open,
            next_opening=next_opening,
            policy_version=policy.version,
            bot=bot,
            bot_idle_close_s=policy.bot.idle_close_after.total_seconds() if bot else None,
        )


def enter_queue(
    *,
    db: Database,
    policy: Policy,
    conversation_id: str,
    skill_group: str,
    priority: int,
    at: datetime,
    hop: int = 0,
    from_group: str | None = None,
) -> QueuePlacement:
    """Join the group's queue, or move there from another group's (the `hop`-th overflow),
    keeping the original enqueue time; refuse when the group is closed at `at` or its queue is
    full. A conversation an agent took meanwhile stays with them (the placement names them)."""
    group = _group(policy, skill_group)
    changed_queues: list[str] = []
    with db.write() as session:
        placement = _join_group(
            session,
            policy=policy,
            group=group,
            conversation_id=conversation_id,
            priority=priority,
            at=at,
            hop=hop,
            from_group=from_group,
            changed_queues=changed_queues,
        )
    announce(db, changed_queues)
    return placement


def _join_group(
    session: Session,
    *,
    policy: Policy,
    group: SkillGroup,
    conversation_id: str,
    priority: int,
    at: datetime,
    hop: int,
    from_group: str | None,
    changed_queues: list[str],
) -> QueuePlacement:
    current = _queue_entry(session, conversation_id, lock=True)
    conversation = _conversation(session, conversation_id)
    if conversation.agent_id is not None:
        return QueuePlacement(
            skill_group=conversation.skill_group or group.name,
            accepted=True,
            agent_id=conversation.agent_id,
        )
    if current is not None and current.skill_group == group.name:
        return _placed(group, current, at)  # a retry after it committed
    lock_queue(session, group.name)
    if hop > 0:  # the hop happened, whether this group takes it or passes it on
        origin = from_group or (current.skill_group if current is not None else None)
        _overflowed(session, conversation.id, from_group=origin, to=group.name, hop=hop)
    if group.hours is not None and not group.hours.is_open(at):
        return _refused(group, "closed")
    waiting = session.exec(
        select(sa.func.count()).select_from(QueueEntry).where(QueueEntry.skill_group == group.name)
    ).one()
    if group.max_queue_length is not None and waiting >= group.max_queue_length:
        return _refused(group, "full")
    if current is not None:
        session.delete(current)
        session.flush()
        changed_queues.append(current.skill_group)
    changed_queues.append(group.name)
    conversation.policy_version = policy.version
    entry = join_queue(
        session,
        conversation,
        skill_group=group.name,
        priority=priority,
        expected_handling_time=group.expected_handling_time,
    )
    if hop == 0:
        mark_queued(session, conversation, group.name)
    return _placed(group, entry, at)


def mark_queued(session: Session, conversation: Conversation, skill_group: str) -> None:
    """The conversation's first `queued` (from routing, or the bot's hand-off): written once, so
    the queue joined after a hand-off writes no second one."""
    change_state(
        session,
        conversation=conversation,
        state=ConversationState.QUEUED,
        dedupe_key="state:queued",
        skill_group=skill_group,
    )


def _overflowed(
    session: Session | sa.Connection,
    conversation_id: str,
    *,
    from_group: str | None,
    to: str,
    hop: int,
) -> None:
    """The `hop`-th overflow: to a group (which may take it or pass it on) or to a left
    message. Once each (a retry finds it written)."""
    append_event(
        session,
        conversation_id=conversation_id,
        type=EventType.OVERFLOWED,
        data={"from": from_group, "to": to, "hop": hop},
        audience=Audience.STAFF,  # the visitor sees their place in the queue, not its groups
        dedupe_key=f"overflow:{hop}",
    )


def record_assignment(*, db: Database, conversation_id: str, round: int) -> None:
    """The workflow took in its `round`-th agent: the conversation is active with them (a
    closed one stays closed)."""
    with db.write() as session:
        conversation = _conversation(session, conversation_id)
        agent = session.get(Agent, conversation.agent_id) if conversation.agent_id else None
        if agent is None:
            raise ConversationUnassigned(conversation_id)
        append_event(
            session,
            conversation_id=conversation_id,
            type=EventType.ASSIGNED,
            data={"agent_name": agent.name},
            staff_data={"agent_id": agent.id},
            dedupe_key=f"assigned:{round}",
        )
        if conversation.state != ConversationState.CLOSED:
            change_state(
                session,
                conversation=conversation,
                state=ConversationState.ACTIVE,
                dedupe_key=f"state:active:{round}",
                agent_id=agent.id,
            )


def _leave_agent_for_queue(
    session: Session, conversation: Conversation, group: SkillGroup, now: datetime
) -> QueuePlacement:
    """Release the agent and queue again in `group`, keeping the original enqueue time (so it
    goes ahead of everyone who arrived later). The caller writes the state change."""
    release_agent(session, conversation.id, now)
    conversation.agent_id = None
    conversation.assigned_at = None
    session.add(conversation)
    entry = join_queue(
        session,
        conversation,
        skill_group=group.name,
        priority=conversation.priority,
        expected_handling_time=group.expected_handling_time,
    )
    return _placed(group, entry, now)


def requeue_unanswered(
    *, db: Database, policy: Policy, conversation_id: str, agent_id: str, round: int
) -> Outcome[QueuePlacement]:
    """The agent of the `round`-th assignment never answered: back to the queue with its
    original enqueue time, and never to that agent again. Declined (NewerMessage) if their
    reply is stored after all (its signal was lost or is late)."""
    now = utcnow()
    with db.write() as session:
        conversation = _conversation(session, conversation_id, lock=True)
        group = _group(policy, conversation.skill_group)
        existing = _queue_entry(session, conversation.id)
        if existing is not None:  # a retry after it committed
            placement = _placed(group, existing)
        else:
            _refuse_if_answered(session, conversation, agent_id)
            lock_queue(session, group.name)
            session.merge(QueueSkip(conversation_id=conversation.id, agent_id=agent_id))
            placement = _leave_agent_for_queue(session, conversation, group, now)
            append_event(
                session,
                conversation_id=conversation.id,
                type=EventType.REQUEUED,
                data={"sender_role": Role.SYSTEM, "text": policy.texts.connecting},
                staff_data={"agent_id": agent_id, "reason": "no_first_reply"},
                dedupe_key=f"requeued:{round}",
                also_to_agents=[agent_id],  # the agent who lost it
            )
            change_state(
                session,
                conversation=conversation,
                state=ConversationState.QUEUED,
                dedupe_key=f"requeued:{round}:queued",
                skill_group=group.name,
            )
        freed_groups = agent_skill_groups(session, agent_id)
    announce(db, [placement.skill_group])
    return Outcome(placement, freed_groups)


def transfer(
    *,
    db: Database,
    policy: Policy,
    conversation_id: str,
    round: int,
    by_id: str,
    to_agent_id: str | None = None,
    to_skill_group: str | None = None,
    note: str | None = None,
) -> Outcome[TransferResult]:
    """Hand the conversation of the `round`-th assignment to another agent (who must be online
    with room) or back to a group's queue. A repeat answers what the first run did."""
    with db.write() as session:
        outcome = _hand_over(
            session,
            policy=policy,
            conversation=_conversation(session, conversation_id),
            key=f"transfer:{round}",
            by_id=by_id,
            to_agent_id=to_agent_id,
            to_skill_group=to_skill_group,
            note=note,
        )
    if outcome.result.placement is not None:
        announce(db, [outcome.result.placement.skill_group])
    return outcome


def _hand_over(
    session: Session,
    *,
    policy: Policy,
    conversation: Conversation,
    key: str,
    by_id: str,
    to_agent_id: str | None,
    to_skill_group: str | None,
    note: str | None,
) -> Outcome[TransferResult]:
    if _stored_seq(session, conversation.id, key) is not None:  # a retry after it committed
        return Outcome(_transfer_result(session, conversation, policy, key))
    now = utcnow()
    from_agent = conversation.agent_id
    to_agent_name: str | None = None
    if to_agent_id is not None:
        target = session.get(Agent, to_agent_id)
        if target is None:
            return Outcome(TransferResult(ok=False, reason="unknown agent"))
        if not take_capacity(session, target.id, now):
            return Outcome(
                TransferResult(ok=False, reason=f"agent {target.id} is not online with room")
            )
        release_agent(session, conversation.id, now)
        to_agent_name = target.name
        conversation.agent_id = target.id
        conversation.assigned_at = now
        conversation.load_released = False
        session.add(conversation)
        session.add(
            Assignment(
                conversation_id=conversation.id,
                agent_id=target.id,
                skill_group=conversation.skill_group or policy.default_skill_group,
                priority=conversation.priority,
                enqueued_at=conversation.queued_at or now,
                assigned_at=now,
            )
        )
        result = TransferResult(ok=True, agent_id=target.id)
    else:
        assert to_skill_group is not None
        if to_skill_group not in policy.skill_group_names:
            return Outcome(
                TransferResult(ok=False, reason=f"unknown skill group {to_skill_group!r}")
            )
        group = policy.group(to_skill_group)
        lock_queue(session, group.name)
        result = TransferResult(
            ok=True, placement=_leave_agent_for_queue(session, conversation, group, now)
        )
        if from_agent is not None:  # not straight back to who handed it on, if others serve
            session.merge(QueueSkip(conversation_id=conversation.id, agent_id=from_agent))
    append_event(
        session,
        conversation_id=conversation.id,
        type=EventType.TRANSFERRED,
        data={"sender_role": Role.SYSTEM, "text": policy.texts.connecting},
        staff_data={
            "from_agent_id": from_agent,
            "to_agent_id": to_agent_id,
            "to_skill_group": to_skill_group,
            "by": by_id,
        },
        dedupe_key=key,
        also_to_agents=[from_agent],  # the agent it was transferred out from
    )
    if note:  # from a request an older API sent with its note (the API writes it now)
        write_note(
            session,
            conversation_id=conversation.id,
            by_id=by_id,
            text=note,
            kind="transfer",
            dedupe_key=f"{key}:note",
            also_to_agents=[from_agent],
        )
    if result.placement is not None:
        change_state(
            session,
            conversation=conversation,
            state=ConversationState.QUEUED,
            dedupe_key=f"{key}:queued",
            skill_group=to_skill_group,
        )
    else:
        assigned = append_event(
            session,
            conversation_id=conversation.id,
            type=EventType.ASSIGNED,
            data={"agent_name": to_agent_name},
            staff_data={"agent_id": result.agent_id, "transferred": True},
            dedupe_key=f"{key}:assigned",
        )
        result.handover_seq = assigned.seq
    freed_groups = agent_skill_groups(session, from_agent) if from_agent else []
    return Outcome(result, freed_groups)


def _transfer_result(
    session: Session, conversation: Conversation, policy: Policy, key: str
) -> TransferResult:
    """What a transfer that already happened did, read back for a retried activity."""
    if conversation.state == ConversationState.QUEUED:
        entry = _queue_entry(session, conversation.id)
        if entry is not None:
            return TransferResult(
                ok=True, placement=_placed(_group(policy, entry.skill_group), entry)
            )
    return TransferResult(
        ok=True,
        agent_id=conversation.agent_id,
        handover_seq=_stored_seq(session, conversation.id, f"{key}:assigned") or 0,
    )


# What moves a conversation on after a transfer: a transfer that one of these follows is past.
_HANDOVERS = (EventType.TRANSFERRED, EventType.ASSIGNED, EventType.REQUEUED, EventType.CLOSED)


def transfer_took_effect(
    *,
    db: Database,
    conversation_id: str,
    by_id: str,
    to_agent_id: str | None,
    to_skill_group: str | None,
) -> bool:
    """Whether this caller's transfer to this agent or group is the last thing that moved the
    conversation: a retry of a transfer that happened (its first answer lost) is answered as
    that transfer was, not refused by a conversation that is no longer theirs."""
    with db.read() as session:
        last = session.exec(
            select(Event)
            .where(
                Event.conversation_id == conversation_id,
                col(Event.type).in_(_HANDOVERS),
                # A transfer to an agent writes their assignment with it, under its own key.
                sa.not_(sa.func.coalesce(col(Event.dedupe_key), "").like("transfer:%:assigned")),
            )
            .order_by(col(Event.seq).desc())
            .limit(1)
        ).first()
    if last is None or last.type != EventType.TRANSFERRED:
        return False
    data = {**last.data, **(last.staff_data or {})}  # staff_data: rows written since 0009
    return (data.get("by"), data.get("to_agent_id"), data.get("to_skill_group")) == (
        by_id,
        to_agent_id,
        to_skill_group,
    )


def conversation_agent(*, db: Database, conversation_id: str) -> str | None:
    """The agent the conversation is assigned to now, if any."""
    with db.read() as session:
        return _conversation(session, conversation_id).agent_id


def record_idle_warning(
    *,
    db: Database,
    policy: Policy,
    conversation_id: str,
    agent_message_seq: int,
    close_at: datetime,
    idle_close_after: timedelta,
) -> datetime:
    """Tell the visitor the chat closes if they stay silent (once per unanswered agent
    message); returns when it closes, as the warning said (a repeat: as first said). Declined
    (NewerMessage) if a message newer than that agent message is stored."""
    # A warning held up (the database was down) still gives the visitor the whole time.
    close_at = max(close_at, utcnow() + idle_close_after)
    # Core statements built once, on a connection: no ORM session (bench/ B3, the worker's CPU).
    with db.write_connection() as connection:
        if (
            connection.execute(_LOCK_CONVERSATION, {"of_conversation": conversation_id}).first()
            is None
        ):
            raise ConversationNotFound(conversation_id)
        _refuse_if_newer(connection, conversation_id, agent_message_seq)
        event = append_event(
            connection,
            conversation_id=conversation_id,
            type=EventType.IDLE_WARNING,
            data={
                "sender_role": Role.SYSTEM,
                "text": policy.idle_warning_text(idle_close_after),
                "close_at": close_at.isoformat(),
                "after_agent_message_seq": agent_message_seq,
            },
            dedupe_key=f"idle_warning:{agent_message_seq}",
        )
    return datetime.fromisoformat(event.data["close_at"])


# The close's statements, built once (a statement's cache key is worked out once per object).
_LOCK_CONVERSATION = (
    sa.select(col(Conversation.id))
    .where(col(Conversation.id) == sa.bindparam("of_conversation"))
    .with_for_update()
)
_NEWEST_MESSAGE = (
    sa.select(col(Message.id), col(Message.seq), col(Message.sender_role))
    .where(col(Message.conversation_id) == sa.bindparam("of_conversation"))
    .order_by(col(Message.seq).desc())
    .limit(1)
)
_LEAVE_QUEUE = (
    sa.delete(QueueEntry)
    .where(col(QueueEntry.conversation_id) == sa.bindparam("of_conversation"))
    .returning(col(QueueEntry.skill_group))
)
_CLOSING = (
    sa.select(
        col(Conversation.state),
        col(Conversation.agent_id),
        col(Conversation.load_released),
        col(Conversation.skill_group),
        col(Conversation.bot),
        col(Conversation.handoff_reason),
        col(Conversation.rating_status),
        col(Conversation.rating_expires_at),
    )
    .where(col(Conversation.id) == sa.bindparam("of_conversation"))
    .with_for_update()
)
_AGENT_SKILLS = sa.select(col(AgentSkill.skill_group)).where(
    col(AgentSkill.agent_id) == sa.bindparam("of_agent")
)


def _refuse_if_newer(connection: sa.Connection, conversation_id: str, seq: int) -> None:
    """`_refuse_if_written_since` on a connection (the conversation's row locked already)."""
    newest = connection.execute(_NEWEST_MESSAGE, {"of_conversation": conversation_id}).first()
    if newest is not None and newest.seq > seq:
        raise NewerMessage(newest.id, newest.seq, newest.sender_role)


def close_conversation(
    *,
    db: Database,
    policy: Policy,
    conversation_id: str,
    reason: str,
    closed_by: str | None = None,
    next_opening: datetime | None = None,
    invite_rating: bool = False,
    silent_after_seq: int | None = None,
    overflowed_from: str | None = None,
    overflow_hop: int = 0,
    unless_assigned: bool = False,
) -> Outcome[datetime | None]:
    """Close with the closing message, out of the queue and off the agent's load (a closed one
    keeps its first close). With `invite_rating` and an agent who served it (or the bot alone,
    if the policy's [bot] says so), invite the rating too; the outcome then says when its
    window ends. `overflowed_from`: the group it overflows from into a left message, its
    `overflow_hop`-th hop (written with the close). Declined (`Declined`) where the reason for
    it no longer holds: `silent_after_seq`, a close because nobody wrote after that message, if
    someone has since (NewerMessage); `unless_assigned`, a close because nobody took it in time,
    if an agent has (AssignedMeanwhile).

    Core statements built once, on a connection (no ORM session: bench/ B3, the worker's CPU):
    the conversation's row is read once under its lock, and what the close changes in it
    (the close, its agent's load, the rating invite) is one UPDATE."""
    now = utcnow()
    of_conversation = {"of_conversation": conversation_id}
    with db.write_connection() as connection:
        # The queue entry first: an assignment that holds it finishes first (the lock order
        # shared with assignment: entry, agent, conversation).
        left_queue = connection.execute(_LEAVE_QUEUE, of_conversation).scalar_one_or_none()
        found = connection.execute(_CLOSING, of_conversation).first()
        if found is None:
            raise ConversationNotFound(conversation_id)
        was_closed = found.state == ConversationState.CLOSED
        agent_id: str | None = found.agent_id
        if not was_closed:
            if silent_after_seq is not None:
                _refuse_if_newer(connection, conversation_id, silent_after_seq)
            if unless_assigned and agent_id is not None:
                raise AssignedMeanwhile(agent_id)
        changes: dict[str, object] = {}
        releases = agent_id is not None and not found.load_released
        if releases:  # off the agent's load, exactly once (as release_agent does)
            changes["load_released"] = True
        if not was_closed:
            changes.update(
                policy_version=policy.version,
                close_reason=reason,
                closed_by=closed_by,
                closed_at=now,
                open_customer_key=None,
                state=ConversationState.CLOSED,
            )
        # The bot served it alone (nobody asked for a person): rated if the policy says so.
        bot_alone = found.bot is not None and found.handoff_reason is None
        served = agent_id is not None or (bot_alone and policy.bot.invite_rating)
        rating_expires_at = None
        if invite_rating and served:
            rating_expires_at = found.rating_expires_at or now + policy.timeouts.rating_window
            if found.rating_status == RatingStatus.NONE:  # invited once
                rating_expires_at = now + policy.timeouts.rating_window
                changes.update(
                    rating_status=RatingStatus.PENDING, rating_expires_at=rating_expires_at
                )
        if changes:
            connection.execute(
                sa.update(Conversation)
                .where(col(Conversation.id) == conversation_id)
                .values(**changes)
            )
        if releases:
            assert agent_id is not None
            release_load(connection, conversation_id, agent_id, now)
        if not was_closed:
            if overflowed_from is not None:
                _overflowed(
                    connection,
                    conversation_id,
                    from_group=overflowed_from,
                    to=LEFT_MESSAGE,
                    hop=overflow_hop,
                )
            state_changed(
                connection,
                conversation_id=conversation_id,
                state=ConversationState.CLOSED,
                dedupe_key="state:closed",
                close_reason=reason,
            )
        append_event(
            connection,
            conversation_id=conversation_id,
            type=EventType.CLOSED,
            data={
                "close_reason": reason,
                "sender_role": Role.SYSTEM,
                "text": policy.closing_text(
                    reason, skill_group=found.skill_group, next_opening=next_opening
                ),
                "left_message": reason in LEFT_MESSAGE_REASONS,
                # When the group opens again (out of hours): for the left-message form.
                **({"next_opening": next_opening.isoformat()} if next_opening else {}),
            },
            dedupe_key="closed",
        )
        if rating_expires_at is not None:
            _rating_invited(connection, policy, conversation_id, rating_expires_at)
        freed_groups: list[str] = []
        if agent_id is not None:
            freed_groups = list(connection.execute(_AGENT_SKILLS, {"of_agent": agent_id}).scalars())
    if left_queue is not None:
        announce(db, [left_queue])
    return Outcome(rating_expires_at, freed_groups)


def _invite_rating(
    session: Session, policy: Policy, conversation: Conversation, expires_at: datetime
) -> datetime:
    """Invite the visitor to rate (once); returns when the window ends, as first told."""
    if conversation.rating_status == RatingStatus.NONE:
        conversation.rating_status = RatingStatus.PENDING
        conversation.rating_expires_at = expires_at
        session.add(conversation)
    expires_at = conversation.rating_expires_at or expires_at
    _rating_invited(session, policy, conversation.id, expires_at)
    return expires_at


def _rating_invited(
    session: Session | sa.Connection, policy: Policy, conversation_id: str, expires_at: datetime
) -> None:
    """The invite's event, written once (a repeat finds it by its key)."""
    append_event(
        session,
        conversation_id=conversation_id,
        type=EventType.RATING_INVITED,
        data={"text": policy.texts.rating_invite, "expires_at": expires_at.isoformat()},
        dedupe_key="rating:invited",
    )


def invite_rating(
    *, db: Database, policy: Policy, conversation_id: str, expires_at: datetime
) -> datetime:
    """Invite the visitor to rate until `expires_at` (a repeat keeps the first window, and
    returns it)."""
    with db.write() as session:
        return _invite_rating(session, policy, _conversation(session, conversation_id), expires_at)


def record_rating(
    *,
    db: Database,
    conversation_id: str,
    score: int,
    resolved: bool | None = None,
    comment: str | None = None,
) -> None:
    """The visitor's rating (the comment erased at once if the conversation was)."""
    with db.write() as session:
        conversation = _conversation(session, conversation_id, lock=True)
        conversation.rating_status = RatingStatus.RATED
        conversation.rating_score = score
        conversation.rating_resolved = resolved
        if comment is not None:  # sent by older code only: the API stores it now
            conversation.rating_comment = (
                comment if conversation.erased_at is None else erased(comment)
            )
        session.add(conversation)
        append_event(
            session,
            conversation_id=conversation_id,
            type=EventType.RATING_SUBMITTED,
            data={"score": score, "resolved": resolved},
            dedupe_key="rating:submitted",
        )


def expire_rating(*, db: Database, conversation_id: str) -> None:
    """The rating window passed without a rating (a rated conversation stays rated)."""
    with db.write() as session:
        conversation = _conversation(session, conversation_id)
        if conversation.rating_status == RatingStatus.PENDING:
            conversation.rating_status = RatingStatus.EXPIRED
            session.add(conversation)
        append_event(
            session,
            conversation_id=conversation_id,
            type=EventType.RATING_EXPIRED,
            data={},
            dedupe_key="rating:expired",
        )
