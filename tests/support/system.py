"""The whole system in the test's process: a real worker and the real API (over ASGI) on a real
Temporal server and a real database. Tests get one, started, from the `make_system` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from domain.policy import PolicySource
from media.storage import open_object_store
from settings import Settings
from store.db import Database
from store.models import Conversation
from temporal_client import with_data_converter
from tests.support.api import AgentLogin, ApiClient, Visit, eventually
from tests.support.policy import test_settings
from tests.support.temporal import address
from worker import build_worker

# The settings that say where attachments' files go.
OBJECT_STORE_SETTINGS = (
    "attachments_url",
    "s3_endpoint_url",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
)


class System(ApiClient):
    """Worker + API on `env` and `db`, on the task queue `task_queue`, both with the settings'
    data converter (payloads encrypted with `payload_key`, if given); the API client of the
    in-process API (`http` is its ASGI client)."""

    def __init__(
        self,
        *,
        env: WorkflowEnvironment,
        db: Database,
        policy_path: Path,
        task_queue: str,
        payload_key: str = "",
        objects: Settings | None = None,
    ) -> None:
        self.env = env
        self.db = db
        self.policy_path = policy_path
        self.task_queue = task_queue
        settings = test_settings(db, policy_path, task_queue, address(env), payload_key=payload_key)
        if objects is not None:  # another object store than the test's own directory
            settings = settings.model_copy(
                update={name: getattr(objects, name) for name in OBJECT_STORE_SETTINGS}
            )
        self.settings = settings
        self.client = with_data_converter(env.client, self.settings)
        self.app = create_app(self.settings, temporal=self.client)
        super().__init__(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app),
                base_url="http://switchboard",
                timeout=60,
            )
        )
        self.worker: Worker | None = None
        self._lifespan: Any = None

    async def start_worker(self) -> None:
        """A worker on this system's task queue (again, after `stop_worker`)."""
        self.worker = build_worker(
            client=self.client,
            db=self.db,
            policy=PolicySource(self.policy_path),
            task_queue=self.task_queue,
            objects=open_object_store(self.settings),
        )
        await self.worker.__aenter__()

    async def stop_worker(self) -> None:
        """No worker runs on the task queue until `start_worker`: the server keeps what comes."""
        if self.worker is not None:
            worker, self.worker = self.worker, None
            await worker.__aexit__(None, None, None)

    async def start(self) -> System:
        await self.start_worker()
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        return self

    async def stop(self) -> None:
        """Stop the API and the worker (again: nothing to do)."""
        if self._lifespan is None:
            return
        lifespan, self._lifespan = self._lifespan, None
        await self.http.aclose()
        await lifespan.__aexit__(None, None, None)
        await self.stop_worker()

    async def __aenter__(self) -> System:
        return await self.start()

    async def aclose(self) -> None:
        await self.stop()

    @asynccontextmanager
    async def another_api(self, **settings: Any) -> AsyncIterator[ApiClient]:
        """A second API of this system (its database, its Temporal) with `settings` changed, as
        a redeployment with a new secret key; stopped on leaving."""
        app = create_app(self.settings.model_copy(update=settings), temporal=self.client)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://switchboard") as http,
        ):
            yield ApiClient(http)

    async def workflow(self, conversation_id: str, *, seen: int = 0) -> dict[str, Any]:
        """What the conversation's workflow knows (its `snapshot`: state and pending timers),
        once it has taken in the message `seen`."""

        async def caught_up() -> dict[str, Any] | None:
            workflow = (await self.snapshot(conversation_id))["workflow"]
            return workflow if workflow["last_message_seq"] >= seen else None

        return await eventually(caught_up, what=f"the workflow to take in message {seen}")

    async def pending_timer(self, conversation_id: str, timer: str) -> dict[str, Any]:
        """The workflow's snapshot once it shows `timer` (idle_warning_at, …) pending, checked
        not yet due on the server's clock: it has not fired, and will."""

        async def pending() -> dict[str, Any] | None:
            workflow = await self.workflow(conversation_id)
            return workflow if workflow[timer] is not None else None

        workflow = await eventually(pending, what=f"{timer} to be pending")
        now = await self.env.get_current_time()
        assert datetime.fromisoformat(workflow[timer]) > now, f"{timer} is past due at {now}"
        return workflow


class StartSystem(Protocol):
    """The `make_system` fixture: `await make_system(env, policy=…, task_queue=…,
    payload_key=…, objects=…, **settings)`."""

    def __call__(
        self,
        env: WorkflowEnvironment,
        *,
        policy: Path | None = None,
        task_queue: str | None = None,
        payload_key: str = "",
        objects: Settings | None = None,
        **settings: str,
    ) -> Awaitable[System]: ...


async def assigned_while_no_worker_runs(system: System) -> tuple[Visit, AgentLogin]:
    """A queued conversation, then its worker stopped and an agent assigned in the database
    (the state between: assigned, not yet recorded by the workflow). The assignment's signal
    waits in the workflow's history until `system.start_worker()`."""
    visit = await system.start_conversation()
    await system.wait_for_event(*visit, "queue.position_changed")
    await system.stop_worker()
    agent = await system.create_agent()

    async def assigned() -> bool:
        with system.db.read() as session:
            conversation = session.get(Conversation, visit.conversation_id)
        return conversation is not None and conversation.agent_id == agent.id

    await eventually(assigned, what=f"{visit.conversation_id} assigned in the database")
    return visit, agent
