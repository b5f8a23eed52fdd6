"""The Temporal worker: conversation and ticket workflows, their activities, the
reconciliation pass and the webhook courier.

Run with `python worker.py` (make run does it for you). Several workers may run at once.
"""

from __future__ import annotations

import asyncio
import compileall
import functools
import hashlib
import logging
import os
import signal
import sys
import tempfile
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from types import CodeType
from typing import Any

from temporalio.client import Client
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RPCError
from temporalio.worker import Worker, WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

from activities import ConversationActivities
from activities.bot import BotActivities
from activities.retention import RetentionActivities
from activities.tickets import TicketActivities
from courier import WebhookCourier
from dispatcher import Reconciler
from domain.policy import PolicySource
from logging_setup import configure_logging
from media.storage import ObjectStore, open_object_store
from settings import PROJECT_ROOT, Settings, get_settings
from store.db import Database
from store.webhooks import route_webhooks
from temporal_client import connect
from workflows import ConversationWorkflow
from workflows.retention import TranscriptRetention
from workflows.schedules import ensure_retention_schedule
from workflows.ticket import TicketWorkflow

log = logging.getLogger("switchboard.worker")


def sdk_runtime(*, metrics_address: str) -> Runtime:
    """The Temporal SDK's runtime for this worker: its metrics served for Prometheus at
    http://<metrics_address>/metrics ("" for none), and Core's log lines through our logging."""
    core_logs = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    if not metrics_address:
        return Runtime(telemetry=TelemetryConfig(logging=core_logs))
    try:
        runtime = Runtime(
            telemetry=TelemetryConfig(
                logging=core_logs, metrics=PrometheusConfig(bind_address=metrics_address)
            )
        )
    except ValueError as exc:
        # Taken, say, by another worker on this machine: serving conversations matters more.
        log.warning("no worker metrics: %s (set SWITCHBOARD_WORKER_METRICS_ADDRESS)", exc)
        return Runtime(telemetry=TelemetryConfig(logging=core_logs))
    log.info("Temporal SDK metrics at http://%s/metrics", metrics_address)
    return runtime


def cache_workflow_bytecode() -> None:
    """The workflow sandbox imports workflows/ afresh for every workflow run it starts (a new
    conversation, or one evicted from the cache that wakes up). Where Python writes no bytecode
    (PYTHONDONTWRITEBYTECODE, as the Dockerfile sets; a read-only install) each such import
    would compile workflows/conversation.py from source (bench/ B4 starts 10,000 runs; the
    behaviour in workflows/machine.py is imported once). Compile workflows/ once into a
    private bytecode cache instead, which imports read from."""
    if not sys.dont_write_bytecode:
        return  # Python caches the bytecode beside the sources itself
    sys.pycache_prefix = str(Path(tempfile.gettempdir()) / f"switchboard-pycache-{os.getuid()}")
    compileall.compile_dir(PROJECT_ROOT / "workflows", quiet=2)


@functools.lru_cache(maxsize=64)
def sandbox_code(source: str) -> CodeType:
    """One of the few snippets the SDK's sandbox runs to enter a workflow run (an
    activation, a payload's serialization context, a new run's imports), compiled once."""
    return compile(source, "<string>", "exec")


class _CompiledSandboxInstance(_Instance):
    """The SDK's sandboxed workflow run, its snippets compiled once: the SDK hands `exec` the
    snippet's source each time, and compiling it (some 17 µs) was most of the sandbox's own
    cost per activation and per payload visited (bench/ B3's profile of the worker). The
    sandbox, its restrictions and its imports are the SDK's, unchanged."""

    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(sandbox_code(code), **extra_globals)  # type: ignore[arg-type]


