"""One workflow per ticket (`ticket-<id>`): it owns the ticket's timers — the SLA's reminders
and breaches (with their escalation), and the auto-close of a pending or a solved ticket.

Its loop: read the stored ticket and its next timer (`plan_ticket`), show its status,
priority, assignee and next breach in the search attributes, then wait for that timer or for
the API's word that the ticket changed (`ticket_changed`). A fired timer is acted on by
`act_on_ticket_timer`, which checks the stored ticket first and declines if it changed
meanwhile. A closed ticket ends the workflow. Ids, enums and times only cross into Temporal.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.types import (
        SA_SLA_BREACH_AT,
        SA_TICKET_ASSIGNEE,
        SA_TICKET_PRIORITY,
        SA_TICKET_STATUS,
        TicketChanged,
        TicketFlow,
        TicketPlan,
        TicketPlanRequest,
        TicketStatus,
        TicketTimerDue,
    )

# A database outage delays a decision, never drops it.
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
_ACTIVITY_TIMEOUT = timedelta(seconds=30)


@workflow.defn(name="Ticket")
class TicketWorkflow:
    @workflow.init
    def __init__(self, flow: TicketFlow) -> None:
        self.flow = flow
        self.changes = 0  # changes told of so far (this run)
        self.plan: TicketPlan | None = None

    @workflow.run
    async def run(self, flow: TicketFlow) -> str:
        while True:
            seen = self.changes
            plan = await workflow.execute_activity(
                "plan_ticket",
                TicketPlanRequest(ticket_id=flow.ticket_id, at=workflow.now()),
                start_to_close_timeout=_ACTIVITY_TIMEOUT,
                retry_policy=_RETRY,
                result_type=TicketPlan,
            )
            self._show(plan)
            if plan.status == TicketStatus.CLOSED:
                return TicketStatus.CLOSED.value
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(TicketFlow(ticket_id=flow.ticket_id))
            if plan.due_at is not None and plan.due_at <= workflow.now():
                await self._timer_fired(plan)
                continue
            timeout = None if plan.due_at is None else plan.due_at - workflow.now()
            if not await self._changed_since(seen, timeout=timeout):
                await self._timer_fired(plan)

    async def _changed_since(self, seen: int, *, timeout: timedelta | None) -> bool:
        """Wait for a change after the `seen`-th, or the timeout (then False)."""
        try:
            await workflow.wait_condition(lambda: self.changes > seen, timeout=timeout)
        except TimeoutError:
            return False
        return True

    async def _timer_fired(self, plan: TicketPlan) -> None:
        assert plan.timer is not None
        await workflow.execute_activity(
            "act_on_ticket_timer",
            TicketTimerDue(ticket_id=self.flow.ticket_id, timer=plan.timer, at=workflow.now()),
            start_to_close_timeout=_ACTIVITY_TIMEOUT,
            retry_policy=_RETRY,
            result_type=bool,
        )

    def _show(self, plan: TicketPlan) -> None:
        """The Temporal UI's view of it: search attributes and current details."""
        if self.plan is not None and (
            self.plan.status,
            self.plan.priority,
            self.plan.assignee_id,
            self.plan.sla_breach_at,
            self.plan.timer,
            self.plan.due_at,
        ) == (
            plan.status,
            plan.priority,
            plan.assignee_id,
            plan.sla_breach_at,
            plan.timer,
            plan.due_at,
        ):
            return
        before, self.plan = self.plan, plan
        updates = [
            SA_TICKET_STATUS.value_set(plan.status),
            SA_TICKET_PRIORITY.value_set(plan.priority),
        ]
        # An attribute with no value is left out, and unset only once it had one.
        if plan.assignee_id is not None:
            updates.append(SA_TICKET_ASSIGNEE.value_set(plan.assignee_id))
        elif before is not None and before.assignee_id is not None:
            updates.append(SA_TICKET_ASSIGNEE.value_unset())
        if plan.sla_breach_at is not None:
            updates.append(SA_SLA_BREACH_AT.value_set(plan.sla_breach_at))
        elif before is not None and before.sla_breach_at is not None:
            updates.append(SA_SLA_BREACH_AT.value_unset())
        workflow.upsert_search_attributes(updates)
        next_timer = (
            f"next: {plan.timer} at {plan.due_at:%Y-%m-%d %H:%M:%S} UTC"
            if plan.due_at is not None
            else "no timer"
        )
        workflow.set_current_details(f"{plan.status} · {plan.priority} · {next_timer}")

    @workflow.signal
    def ticket_changed(self, change: TicketChanged) -> None:
        self.changes += 1

    @workflow.query
    def current_plan(self) -> TicketPlan | None:
        return self.plan
