"""Agents: created, changed, deactivated and given new tokens by an admin; their status, their
presence, their conversations and their feed.

A change that must not race an assignment (deactivation, a lower or higher capacity, other
groups) locks the agent's row first, as an assignment's capacity check does (store/assignment.py:
the agent's row before the conversation's); what it then reads of the conversations it does
not lock.

An agent is present while a workbench holds their stream: each open stream of theirs writes
`last_seen_at` (api/presence.py), and so does their going online. An online agent whose last
sign is older than the policy's presence timeout is set away by the worker's reconciliation
pass (`set_away_the_absent`), which checks that sign again in the transaction that sets them
away: an agent whose stream came back meanwhile stays online.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from domain.types import NO_CONNECTION, AgentStatus, ConversationState, EventType, Role
from store.assignment import agent_skill_groups
from store.conversations import ConversationView, view_in
from store.db import Database
from store.events import FeedEvent, agent_events_after, agent_feed_seq, append_agent_event
from store.models import Agent, AgentFeed, AgentSkill, Conversation, utcnow


class AgentNotFound(LookupError):
    pass


class AgentExists(Exception):
    """An agent with this id exists already."""


class AgentDeactivated(Exception):
    """The agent is deactivated: their status stays offline until an admin activates them."""


class AgentHoldsConversations(Exception):
    """The agent still holds conversations that are not closed (`held` of them)."""

    def __init__(self, agent_id: str, held: int) -> None:
        super().__init__(agent_id, held)
        self.held = held


@dataclass(frozen=True)
class AgentView:
    agent: Agent
    skill_groups: list[str]  # sorted
    feed_seq: int  # the newest seq of the agent's feed (0 before the first)


def _agent_views(session: Session, agents: list[Agent]) -> list[AgentView]:
    """The agents with their groups and feed seqs: two queries, however many agents."""
    ids = [agent.id for agent in agents]
    groups: dict[str, list[str]] = {agent_id: [] for agent_id in ids}
    for agent_id, group in session.exec(
        select(AgentSkill.agent_id, AgentSkill.skill_group)
        .where(col(AgentSkill.agent_id).in_(ids))
        .order_by(col(AgentSkill.skill_group))
    ):
        groups[agent_id].append(group)
    feeds = dict(
        session.exec(
            select(AgentFeed.agent_id, AgentFeed.last_seq).where(col(AgentFeed.agent_id).in_(ids))
        ).all()
    )
    return [
        AgentView(agent=agent, skill_groups=groups[agent.id], feed_seq=feeds.get(agent.id, 0))
        for agent in agents
    ]


def _agent_view(session: Session, agent: Agent) -> AgentView:
    session.flush()  # what this transaction changed, read back
    [view] = _agent_views(session, [agent])
    return view


def _locked_agent(session: Session, agent_id: str) -> Agent:
    """The agent's row, locked to the end of the transaction (PostgreSQL; SQLite serialises
    write transactions): an assignment's capacity check waits for it, and sees what it wrote.
    Unknown → AgentNotFound."""
    agent = session.get(Agent, agent_id, with_for_update=True)
    if agent is None:
        raise AgentNotFound(agent_id)
    return agent


def newest_feed_seq(db: Database, *, agent_id: str) -> int:
    """The newest seq of the agent's feed (0 before the first)."""
    with db.read() as session:
        return agent_feed_seq(session, agent_id)


def skill_groups_of(db: Database, *, agent_id: str) -> list[str]:
    """The agent's (or supervisor's) skill groups."""
    with db.read() as session:
        return agent_skill_groups(session, agent_id)


def find_agent(db: Database, *, agent_id: str) -> Agent | None:
    with db.read() as session:
        return session.get(Agent, agent_id)


@dataclass(frozen=True)
class TokenHolder:
    """Whose agent token it is: an agent, or a supervisor with the groups they oversee."""

    agent_id: str
    role: str  # Role.AGENT or Role.SUPERVISOR
    skill_groups: frozenset[str] = frozenset()  # a supervisor's (an agent's are not needed)


