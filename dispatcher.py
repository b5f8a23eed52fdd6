"""The dispatcher: assign waiting conversations in the database, then tell each workflow its
agent through the gateway; and the reconciliation pass, the safety net for a trigger or a signal
lost to a crash.

Its triggers are in the API (an agent comes online) and in the activities (a conversation
queues, an agent's load drops), and the worker runs the pass: so it lives beside them, at the
top level, importing only store/ and workflows/gateway.py (neither api/ nor activities/).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta

from temporalio.client import Client

from domain.errors import ConversationEnded, EngineUnavailable
from store.assignment import (
    NewAssignment,
    announce,
    dispatch,
    stranded_assignments,
    waiting_groups,
)
from store.db import Database
from workflows.gateway import ConversationGateway

log = logging.getLogger("switchboard.dispatch")


async def _tell_assigned(gateway: ConversationGateway, conversation_id: str, agent_id: str) -> bool:
    """Signal one workflow its agent. A lost signal is sent again by the reconciliation pass."""
    try:
        await gateway.assign_agent(conversation_id, agent_id)
    except ConversationEnded as exc:
        log.info("could not signal %s of agent %s: %s", conversation_id, agent_id, exc)
        return False
    except EngineUnavailable as exc:
        log.warning("could not signal %s of agent %s: %s", conversation_id, agent_id, exc.__cause__)
        return False
    return True


async def assign_and_notify(
    *, db: Database, client: Client, skill_groups: Iterable[str]
) -> list[NewAssignment]:
    groups = list(skill_groups)
    if not groups:
        return []
    made = await asyncio.to_thread(dispatch, db, groups, announce_places=False)
    gateway = ConversationGateway(client)
    for assignment in made:
        log.info(
            "assigned conversation %s to agent %s in %s",
            assignment.conversation_id,
            assignment.agent_id,
            assignment.skill_group,
        )
        await _tell_assigned(gateway, assignment.conversation_id, assignment.agent_id)
    # The served first, then those still waiting hear their new places (bench/ B5).
    await asyncio.to_thread(announce, db, {assignment.skill_group for assignment in made})
    return made


async def reconcile(
    *, db: Database, client: Client, stranded_after: timedelta = timedelta(seconds=5)
) -> int:
    """Assign whoever waits for an agent with room, and signal again the assignments their
    workflows have not recorded. Safe to run anywhere, any time."""
    groups = await asyncio.to_thread(waiting_groups, db)
    made = await assign_and_notify(db=db, client=client, skill_groups=groups)
    stranded = await asyncio.to_thread(stranded_assignments, db, older_than=stranded_after)
    gateway = ConversationGateway(client)
    for conversation_id, agent_id in stranded:
        await _tell_assigned(gateway, conversation_id, agent_id)
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
