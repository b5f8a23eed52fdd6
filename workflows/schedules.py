"""The worker's schedules on the Temporal server: transcript retention, every
`retention_interval_seconds`. Created, or brought up to date, by every worker that starts (a
fixed id: one schedule however many workers); never imported by workflow code."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from domain.types import RetentionRun
from workflows.retention import TranscriptRetention

RETENTION_SCHEDULE_ID = "switchboard-retention"


def retention_schedule(*, task_queue: str, every: timedelta, workflow_id: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            TranscriptRetention.run, RetentionRun(), id=workflow_id, task_queue=task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A run still going when the next is due is enough; after an outage, one run catches up.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
    )


async def ensure_retention_schedule(
    client: Client,
    *,
    task_queue: str,
    every: timedelta,
    schedule_id: str = RETENTION_SCHEDULE_ID,
) -> None:
    """Create the retention schedule, or update it to this task queue and interval."""
    schedule = retention_schedule(task_queue=task_queue, every=every, workflow_id=schedule_id)
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def updated(current: ScheduleUpdateInput) -> ScheduleUpdate:
            # Paused by ops (the UI, `temporal schedule toggle`): it stays paused.
            state = current.description.schedule.state
            return ScheduleUpdate(schedule=replace(schedule, state=state))

        await client.get_schedule_handle(schedule_id).update(updated)
