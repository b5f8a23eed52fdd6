"""An agent is present while a workbench holds their stream.

Each open stream of the agent's own (not an admin's look at their feed) writes a sign of
presence to the database as it opens, every quarter of the policy's `agents.presence_timeout`
while it stays open, and as it ends, so the sign holds across API processes. The worker's
reconciliation pass sets away an online agent whose last sign is older than the timeout
(store/agents.py: set_away_the_absent); a stream of a process that died stops writing, and
its agent goes away in time too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from starlette.concurrency import run_in_threadpool

from domain.policy import PolicySource
from store.agents import note_presence
from store.conversations import note_visitor_stream
from store.db import Database, unavailable
from store.models import utcnow

log = logging.getLogger("switchboard.presence")

# Signs per presence timeout: a late one or two still keep the agent online.
SIGNS_PER_TIMEOUT = 4


async def keep_present(db: Database, policy: PolicySource, agent_id: str) -> None:
    """Run while a stream of the agent's is open (cancelled when it ends): a sign now, then
    every quarter of the presence timeout, and a last one as the stream ends (from which the
    timeout counts)."""
    try:
        while True:
            await _sign(db, agent_id)
            timeout = policy.current().agents.presence_timeout
            await asyncio.sleep(timeout.total_seconds() / SIGNS_PER_TIMEOUT)
    finally:
        await _sign(db, agent_id)


async def _sign(db: Database, agent_id: str) -> None:
    try:
        await run_in_threadpool(note_presence, db, agent_id=agent_id)
    except Exception as exc:
        if not unavailable(exc):
            raise
        # The next sign may make it; a database down for the whole timeout sets them away.
        log.warning("could not note agent %s present (%s)", agent_id, exc)


# How long a visitor's stream counts as open from its last sign; signs come thrice as often.
VISITOR_STREAM_LEASE = timedelta(seconds=60)


async def keep_visitor_present(db: Database, conversation_id: str) -> None:
    """Run while a stream of the visitor's is open (cancelled when it ends): the stream counts
    as open for a lease from each sign, renewed while it is, and ends as it does, so an agent's
    message to a visitor who closed the app is pushed at once (visitor.unread)."""
    try:
        while True:
            await _visitor_sign(db, conversation_id, utcnow() + VISITOR_STREAM_LEASE)
            await asyncio.sleep(VISITOR_STREAM_LEASE.total_seconds() / 3)
    finally:
        await _visitor_sign(db, conversation_id, utcnow())


async def _visitor_sign(db: Database, conversation_id: str, until: datetime) -> None:
    try:
        await run_in_threadpool(
            note_visitor_stream, db, conversation_id=conversation_id, until=until
        )
    except Exception as exc:
        if not unavailable(exc):
            raise
        log.warning("could not note the visitor of %s present (%s)", conversation_id, exc)
