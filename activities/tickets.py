"""Activities of the Ticket workflow: its plan read from the stored ticket, and a fired timer
acted on if the stored ticket still has it due (store/tickets.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.policy import PolicySource
from domain.types import TicketPlan, TicketPlanRequest, TicketTimer, TicketTimerDue
from store import tickets
from store.db import Database


class TicketActivities:
    def __init__(self, *, db: Database, policy: PolicySource) -> None:
        self.db = db
        self.policy = policy

    @activity.defn(name="plan_ticket")
    async def plan_ticket(self, request: TicketPlanRequest) -> TicketPlan:
        policy = self.policy.current()
        try:
            return await asyncio.to_thread(
                tickets.ticket_plan,
                self.db,
                policy=policy,
                ticket_id=request.ticket_id,
                at=request.at,
            )
        except tickets.TicketNotFound as exc:
            raise ApplicationError(
                f"ticket {request.ticket_id} is not in the database", non_retryable=True
            ) from exc

    @activity.defn(name="act_on_ticket_timer")
    async def act_on_ticket_timer(self, due: TicketTimerDue) -> bool:
        """True if the timer's decision was taken, False if the stored ticket declined it."""
        policy = self.policy.current()
        try:
            return await asyncio.to_thread(
                tickets.act_on_timer,
                self.db,
                policy=policy,
                ticket_id=due.ticket_id,
                timer=TicketTimer(due.timer),
                at=due.at,
            )
        except tickets.TicketNotFound as exc:
            raise ApplicationError(
                f"ticket {due.ticket_id} is not in the database", non_retryable=True
            ) from exc

    def all(self) -> list[Callable[..., object]]:
        return [self.plan_ticket, self.act_on_ticket_timer]
