"""The dispatcher: assign waiting conversations in the database, then tell each workflow its
agent through the gateway; and the reconciler, the safety net for a trigger or a signal lost to
a crash: assignments, messages, workflows that never started, and tickets' changes. Its pass
also sets away the online agents whose workbench has held no stream for the presence timeout.

Its triggers are in the API (an agent comes online) and in the activities (a conversation
queues, an agent's load drops), and the worker runs the pass: so it lives beside them, at the
top level, importing only store/ and workflows/gateway.py (neither api/ nor activities/).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, astuple, dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import MetricMeter

from domain.errors import ConversationEnded, EngineUnavailable
from domain.policy import PolicySource
from domain.types import MessagePosted
from store.agents import set_away_the_absent
from store.assignment import (
    NewAssignment,
    announce,
    dispatch,
    stranded_assignments,
    waiting_groups,
)
from store.conversations import unstarted_conversations
from store.db import Database
from store.messages import mark_signalled, unsignalled_messages
from store.tickets import untold_tickets
from workflows.gateway import ConversationGateway, TicketGateway

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
    # Every trigger (a queue grew, a load dropped, an agent came or went) may move the
    # estimated waits of these groups, whether or not anyone was assigned.
    await notify_assigned(db=db, client=client, made=made, also_announce=groups)
    return made


async def notify_assigned(
    *,
    db: Database,
    client: Client,
    made: list[NewAssignment],
    also_announce: Iterable[str] = (),
) -> None:
    """Tell each workflow its new agent, then those still waiting (in the assignments' groups
    and `also_announce`) their new places and estimates."""
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
    groups = {assignment.skill_group for assignment in made} | set(also_announce)
    await asyncio.to_thread(announce, db, groups)


@dataclass
class Repairs:
    """What one reconciliation pass repaired, by kind (the worker's metric
    `switchboard_reconciled{kind}` counts them)."""

    assignments: int = 0  # waiting conversations given to agents with room (a lost trigger)
    assignment_signals: int = 0  # assignments their workflows had not recorded, told again
    message_signals: int = 0  # newest messages their workflows had not been told of
    workflows_started: int = 0  # conversations whose workflow never started
    tickets_told: int = 0  # tickets whose workflow had not read their newest change
    agents_away: int = 0  # online agents with no stream for the presence timeout, set away

    def total(self) -> int:
        return sum(astuple(self))


class Reconciler:
    """The safety net for a trigger or a signal lost to a crash, or to a client that gave up:
    every pass compares what is stored with what the workflows were told, and tells them.
    Safe to run anywhere, any time, in any number of workers: every repair is idempotent.
    Each pass does at most `batch` repairs of a kind; a conversation whose repair keeps
    failing is tried again after a growing pause."""

    def __init__(
        self,
        *,
        db: Database,
        client: Client,
        policy: PolicySource,
        task_queue: str,
        settle: timedelta = timedelta(seconds=5),
        batch: int = 100,
        meter: MetricMeter | None = None,
    ) -> None:
        self.db = db
        self.gateway = ConversationGateway(client, policy=policy.current)
        self.tickets = TicketGateway(self.gateway, task_queue=task_queue)
        self.client = client
        self.policy = policy
        self.task_queue = task_queue
        # How long a write may stay untold before it is taken for lost (the API tells the
        # workflow right after storing, and records that it did within a second).
        self.settle = settle
        self.batch = batch
        self._repaired = (meter or MetricMeter.noop).create_counter(
            "switchboard_reconciled", "Lost triggers and signals the reconciler repaired"
        )
        self._backoff: dict[str, tuple[int, float]] = {}  # failures, monotonic time to retry

    async def reconcile(self) -> Repairs:
        repairs = Repairs()
        # Before the assignments: an absent agent is given nothing more in this pass.
        away = await asyncio.to_thread(
            set_away_the_absent,
            self.db,
            presence_timeout=self.policy.current().agents.presence_timeout,
        )
        for agent_id in away:
            log.info("agent %s set away: no stream open for the presence timeout", agent_id)
        repairs.agents_away = len(away)
        groups = await asyncio.to_thread(waiting_groups, self.db)
        made = await assign_and_notify(db=self.db, client=self.client, skill_groups=groups)
        repairs.assignments = len(made)
        stranded = await asyncio.to_thread(stranded_assignments, self.db, older_than=self.settle)
        for conversation_id, agent_id in stranded[: self.batch]:
            repairs.assignment_signals += await _tell_assigned(
                self.gateway, conversation_id, agent_id
            )
        repairs.message_signals = await self._tell_messages()
        repairs.workflows_started = await self._start_workflows()
        repairs.tickets_told = await self._tell_tickets()
        for kind, count in asdict(repairs).items():
            if count:
                self._repaired.add(count, {"kind": kind})
        return repairs

    async def _tell_messages(self) -> int:
        untold = await asyncio.to_thread(
            unsignalled_messages, self.db, older_than=self.settle, limit=self.batch
        )
        told: dict[str, int] = {}
        for message in untold:
            if not self._due(message.conversation_id):
                continue
            try:
                await self.gateway.post_message(
                    message.conversation_id,
                    MessagePosted(message.message_id, message.seq, message.sender_role),
                )
            except ConversationEnded:
                pass  # its workflow is over: nothing to tell
            except EngineUnavailable as exc:
                self._failed(message.conversation_id, exc)
                continue
            self._backoff.pop(message.conversation_id, None)
            told[message.conversation_id] = message.seq
            log.info("told conversation %s of message %d", message.conversation_id, message.seq)
        await asyncio.to_thread(mark_signalled, self.db, told)
        return len(told)

    async def _start_workflows(self) -> int:
        unstarted = await asyncio.to_thread(
            unstarted_conversations, self.db, older_than=self.settle, limit=self.batch
        )
        started = 0
        for conversation in unstarted:
            if not self._due(conversation.id):
                continue
            try:
                if await self.gateway.start(
                    conversation, policy=self.policy.current(), task_queue=self.task_queue
                ):
                    started += 1
                    log.info("started the workflow of conversation %s", conversation.id)
            except EngineUnavailable as exc:
                self._failed(conversation.id, exc)
                continue
            self._backoff.pop(conversation.id, None)
        return started

    async def _tell_tickets(self) -> int:
        """Tell each ticket's workflow (starting it if need be) of a change it has not read."""
        untold = await asyncio.to_thread(
            untold_tickets, self.db, older_than=self.settle, limit=self.batch
        )
        told = 0
        for ticket in untold:
            key = f"ticket:{ticket.ticket_id}"
            if not self._due(key):
                continue
            try:
                await self.tickets.ticket_changed(ticket.ticket_id, version=ticket.version)
            except EngineUnavailable as exc:
                self._failed(key, exc)
                continue
            self._backoff.pop(key, None)
            told += 1
            log.info("told ticket %s of version %d", ticket.ticket_id, ticket.version)
        return told

    def _due(self, conversation_id: str) -> bool:
        failing = self._backoff.get(conversation_id)
        return failing is None or failing[1] <= time.monotonic()

    def _failed(self, conversation_id: str, exc: Exception) -> None:
        failures = self._backoff.get(conversation_id, (0, 0.0))[0] + 1
        pause = min(_MAX_BACKOFF, self.settle.total_seconds() * 2**failures)
        self._backoff[conversation_id] = (failures, time.monotonic() + pause)
        log.warning(
            "could not repair conversation %s (%d times; next try in %.0fs): %s",
            conversation_id,
            failures,
            pause,
            exc.__cause__ or exc,
        )

    async def run_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                repairs = await self.reconcile()
                if repairs.total():
                    log.info("reconciliation repaired %s", repairs)
            except Exception:
                log.exception("reconciliation pass failed; trying again in %.0fs", interval)


_MAX_BACKOFF = 600.0