def agent_with_token(db: Database, *, token_hash: str) -> TokenHolder | None:
    """Who holds the agent token that hashes to `token_hash`, if anyone does and is not
    disabled."""
    with db.read() as session:
        found = session.exec(
            select(Agent.id, Agent.role).where(
                Agent.token_hash == token_hash, col(Agent.disabled).is_(False)
            )
        ).first()
        if found is None:
            return None
        agent_id, role = found
        if role != Role.SUPERVISOR:
            return TokenHolder(agent_id, role)
        return TokenHolder(agent_id, role, frozenset(agent_skill_groups(session, agent_id)))


def register_agent(
    db: Database,
    *,
    agent_id: str,
    name: str,
    token_hash: str,
    max_concurrent: int,
    skill_groups: list[str],
    role: str = Role.AGENT,
) -> AgentView:
    """A new agent (or supervisor), offline, in these skill groups. An id taken →
    AgentExists."""
    try:
        with db.write() as session:
            agent = Agent(
                id=agent_id,
                name=name,
                token_hash=token_hash,
                max_concurrent=max_concurrent,
                role=role,
            )
            session.add(agent)
            session.flush()
            session.add_all(
                AgentSkill(agent_id=agent_id, skill_group=group)
                for group in sorted(set(skill_groups))
            )
            session.flush()
            return _agent_view(session, agent)
    except sa.exc.IntegrityError:
        raise AgentExists(agent_id) from None


def view_agent(db: Database, *, agent_id: str) -> AgentView:
    """Unknown → AgentNotFound."""
    with db.read() as session:
        agent = session.get(Agent, agent_id)
        if agent is None:
            raise AgentNotFound(agent_id)
        return _agent_view(session, agent)


def change_agent_status(db: Database, *, agent_id: str, status: AgentStatus) -> list[str]:
    """Change the agent's status; returns the agent's skill groups (where an agent who comes
    online may take waiting conversations). Going online is a sign of presence. Unknown →
    AgentNotFound; deactivated → AgentDeactivated (checked in the UPDATE itself: a request of
    theirs that passed before the deactivation cannot bring them back online after it)."""
    values: dict[str, object] = {"status": status}
    if status == AgentStatus.ONLINE:  # with no stream open, the timeout counts from now
        values["last_seen_at"] = utcnow()
    with db.write() as session:
        changed = session.execute(
            sa.update(Agent)
            .where(col(Agent.id) == agent_id, col(Agent.disabled).is_(False))
            .values(values)
        ).rowcount
        if not changed:
            if session.get(Agent, agent_id) is None:
                raise AgentNotFound(agent_id)
            raise AgentDeactivated(agent_id)
        return agent_skill_groups(session, agent_id)


def change_agent(
    db: Database,
    *,
    agent_id: str,
    name: str | None = None,
    skill_groups: list[str] | None = None,
    max_concurrent: int | None = None,
) -> AgentView:
    """Rename the agent, give them these skill groups instead of theirs, or another capacity
    (None: unchanged). Nothing they hold is taken from them: a capacity below their load only
    stops new assignments until the load is below it, and a group removed keeps the
    conversations they hold from it. Unknown → AgentNotFound."""
    with db.write() as session:
        agent = _locked_agent(session, agent_id)
        if name is not None:
            agent.name = name
        if max_concurrent is not None:
            agent.max_concurrent = max_concurrent
        session.add(agent)
        if skill_groups is not None:
            wanted, held = set(skill_groups), set(agent_skill_groups(session, agent_id))
            session.execute(
                sa.delete(AgentSkill).where(
                    col(AgentSkill.agent_id) == agent_id,
                    col(AgentSkill.skill_group).in_(held - wanted),
                )
            )
            session.add_all(
                AgentSkill(agent_id=agent_id, skill_group=group) for group in sorted(wanted - held)
            )
        return _agent_view(session, agent)


