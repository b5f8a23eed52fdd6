"""Real-time figures per skill group, for supervisors and Prometheus.

Read from the database, not Temporal's visibility (which is eventually consistent). Five
aggregate queries, each grouped by skill group, whatever the number of conversations, so a
wallboard may poll every second. An agent who serves several groups counts in each of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.types import AgentStatus, CloseReason, EventType, Role
from store.db import Database
from store.models import Agent, AgentSkill, Assignment, Conversation, Event, QueueEntry

# Average wait and handling time look back this far.
RECENT_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class SkillGroupFigures:
    skill_group: str
    # Now.
    waiting: int = 0
    longest_wait_seconds: float = 0.0
    agents_online: int = 0
    agents_away: int = 0
    agents_at_capacity: int = 0  # online, holding max_concurrent conversations or more
    load: int = 0  # conversations held by the group's online agents
    capacity: int = 0  # the sum of their max_concurrent
    # The last RECENT_WINDOW: queued → assigned (assignments from the queue made in it), and
    # assigned → released (releases in it). None when there were none.
    average_wait_seconds: float | None = None
    average_handling_seconds: float | None = None
    # Today (the UTC day).
    overflows_today: int = 0  # hops out of the group: to another group or a left message
    abandons_today: int = 0
    auto_closes_today: int = 0  # closed with `idle_timeout`
    ratings_today: int = 0  # of conversations closed today
    average_rating_today: float | None = None


FIGURES = tuple(field.name for field in fields(SkillGroupFigures) if field.name != "skill_group")


def day_start(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _seconds_between(session: Session, later: Any, earlier: Any) -> sa.ColumnElement[float]:
    """`later - earlier` in seconds, in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.cast(sa.extract("epoch", later - earlier), sa.Float)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def _count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def _sum_where(condition: sa.ColumnElement[bool], value: Any) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, value), else_=0)), 0)


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def skill_group_figures(
    *, session: Session, skill_groups: Iterable[str], now: datetime
) -> list[SkillGroupFigures]:
    """The figures of these groups as of `now`, in the order given; groups with nothing going
    on get zeros (and None for averages)."""
    groups = list(dict.fromkeys(skill_groups))
    found: dict[str, dict[str, Any]] = {group: {} for group in groups}
    since = now - RECENT_WINDOW
    today = day_start(now)

    queue_group = col(QueueEntry.skill_group)
    for group, waiting, oldest in session.execute(
        select(queue_group, sa.func.count(), sa.func.min(col(QueueEntry.enqueued_at)))
        .where(queue_group.in_(groups))
        .group_by(queue_group)
    ):
        found[group].update(
            waiting=waiting,
            longest_wait_seconds=round(max(0.0, (now - oldest).total_seconds()), 3),
        )

    online = col(Agent.status) == AgentStatus.ONLINE
    agent_group = col(AgentSkill.skill_group)
    for group, on, away, full, load, capacity in session.execute(
        select(
            agent_group,
            _count_where(online),
            _count_where(col(Agent.status) == AgentStatus.AWAY),
            _count_where(online & (col(Agent.active_count) >= col(Agent.max_concurrent))),
            _sum_where(online, col(Agent.active_count)),
            _sum_where(online, col(Agent.max_concurrent)),
        )
        .join(Agent, col(Agent.id) == col(AgentSkill.agent_id))
        # Those who serve: a supervisor oversees the group, and takes none of its load.
        .where(agent_group.in_(groups), col(Agent.role) == Role.AGENT)
        .group_by(agent_group)
    ):
        found[group].update(
            agents_online=on,
            agents_away=away,
            agents_at_capacity=full,
            load=load,
            capacity=capacity,
        )

    assigned_at, released_at = col(Assignment.assigned_at), col(Assignment.released_at)
    from_queue_recently = (assigned_at >= since) & col(Assignment.queue_ticket).is_not(None)
    released_recently = released_at >= since
    assignment_group = col(Assignment.skill_group)
    for group, wait, handling in session.execute(
        select(
            assignment_group,
            sa.func.avg(
                sa.case(
                    (
                        from_queue_recently,
                        _seconds_between(session, assigned_at, col(Assignment.enqueued_at)),
                    )
                )
            ),
            sa.func.avg(
                sa.case((released_recently, _seconds_between(session, released_at, assigned_at)))
            ),
        )
        .where(assignment_group.in_(groups), from_queue_recently | released_recently)
        .group_by(assignment_group)
    ):
        found[group].update(
            average_wait_seconds=_rounded(wait), average_handling_seconds=_rounded(handling)
        )

    reason = col(Conversation.close_reason)
    conversation_group = col(Conversation.skill_group)
    for group, abandons, auto_closes, ratings, rating in session.execute(
        select(
            conversation_group,
            _count_where(reason == CloseReason.ABANDONED),
            _count_where(reason == CloseReason.IDLE_TIMEOUT),
            sa.func.count(col(Conversation.rating_score)),
            sa.func.avg(col(Conversation.rating_score)),
        )
        .where(conversation_group.in_(groups), col(Conversation.closed_at) >= today)
        .group_by(conversation_group)
    ):
        found[group].update(
            abandons_today=abandons,
            auto_closes_today=auto_closes,
            ratings_today=ratings,
            average_rating_today=_rounded(rating, 2),
        )

    # Every hop out of a group is an event, into another group or a left message (the
    # conversation's skill_group is where it ended up, not where it overflowed from).
    from_group = col(Event.data)["from"].as_string()
    for group, count in session.execute(
        select(from_group, sa.func.count())
        .where(
            col(Event.type) == EventType.OVERFLOWED,
            col(Event.at) >= today,
            from_group.in_(groups),
        )
        .group_by(from_group)
    ):
        found[group]["overflows_today"] = count

    return [SkillGroupFigures(skill_group=group, **found[group]) for group in groups]


def read_skill_group_figures(
    db: Database, *, skill_groups: Iterable[str], now: datetime
) -> list[SkillGroupFigures]:
    """skill_group_figures in a read transaction of its own."""
    with db.read() as session:
        return skill_group_figures(session=session, skill_groups=skill_groups, now=now)
