"""The reference: the same work done with bare Temporal calls, on the same server in the same run.

Minimal workflows and their own minimal worker (`python -m bench.reference`), with the same
workflow cache bound as worker.py:

- `BenchInbox` takes `message` signals (B1, B2, B4, B6): it counts them, keeps each signal's lag
  (workflow task time minus the sender's clock) when asked to, and continues as new when the
  server suggests it, as the conversation workflow does.
- `BenchSleeper` sleeps to one deadline, then runs an activity that stamps the wall clock
  (B3: the timer, then the activity that acts on it, as the conversation's auto-close does).
- `BenchSeat` is B5's chain: an update runs an activity that signals another workflow, which
  then runs an activity (close → assignment signal → record_assignment in the product).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

TASK_QUEUE = "bench-reference"
# As worker.py: idle workflows are evicted and replayed when they wake.
MAX_CACHED_WORKFLOWS = 2000
_ACTIVITY = timedelta(seconds=30)


@dataclass
class InboxState:
    record_lags: bool = False
    count: int = 0
    runs: int = 1
    done: bool = False
    lags: list[float] = field(default_factory=list)


@workflow.defn(name="BenchInbox")
class BenchInbox:
    @workflow.init
    def __init__(self, state: InboxState) -> None:
        self.state = state

    @workflow.run
    async def run(self, state: InboxState) -> int:
        while not self.state.done:
            await workflow.wait_condition(
                lambda: self.state.done or workflow.info().is_continue_as_new_suggested()
            )
            if not self.state.done:
                await workflow.wait_condition(workflow.all_handlers_finished)
                self.state.runs += 1
                workflow.continue_as_new(self.state)
        return self.state.count

    @workflow.signal
    def message(self, sent_at: float) -> None:
        self.state.count += 1
        if self.state.record_lags:
            self.state.lags.append(workflow.now().timestamp() - sent_at)

    @workflow.signal
    def finish(self) -> None:
        self.state.done = True

    @workflow.query
    def stats(self) -> InboxState:
        return self.state


@workflow.defn(name="BenchSleeper")
class BenchSleeper:
    @workflow.run
    async def run(self, deadline: float) -> float:
        """Lateness of the act after the timer: the stamping activity's clock minus deadline."""
        remaining = deadline - workflow.now().timestamp()
        if remaining > 0:
            await workflow.sleep(remaining)
        stamped: float = await workflow.execute_activity(
            "bench_stamp", start_to_close_timeout=_ACTIVITY
        )
        return stamped - deadline


@dataclass
class Free:
    next_workflow_id: str
    sent_at: float


@workflow.defn(name="BenchSeat")
class BenchSeat:
    def __init__(self) -> None:
        self.pending: list[float] = []
        self.latencies: list[float] = []
        self.done = False

    @workflow.run
    async def run(self) -> list[float]:
        while True:
            await workflow.wait_condition(lambda: bool(self.pending) or self.done)
            if not self.pending:
                return self.latencies
            sent_at = self.pending.pop(0)
            stamped: float = await workflow.execute_activity(
                "bench_stamp", start_to_close_timeout=_ACTIVITY
            )
            self.latencies.append(stamped - sent_at)

    @workflow.update
    async def free(self, request: Free) -> None:
        await workflow.execute_activity("bench_assign", request, start_to_close_timeout=_ACTIVITY)

    @workflow.signal
    def assigned(self, sent_at: float) -> None:
        self.pending.append(sent_at)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def latencies_so_far(self) -> list[float]:
        return self.latencies


class ReferenceActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name="bench_stamp")
    async def stamp(self) -> float:
        return time.time()

    @activity.defn(name="bench_assign")
    async def assign(self, request: Free) -> None:
        handle = self.client.get_workflow_handle(request.next_workflow_id)
        await handle.signal("assigned", request.sent_at)


def build_reference_worker(client: Client, task_queue: str = TASK_QUEUE) -> Worker:
    activities = ReferenceActivities(client)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BenchInbox, BenchSleeper, BenchSeat],
        activities=[activities.stamp, activities.assign],
        max_cached_workflows=MAX_CACHED_WORKFLOWS,
        graceful_shutdown_timeout=timedelta(seconds=5),
    )


async def _serve(address: str, namespace: str, task_queue: str) -> None:
    client = await Client.connect(address, namespace=namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with build_reference_worker(client, task_queue):
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="The benchmarks' bare Temporal worker")
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", default=TASK_QUEUE)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(args.address, args.namespace, args.task_queue))
    # As worker.py: the SDK's Rust threads can abort CPython's finalization (sdk-python#300).
    os._exit(0)


if __name__ == "__main__":
    main()