def deactivate_agent(db: Database, *, agent_id: str) -> AgentView:
    """The agent deactivated: offline, never assigned again, their token refused. Refused with
    AgentHoldsConversations while a conversation assigned to them is not closed; counted under
    the agent's row lock, which an assignment takes before it assigns (take_capacity), so none
    can slip in between the count and the deactivation. Unknown → AgentNotFound."""
    with db.write() as session:
        agent = _locked_agent(session, agent_id)
        held = session.exec(
            select(func.count())
            .select_from(Conversation)
            .where(
                Conversation.agent_id == agent_id,
                Conversation.state != ConversationState.CLOSED,
            )
        ).one()
        if held:
            raise AgentHoldsConversations(agent_id, held)
        agent.disabled = True
        agent.status = AgentStatus.OFFLINE
        session.add(agent)
        return _agent_view(session, agent)


def replace_agent_token(
    db: Database, *, agent_id: str, token_hash: str, activate: bool = False
) -> AgentView:
    """The agent's token replaced by the one hashing to `token_hash`: the old one finds nobody
    from the commit on, in every API process (tokens are looked up per request), and the
    stream tickets bound to it no longer verify. With `activate`, a deactivated agent is
    active again (offline until they go online). Unknown → AgentNotFound."""
    with db.write() as session:
        agent = _locked_agent(session, agent_id)
        agent.token_hash = token_hash
        if activate:
            agent.disabled = False
        session.add(agent)
        return _agent_view(session, agent)


def list_agents(
    db: Database, *, include_inactive: bool, after: str | None, limit: int
) -> list[AgentView]:
    """Up to `limit` agents in id order, after the id `after`; active ones only unless
    `include_inactive`."""
    query = select(Agent).order_by(col(Agent.id)).limit(limit)
    if not include_inactive:
        query = query.where(col(Agent.disabled).is_(False))
    if after is not None:
        query = query.where(col(Agent.id) > after)
    with db.read() as session:
        return _agent_views(session, list(session.exec(query).all()))


def note_presence(db: Database, *, agent_id: str) -> None:
    """A sign of the agent's workbench now: a stream of theirs is open, or has just closed."""
    with db.write_connection() as connection:
        connection.execute(
            sa.update(Agent).where(col(Agent.id) == agent_id).values(last_seen_at=utcnow())
        )


def set_away_the_absent(db: Database, *, presence_timeout: timedelta) -> list[str]:
    """Set away each online agent with no sign of presence for `presence_timeout` (no stream
    open, nor going online, since), with an agent.status_changed (reason no_connection) on
    their feed; each in a transaction of their own that checks the sign again (a stream
    that came back meanwhile keeps the agent online). The ids of those set away."""
    absent = sa.and_(
        col(Agent.status) == AgentStatus.ONLINE,
        col(Agent.last_seen_at) < utcnow() - presence_timeout,
    )
    with db.read() as session:
        candidates = session.exec(select(Agent.id).where(absent).order_by(col(Agent.id))).all()
    away = []
    for agent_id in candidates:
        with db.write_connection() as connection:
            changed = connection.execute(
                sa.update(Agent)
                .where(col(Agent.id) == agent_id, absent)
                .values(status=AgentStatus.AWAY)
            ).rowcount
            if changed:
                append_agent_event(
                    connection,
                    agent_id=agent_id,
                    type=EventType.AGENT_STATUS_CHANGED,
                    data={"status": AgentStatus.AWAY, "reason": NO_CONNECTION},
                )
                away.append(agent_id)
    return away


def agent_conversations(
    db: Database, *, agent_id: str, state: ConversationState, limit: int
) -> list[ConversationView]:
    """The agent's conversations in this state, the most recently assigned first."""
    with db.read() as session:
        conversations = session.exec(
            select(Conversation)
            .where(Conversation.agent_id == agent_id, Conversation.state == state)
            .order_by(col(Conversation.assigned_at).desc())
            .limit(limit)
        ).all()
        return [view_in(session, conversation) for conversation in conversations]


def agent_feed(
    db: Database, *, agent_id: str, after_seq: int, limit: int
) -> list[tuple[int, FeedEvent]]:
    """Up to `limit` entries of the agent's feed after `after_seq`: (feed seq, event)."""
    with db.read() as session:
        return agent_events_after(session, agent_id=agent_id, after_seq=after_seq, limit=limit)