class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """The SDK's sandboxed workflow runner (default restrictions), with `_CompiledSandboxInstance`
    for its runs. Built on a private class of the SDK (temporalio 1.35, pinned):
    tests/test_worker_sandbox.py says at once if an upgrade moves it."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _CompiledSandboxInstance(det, self.runner_class, self.restrictions)


# What the worker runs of ours: the packages and modules it imports (the API's are not).
WORKER_SOURCES = (
    "workflows",
    "activities",
    "domain",
    "store",
    "media",
    "worker.py",
    "dispatcher.py",
    "courier.py",
    "settings.py",
    "temporal_client.py",
    "logging_setup.py",
)


def source_build_id(root: Path = PROJECT_ROOT) -> str:
    """The worker's build id: a hash of WORKER_SOURCES' Python files (paths and contents, in
    order), the SDK's version and Python's. The SDK's default hashes the bytecode of every
    module loaded, compiling each from source where no bytecode is cached (PYTHONDONTWRITEBYTECODE,
    our private pycache prefix): seconds of CPU at every start. This reads a few hundred KiB.
    Like the default it changes whenever our code or the SDK does, and stays the same for the
    same code on every worker; it is not a versioning switch (no worker versioning is used):
    Temporal records it on each workflow task, for a reset "to before build X"."""
    digest = hashlib.sha256()
    digest.update(f"temporalio {version('temporalio')}; python {sys.version}\n".encode())
    for name in WORKER_SOURCES:
        top = root / name
        files = sorted(top.rglob("*.py")) if top.is_dir() else [top] if top.exists() else []
        for path in files:
            digest.update(f"{path.relative_to(root).as_posix()}\n".encode())
            digest.update(path.read_bytes())
    return f"switchboard-{digest.hexdigest()[:32]}"


def build_worker(
    *, client: Client, db: Database, policy: PolicySource, task_queue: str, objects: ObjectStore
) -> Worker:
    # The events its activities write go into the webhooks' outbox too.
    route_webhooks(db, policy.current)
    activities = ConversationActivities(db=db, policy=policy, client=client)
    retention = RetentionActivities(db=db, policy=policy, objects=objects)
    bot = BotActivities(db=db, policy=policy)
    ticket = TicketActivities(db=db, policy=policy)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ConversationWorkflow, TranscriptRetention, TicketWorkflow],
        activities=[*activities.all(), *retention.all(), *bot.all(), *ticket.all()],
        workflow_runner=CompiledSandboxRunner(),
        # Bounded cache: idle conversations are evicted and replayed when they wake.
        max_cached_workflows=2000,
        graceful_shutdown_timeout=timedelta(seconds=10),
        build_id=source_build_id(),
    )


def webhook_courier(db: Database, policy: PolicySource, settings: Settings) -> WebhookCourier:
    return WebhookCourier(
        db=db,
        policy=policy,
        poll_interval=settings.webhook_poll_interval_seconds,
        timeout=settings.webhook_timeout_seconds,
        first_retry=settings.webhook_first_retry_seconds,
    )


async def run_worker(settings: Settings) -> None:
    cache_workflow_bytecode()
    policy = PolicySource(settings.policy)
    db = Database(settings.database_url)
    db.create_schema()
    runtime = sdk_runtime(metrics_address=settings.worker_metrics_address)
    client = await connect(settings, runtime=runtime)
    worker = build_worker(
        client=client,
        db=db,
        policy=policy,
        task_queue=settings.task_queue,
        objects=open_object_store(settings),
    )
    try:
        await ensure_retention_schedule(
            client,
            task_queue=settings.task_queue,
            every=timedelta(seconds=settings.retention_interval_seconds),
        )
    except RPCError as exc:  # conversations come first: the next worker to start tries again
        log.warning("could not create or update the retention schedule: %s", exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reconciler = Reconciler(
        db=db,
        client=client,
        policy=policy,
        task_queue=settings.task_queue,
        meter=runtime.metric_meter,
    )
    reconciling = asyncio.create_task(reconciler.run_forever(settings.reconcile_interval_seconds))
    delivering = asyncio.create_task(webhook_courier(db, policy, settings).run_forever())
    log.info("worker polling task queue %r at %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
        log.info("worker stopping: finishing running tasks")
        reconciling.cancel()
        delivering.cancel()  # a send cut short is sent again: the outbox still owes it
    db.dispose()


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    # uvloop (it comes with uvicorn[standard]) where it runs: less of the worker's CPU goes to
    # the event loop that polls the server and runs activities (workflows keep their own loop).
    try:
        import uvloop
    except ImportError:
        asyncio.run(run_worker(settings))
    else:
        uvloop.run(run_worker(settings))
    log.info("worker stopped")
    logging.shutdown()
    # The SDK's Rust threads can outlive the event loop and abort CPython's finalization
    # (temporalio/sdk-python#300); everything is shut down and flushed, so skip it.
    os._exit(0)


if __name__ == "__main__":
    main()
