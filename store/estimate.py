"""The estimated wait of a queued conversation, from what is stored: its place, the group's
online agents (their seats and the free ones) and the group's recent service rate, which starts
from the policy's `expected_handling_time` (domain/queueing.py has the arithmetic).

Never null while an agent of the group is online; null when nobody of the group is online
(nobody can say when someone will be).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.policy import DEFAULT_EXPECTED_HANDLING_TIME
from domain.queueing import service_rate, wait_at_position
from domain.types import AgentStatus, Role
from store.models import Agent, AgentSkill, Assignment, QueueEntry, utcnow

# The group's history: its last releases, no further back than the horizon.
HISTORY_RELEASES = 50
HISTORY_HORIZON = timedelta(hours=1)


@dataclass(frozen=True)
class GroupPace:
    """What the estimate of one group reads, once for all its waiting visitors."""

    agents_online: int
    seats: int  # the online agents' max_concurrent, summed
    free_seats: int  # of those, the ones not taken
    rate_per_seat: float  # departures per busy seat per second

    def wait(self, position: int) -> float | None:
        """Seconds, to a tenth; None with nobody of the group online."""
        if self.agents_online == 0:
            return None
        wait = wait_at_position(
            position,
            seats=self.seats,
            free_seats=self.free_seats,
            rate_per_seat=self.rate_per_seat,
        )
        return round(wait, 1)


def group_pace(session: Session, skill_group: str, now: datetime | None = None) -> GroupPace:
    now = now or utcnow()
    online = session.execute(
        select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(Agent.max_concurrent), 0),
            sa.func.coalesce(
                sa.func.sum(
                    sa.case(
                        (
                            col(Agent.active_count) < col(Agent.max_concurrent),
                            col(Agent.max_concurrent) - col(Agent.active_count),
                        ),
                        else_=0,
                    )
                ),
                0,
            ),
        )
        .select_from(Agent)
        .join(AgentSkill, col(AgentSkill.agent_id) == col(Agent.id))
        .where(
            AgentSkill.skill_group == skill_group,
            Agent.role == Role.AGENT,
            Agent.status == AgentStatus.ONLINE,
        )
    ).one()
    releases, busy_seconds = _service_history(session, skill_group, now)
    return GroupPace(
        agents_online=int(online[0]),
        seats=int(online[1]),
        free_seats=int(online[2]),
        rate_per_seat=service_rate(
            releases=releases,
            busy_seconds=busy_seconds,
            expected_handling_seconds=_expected_handling_seconds(session, skill_group),
        ),
    )


def estimated_wait(session: Session, skill_group: str, position: int) -> float | None:
    """Seconds until served at this place in the group's queue; None with nobody online."""
    return group_pace(session, skill_group).wait(position)


def _expected_handling_seconds(session: Session, skill_group: str) -> float:
    """The policy's figure as of the group's newest arrival (the store reads no policy file:
    each entry brings the value in force when it joined)."""
    newest = session.exec(
        select(QueueEntry.expected_handling_seconds)
        .where(
            QueueEntry.skill_group == skill_group,
            col(QueueEntry.expected_handling_seconds).is_not(None),
        )
        .order_by(col(QueueEntry.id).desc())
        .limit(1)
    ).first()
    return newest if newest else DEFAULT_EXPECTED_HANDLING_TIME.total_seconds()


def _service_history(session: Session, skill_group: str, now: datetime) -> tuple[int, float]:
    """(releases, busy seat-seconds) of the group since its HISTORY_RELEASES-th newest release,
    or over the horizon when it has fewer. Releases are closes, transfers and requeues: each
    frees a seat, which is what the queue waits for."""
    since = now - HISTORY_HORIZON
    released = list(
        session.exec(
            select(Assignment.released_at)
            .where(
                Assignment.skill_group == skill_group,
                col(Assignment.released_at) > since,
                col(Assignment.released_at) <= now,
            )
            .order_by(col(Assignment.released_at).desc())
            .limit(HISTORY_RELEASES)
        )
    )
    releases = len(released)
    if releases == HISTORY_RELEASES and released[-1] is not None:
        since, releases = released[-1], releases - 1  # the window opens at the oldest one
    held = session.exec(
        select(Assignment.assigned_at, Assignment.released_at).where(
            Assignment.skill_group == skill_group,
            col(Assignment.assigned_at) < now,
            sa.or_(col(Assignment.released_at).is_(None), col(Assignment.released_at) > since),
        )
    ).all()
    busy = sum(
        (min(released_at or now, now) - max(assigned_at, since)).total_seconds()
        for assigned_at, released_at in held
    )
    return releases, max(0.0, busy)
