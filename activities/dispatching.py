"""Assign waiting conversations and tell their workflows. Used by activities, API and worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta

from sqlmodel import col, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from domain.types import AgentAssigned, ConversationState, workflow_id
from store.assignment import NewAssignment, announce, dispatch, waiting_groups
from store.db import Database
from store.models import Conversation, utcnow

log = logging.getLogger("switchboard.dispatch")

AGENT_ASSIGNED_SIGNAL = "agent_assigned"


async def tell_assigned(client: Client, conversation_id: str, agent_id: str) -> bool:
    """Signal one workflow its agent. A lost signal is re-sent by the reconciliation pass."""
    handle = client.get_workflow_handle(workflow_id(conversation_id))
    try:
        await handle.signal(AGENT_ASSIGNED_SIGNAL, AgentAssigned(agent_id=agent_id))
    except RPCError as exc:
        level = logging.INFO if exc.status == RPCStatusCode.NOT_FOUND else logging.WARNING
        log.log(level, "could not signal %s of agent %s: %s", conversation_id, agent_id, exc)
        return False
    return True


async def assign_and_notify(
    *, db: Database, client: Client, skill_groups: Iterable[str]
) -> list[NewAssignment]:
    groups = list(skill_groups)
    if not groups:
        return []
    made = await asyncio.to_thread(dispatch, db, groups, announce_places=False)
    for assignment in made:
        log.info(
            "assigned conversation %s to agent %s in %s",
            assignment.conversation_id,
            assignment.agent_id,
            assignment.skill_group,
        )
        await tell_assigned(client, assignment.conversation_id, assignment.agent_id)
    # The served first, then those still waiting hear their new places (bench/ B5).
    await asyncio.to_thread(announce, db, {assignment.skill_group for assignment in made})
    return made


def _stranded_assignments(db: Database, older_than: timedelta) -> list[tuple[str, str]]:
    """Assigned in the database but the workflow has not recorded it: its signal was lost."""
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


def _groups_with_waiting(db: Database) -> list[str]:
    with db.read() as session:
        return waiting_groups(session)


async def reconcile(
    *, db: Database, client: Client, stranded_after: timedelta = timedelta(seconds=5)
) -> int:
    """The safety net for assignment triggers lost to a crash. Safe to run anywhere, any time."""
    groups = await asyncio.to_thread(_groups_with_waiting, db)
    made = await assign_and_notify(db=db, client=client, skill_groups=groups)
    stranded = await asyncio.to_thread(_stranded_assignments, db, stranded_after)
    for conversation_id, agent_id in stranded:
        await tell_assigned(client, conversation_id, agent_id)
    return len(made) + len(stranded)


async def reconcile_forever(*, db: Database, client: Client, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            repaired = await reconcile(db=db, client=client)
            if repaired:
                log.info("reconciliation repaired %d assignment(s)", repaired)
        except Exception:
            log.exception("reconciliation pass failed; trying again in %.0fs", interval)
