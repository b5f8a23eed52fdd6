"""Transcript retention: a run, started by the worker's schedule (workflows/schedules.py), that
erases the text of conversations and tickets closed longer ago than the policy keeps transcripts.

It erases in bounded batches, one activity call each (the activity reads the policy: how long,
and how many a batch), until a batch comes back short; a run that has done MAX_BATCHES goes on
in a new run, so its history stays short however much is due. Its input and result are counts,
never a conversation's or a ticket's text or its customer.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.types import RetentionBatch, RetentionRun

# A database outage delays the erasure, never drops it: retry without a limit.
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# A batch is up to 1000 conversations (the policy's batch_size), one transaction each.
_BATCH_TIMEOUT = timedelta(minutes=10)
# Batches per run, then continue-as-new.
MAX_BATCHES = 100


@workflow.defn(name="TranscriptRetention")
class TranscriptRetention:
    @workflow.run
    async def run(self, done: RetentionRun) -> RetentionRun:
        for _ in range(MAX_BATCHES):
            batch = await workflow.execute_activity(
                "erase_expired_transcripts",
                start_to_close_timeout=_BATCH_TIMEOUT,
                retry_policy=_RETRY,
                result_type=RetentionBatch,
            )
            done = RetentionRun(
                conversations=done.conversations + batch.conversations,
                messages=done.messages + batch.messages,
                tickets=done.tickets + batch.tickets,
            )
            if not batch.more:
                return done
        workflow.continue_as_new(done)
