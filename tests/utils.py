"""Test data builders and a driver for the whole system (real worker, real API, real database)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from domain.policy import PolicySource
from settings import Settings
from store.assignment import join_queue
from store.db import Database
from store.models import Agent, AgentSkill, Conversation
from tests.workbench import create_agent_over_api
from worker import build_worker

T = TypeVar("T")

ADMIN = {"Authorization": "Bearer test-admin-token"}
APP = {"Authorization": "Bearer test-app-key"}

DEFAULT_TIMEOUTS = {"idle_warning_after": "3m", "idle_close_after": "2m", "rating_window": "1h"}


DEFAULT_GROUPS = '[[skill_groups]]\nname = "general"\n[[skill_groups]]\nname = "after_sales"\n'


def write_policy(
    path: Path, *, groups: str = DEFAULT_GROUPS, routing: str = "", **timeouts: str
) -> Path:
    """A test policy: second-to-minute timeouts, test texts; `groups` and `routing` are TOML."""
    values = {**DEFAULT_TIMEOUTS, **timeouts}
    path.write_text(
        'default_skill_group = "general"\n'
        "[timeouts]\n"
        + "".join(f'{key} = "{value}"\n' for key, value in values.items())
        + groups
        + routing
        + "[texts]\n"
        'idle_warning = "Still there? This chat closes in {idle_close_after}."\n'
        "[texts.closing]\n"
        'idle_timeout = "Closed for inactivity."\n'
        'agent_closed = "Solved, thank you."\n'
    )
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_settings(db: Database | str, policy_path: Path, task_queue: str, address: str) -> Settings:
    """Settings for a test deployment (`db` is a Database or a database URL)."""
    return Settings(
        env="test",
        database_url=db if isinstance(db, str) else db.url,
        policy=policy_path,
        task_queue=task_queue,
        temporal_address=address,
        admin_token="test-admin-token",
        app_key="test-app-key",
        secret_key="test-secret-key-0123456789",
    )


test_settings.__test__ = False  # type: ignore[attr-defined]  # a builder, not a test


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 15, what: str = "condition"
) -> T:
    """Poll (in real time) until `check` returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class System:
    """Worker + API (in-process ASGI) against a real Temporal server and a real database."""

    def __init__(
        self, *, env: WorkflowEnvironment, db: Database, policy_path: Path, task_queue: str
    ) -> None:
        self.env = env
        self.db = db
        self.policy_path = policy_path
        self.task_queue = task_queue
        self.settings = test_settings(
            db, policy_path, task_queue, env.client.service_client.config.target_host
        )
        self.worker: Worker | None = None
        self._lifespan: Any = None
        self.http: httpx.AsyncClient

    async def start_worker(self) -> None:
        """A worker on this system's task queue (again, after a test stopped it)."""
        self.worker = build_worker(
            client=self.env.client,
            db=self.db,
            policy=PolicySource(self.policy_path),
            task_queue=self.task_queue,
        )
        await self.worker.__aenter__()

    async def __aenter__(self) -> System:
        await self.start_worker()
        app = create_app(self.settings, temporal=self.env.client)
        self._lifespan = app.router.lifespan_context(app)
        await self._lifespan.__aenter__()
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://switchboard", timeout=60
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.http.aclose()
        await self._lifespan.__aexit__(None, None, None)
        assert self.worker is not None
        await self.worker.__aexit__(exc_type, exc, tb)

    # --- builders --------------------------------------------------------------------------

    async def create_agent(
        self,
        agent_id: str | None = None,
        *,
        skill_groups: list[str] | None = None,
        max_concurrent: int = 2,
        online: bool = True,
    ) -> tuple[str, str]:
        agent_id = agent_id or f"agent-{uuid.uuid4().hex[:8]}"
        token = await create_agent_over_api(
            self.http,
            ADMIN,
            agent_id,
            skill_groups=skill_groups,
            max_concurrent=max_concurrent,
            online=online,
        )
        return agent_id, token

    async def set_status(self, agent_id: str, token: str, status: str) -> dict[str, Any]:
        response = await self.http.put(
            f"/v1/agents/{agent_id}/status", headers=bearer(token), json={"status": status}
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def start_conversation(
        self, customer_id: str | None = None, channel: str = "web", **attributes: str
    ) -> tuple[str, str]:
        """`attributes`: entry, tier, language, order_id (what routing looks at)."""
        response = await self.http.post(
            "/v1/conversations",
            headers=APP,
            json={
                "customer_id": customer_id or f"customer-{uuid.uuid4().hex[:8]}",
                "channel": channel,
                **attributes,
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return body["id"], body["visitor_token"]

    async def post_message(
        self, conversation_id: str, token: str, content: str, client_message_id: str | None = None
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/messages",
            headers=bearer(token),
            json={"client_message_id": client_message_id or uuid.uuid4().hex, "content": content},
        )

    async def conversation(self, conversation_id: str, token: str) -> dict[str, Any]:
        response = await self.http.get(
            f"/v1/conversations/{conversation_id}", headers=bearer(token)
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def events(
        self, conversation_id: str, token: str, after_seq: int = 0
    ) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"/v1/conversations/{conversation_id}/events",
            headers=bearer(token),
            params={"after_seq": after_seq, "limit": 1000},
        )
        assert response.status_code == 200, response.text
        return response.json()["events"]

    async def wait_for_state(
        self, conversation_id: str, token: str, state: str, timeout: float = 15
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            body = await self.conversation(conversation_id, token)
            return body if body["state"] == state else None

        return await eventually(check, timeout=timeout, what=f"{conversation_id} to be {state}")

    async def wait_for_event(
        self, conversation_id: str, token: str, event_type: str, timeout: float = 15
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            found = [
                e for e in await self.events(conversation_id, token) if e["type"] == event_type
            ]
            return found[-1] if found else None

        return await eventually(check, timeout=timeout, what=f"{event_type} in {conversation_id}")


# --- database builders (for tests of the store layer) ---------------------------------------


def add_agent(
    db: Database,
    agent_id: str,
    *,
    max_concurrent: int,
    skill_groups: list[str] | None = None,
    status: str = "online",
) -> None:
    with db.write() as session:
        session.add(
            Agent(
                id=agent_id,
                name=agent_id,
                token_hash=uuid.uuid4().hex,
                status=status,
                max_concurrent=max_concurrent,
            )
        )
        session.flush()
        session.add_all(
            AgentSkill(agent_id=agent_id, skill_group=group)
            for group in skill_groups or ["general"]
        )


def new_conversation(
    session: Session, *, queued_at: datetime | None = None, **fields: Any
) -> Conversation:
    """A queued conversation of a new customer; `fields` set other columns (state, agent_id,
    close_reason, …)."""
    conversation_id = uuid.uuid4().hex[:16]
    conversation = Conversation(
        **{
            "id": conversation_id,
            "customer_id": f"customer-{conversation_id}",
            "open_customer_key": f"customer-{conversation_id}",
            "channel": "web",
            "state": "queued",
            "queued_at": queued_at,
            **fields,
        }
    )
    session.add(conversation)
    session.flush()
    return conversation


def enqueue_conversations(
    db: Database,
    count: int,
    *,
    skill_group: str = "general",
    priority: int = 0,
    enqueued_at: datetime | None = None,
) -> list[str]:
    """Queued conversations, one transaction each, in this order. Returns their ids."""
    ids = []
    for _ in range(count):
        with db.write() as session:
            conversation = new_conversation(session, queued_at=enqueued_at)
            join_queue(session, conversation, skill_group=skill_group, priority=priority)
        ids.append(conversation.id)
    return ids
