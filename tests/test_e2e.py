"""End to end, as deployed: the real dev server, `python worker.py` and uvicorn on a loopback
port, driven over HTTP with second-scale timeouts from a test policy file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from settings import PROJECT_ROOT
from store.db import Database
from tests.utils import (
    ADMIN,
    APP,
    DEFAULT_GROUPS,
    bearer,
    eventually,
    test_settings,
    write_policy,
)

pytestmark = pytest.mark.e2e

# Nobody serves this group: after 2 seconds its conversations overflow to a left message.
CALLBACK_GROUP = (
    '[[skill_groups]]\nname = "callback"\nmax_queue_wait = "2s"\noverflow_to = "left_message"\n'
)
CALLBACK_ROUTING = '[[routing]]\nwhen = { entry = "callback_test" }\nskill_group = "callback"\n'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Deployment:
    """API and worker processes, configured only through the environment, as in production."""

    def __init__(
        self,
        *,
        dev_env=None,
        tmp_path: Path,
        database_url: str,
        apis: int = 1,
        workers: int = 1,
        temporal_address: str | None = None,
        timeouts: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """`temporal_address` instead of `dev_env` for a server the test runs itself;
        `timeouts` override the policy's; `extra_env` adds to every process's environment."""
        policy = write_policy(
            tmp_path / "policy.toml",
            **{
                "idle_warning_after": "2s",
                "idle_close_after": "2s",
                "rating_window": "4s",
                **(timeouts or {}),
            },
            groups=DEFAULT_GROUPS + CALLBACK_GROUP,
            routing=CALLBACK_ROUTING,
        )
        settings = test_settings(
            db=database_url,
            policy_path=policy,
            task_queue=f"tq-{uuid.uuid4()}",
            address=temporal_address or dev_env.client.service_client.config.target_host,
        )
        self.env = {
            **os.environ,
            "SWITCHBOARD_ENV": "test",
            "SWITCHBOARD_DATABASE_URL": settings.database_url,
            "SWITCHBOARD_POLICY": str(policy),
            "SWITCHBOARD_TASK_QUEUE": settings.task_queue,
            "SWITCHBOARD_TEMPORAL_ADDRESS": settings.temporal_address,
            "SWITCHBOARD_ADMIN_TOKEN": settings.admin_token,
            "SWITCHBOARD_APP_KEY": settings.app_key,
            "SWITCHBOARD_SECRET_KEY": settings.secret_key,
            "SWITCHBOARD_RECONCILE_INTERVAL_SECONDS": "1",
            **(extra_env or {}),
        }
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, list[str]] = {}
        self.urls: list[str] = []
        for index in range(workers):
            self._start(f"worker-{index}", [sys.executable, "worker.py"])
        for index in range(apis):
            port = _free_port()
            self._start(
                f"api-{index}",
                [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)],
            )
            self.urls.append(f"http://127.0.0.1:{port}")
        for index, url in enumerate(self.urls):
            self._wait_healthy(f"api-{index}", url)

    def _start(self, name: str, command: list[str]) -> None:
        self.commands[name] = command
        self.processes[name] = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=(self.logs / f"{name}.log").open("a"),  # a restarted process appends
            stderr=subprocess.STDOUT,
        )

    def _wait_healthy(self, name: str, url: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.processes[name].poll() is not None:
                pytest.fail(f"{name} did not come up:\n" + (self.logs / f"{name}.log").read_text())
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def restart(self, name: str) -> None:
        """Start a process that was killed again, as it was (an API also comes up healthy)."""
        assert name not in self.processes, f"{name} is still running"
        self._start(name, self.commands[name])
        if name.startswith("api"):
            self._wait_healthy(name, self.urls[int(name.removeprefix("api-"))])

    def stop(self, *, faults: bool = False) -> None:
        """Stop every process gracefully. `faults`: the test broke something on purpose, and
        processes log the tracebacks of what failed meanwhile (a retried activity, a 503);
        an error that reached the ASGI server unhandled still fails."""
        # The APIs first: a request still waiting on a workflow gets its answer from a worker.
        waves = [[name for name in self.processes if name.startswith(kind)] for kind in "aw"]
        try:
            for wave in waves:
                for name in wave:
                    self.processes[name].send_signal(signal.SIGTERM)
                for name in wave:
                    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
                    code = self.processes[name].wait(20)
                    assert code in (0, -signal.SIGTERM), f"{name} did not stop cleanly"
        finally:
            for process in self.processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        for name in self.processes:
            log = (self.logs / f"{name}.log").read_text()
            assert "Exception in ASGI application" not in log, f"{name}:\n{log}"
            assert faults or "Traceback" not in log, f"{name}:\n{log}"
            if name.startswith("api"):
                assert "Application shutdown complete" in log


@pytest.fixture
def deployment(dev_env, tmp_path: Path, empty_db: Database) -> Iterator[str]:
    """One worker and one API process on a new SQLite or PostgreSQL database (they migrate it)."""
    running = Deployment(dev_env=dev_env, tmp_path=tmp_path, database_url=empty_db.url)
    yield running.urls[0]
    running.stop()


@pytest.fixture
async def http(deployment: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=deployment, timeout=30) as client:
        yield client


async def _conversation(http: httpx.AsyncClient, cid: str, token: str) -> dict[str, Any]:
    response = await http.get(f"/v1/conversations/{cid}", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


async def _events(http: httpx.AsyncClient, cid: str, token: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/conversations/{cid}/events", headers=bearer(token))
    assert response.status_code == 200, response.text
    events = response.json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seq gap or disorder"
    return events


async def _until_event(http: httpx.AsyncClient, cid: str, token: str, kind: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        return next((e for e in await _events(http, cid, token) if e["type"] == kind), None)

    return await eventually(check, timeout=20, what=f"{kind} in {cid}")


async def _start(http: httpx.AsyncClient) -> tuple[str, str]:
    response = await http.post(
        "/v1/conversations",
        headers=APP,
        json={"customer_id": f"customer-{uuid.uuid4().hex[:6]}", "channel": "web"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["visitor_token"]


async def _until_active(http: httpx.AsyncClient, cid: str, token: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await _conversation(http, cid, token)
        return body if body["state"] == "active" else None

    return await eventually(check, timeout=20, what=f"{cid} to be assigned")


async def _say(http: httpx.AsyncClient, cid: str, token: str, text: str) -> int:
    response = await http.post(
        f"/v1/conversations/{cid}/messages",
        headers=bearer(token),
        json={"client_message_id": uuid.uuid4().hex, "type": "text", "content": text},
    )
    assert response.status_code == 201, response.text
    return response.json()["seq"]


async def test_whole_lifecycle_over_http(http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/v1/agents",
        headers=ADMIN,
        json={"id": "alice", "name": "Alice", "skill_groups": ["general"], "max_concurrent": 3},
    )
    assert created.status_code == 201, created.text
    agent = bearer(created.json()["token"])
    online = await http.put("/v1/agents/alice/status", headers=agent, json={"status": "online"})
    assert online.json()["status"] == "online"

    # 1. Messages both ways, idle warning, auto-close, rating submitted.
    cid, visitor = await _start(http)
    assert (await _until_active(http, cid, visitor))["agent_id"] == "alice"
    seqs = [
        await _say(http, cid, visitor, "Where is my parcel?"),
        await _say(http, cid, created.json()["token"], "Let me check order 1234 for you."),
        await _say(http, cid, visitor, "Thanks"),
        await _say(http, cid, created.json()["token"], "It ships tomorrow. Anything else?"),
    ]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    events = await _events(http, cid, visitor)
    messages = [e for e in events if e["type"] == "message.created"]
    assert [m["data"]["content"] for m in messages][-1] == "It ships tomorrow. Anything else?"
    assert [m["data"]["sender_role"] for m in messages] == ["visitor", "agent"] * 2
    assert (await http.get(f"/v1/conversations/{cid}/events", headers=agent)).status_code == 200

    warning = await _until_event(http, cid, visitor, "conversation.idle_warning")
    assert "2 seconds" in warning["data"]["text"]
    closed = await _until_event(http, cid, visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "idle_timeout"
    assert closed["data"]["text"] == "Closed for inactivity."
    await _until_event(http, cid, visitor, "rating.invited")
    body = await _conversation(http, cid, visitor)
    assert (body["state"], body["close_reason"], body["rating"]["status"]) == (
        "closed",
        "idle_timeout",
        "pending",
    )
    rated = await http.post(
        f"/v1/conversations/{cid}/rating",
        headers=bearer(visitor),
        json={"score": 5, "resolved": True},
    )
    assert rated.status_code == 201, rated.text
    assert rated.json()["status"] == "rated" and rated.json()["score"] == 5
    await _until_event(http, cid, visitor, "rating.submitted")
    late = await http.post(f"/v1/conversations/{cid}/message", headers=bearer(visitor))
    assert late.status_code in (404, 405)
    closed_message = await http.post(
        f"/v1/conversations/{cid}/messages",
        headers=bearer(visitor),
        json={"client_message_id": "late", "content": "hello?"},
    )
    assert closed_message.status_code == 409

    # 2. The agent closes the second conversation; its rating expires unrated.
    cid2, visitor2 = await _start(http)
    await _until_active(http, cid2, visitor2)
    await _say(http, cid2, visitor2, "Can I change my address?")
    closing = await http.post(f"/v1/conversations/{cid2}/close", headers=agent)
    assert closing.status_code == 200, closing.text
    assert closing.json()["close_reason"] == "agent_closed"
    closed2 = await _until_event(http, cid2, visitor2, "conversation.closed")
    assert closed2["data"]["text"] == "Solved, thank you."
    await _until_event(http, cid2, visitor2, "rating.expired")
    assert (await _conversation(http, cid2, visitor2))["rating"]["status"] == "expired"

    # 3. The visitor closes the third.
    cid3, visitor3 = await _start(http)
    await _until_active(http, cid3, visitor3)
    closing3 = await http.post(f"/v1/conversations/{cid3}/close", headers=bearer(visitor3))
    assert closing3.status_code == 200, closing3.text
    assert closing3.json()["close_reason"] == "visitor_closed"
    await _until_event(http, cid3, visitor3, "rating.invited")

    # Every close gave the agent's seat back.
    status = await http.get("/v1/agents/alice", headers=agent)
    assert status.json()["load"] == 0


async def test_overflow_into_a_left_message_and_its_resolution(http: httpx.AsyncClient) -> None:
    started = await http.post(
        "/v1/conversations",
        headers=APP,
        json={"customer_id": "customer-callback", "channel": "app", "entry": "callback_test"},
    )
    assert started.status_code == 201, started.text
    cid, visitor = started.json()["id"], started.json()["visitor_token"]
    position = await _until_event(http, cid, visitor, "queue.position_changed")
    assert position["data"]["position"] == 1 and position["data"]["skill_group"] == "callback"

    closed = await _until_event(http, cid, visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "overflow" and closed["data"]["left_message"]
    left = await http.post(
        f"/v1/conversations/{cid}/left-message",
        headers=bearer(visitor),
        json={"content": "Please call me back about my refund", "contact": "+44 20 7946 0000"},
    )
    assert left.status_code == 201, left.text
    await _until_event(http, cid, visitor, "left_message.created")

    waiting = await http.get("/v1/left-messages", params={"status": "open"}, headers=ADMIN)
    assert [m["conversation_id"] for m in waiting.json()] == [cid]
    resolved = await http.post(
        f"/v1/left-messages/{left.json()['id']}/resolve",
        headers=ADMIN,
        json={"note": "Called back; refund issued"},
    )
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    after = await http.get("/v1/left-messages", params={"status": "open"}, headers=ADMIN)
    assert after.json() == []
    await _until_event(http, cid, visitor, "left_message.resolved")


async def _sse(lines: Any, count: int) -> list[dict[str, Any]]:
    """Read `count` events off a text/event-stream (comments are keep-alives)."""
    events: list[dict[str, Any]] = []
    current: dict[str, str] = {}
    async for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if current:
                event = json.loads(current["data"])
                events.append({**event, "id": current.get("id"), "event": current["event"]})
                current = {}
                if len(events) == count:
                    return events
            continue
        field, _, value = line.partition(":")
        current[field] = value.lstrip(" ")
    raise AssertionError(f"the stream ended after {len(events)} of {count} events")


async def test_a_stream_replays_then_delivers_live_and_resumes_without_gaps(
    http: httpx.AsyncClient, deployment: str
) -> None:
    created = await http.post(
        "/v1/agents",
        headers=ADMIN,
        json={"id": "dora", "name": "Dora", "skill_groups": ["general"], "max_concurrent": 2},
    )
    agent_token = created.json()["token"]
    await http.put("/v1/agents/dora/status", headers=bearer(agent_token), json={"status": "online"})
    cid, visitor = await _start(http)
    await _until_active(http, cid, visitor)
    so_far = len(await _events(http, cid, visitor))

    async with httpx.AsyncClient(base_url=deployment, timeout=30) as streamer:
        async with streamer.stream(
            "GET", f"/v1/conversations/{cid}/stream", headers=bearer(agent_token)
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            replayed = await _sse(lines, so_far)
            assert [e["seq"] for e in replayed] == list(range(1, so_far + 1))
            assert all(e["id"] == str(e["seq"]) and e["event"] == e["type"] for e in replayed)
            logged = (await http.get(f"/v1/conversations/{cid}/events", headers=ADMIN)).json()
            assert [{k: e[k] for k in ("seq", "type", "at", "data")} for e in replayed] == logged[
                "events"
            ][:so_far], "the stream's data is not the same JSON as /events"
            seq = await _say(http, cid, visitor, "Is anyone there?")
            [live] = await asyncio.wait_for(_sse(lines, 1), timeout=5)
            assert (live["seq"], live["type"]) == (seq, "message.created")
            assert live["data"]["content"] == "Is anyone there?"
            typed = await http.post(f"/v1/conversations/{cid}/typing", headers=bearer(visitor))
            assert typed.status_code == 202
            [signal] = await asyncio.wait_for(_sse(lines, 1), timeout=5)
            assert (signal["event"], signal["id"], signal["by_role"]) == (
                "conversation.typing",
                None,
                "visitor",
            )

    # Resume from the middle: exactly what came after, in order.
    middle = so_far // 2
    await _say(http, cid, agent_token, "Yes, Dora here")
    total = len(await _events(http, cid, visitor))
    async with httpx.AsyncClient(base_url=deployment, timeout=30) as streamer:
        async with streamer.stream(
            "GET",
            f"/v1/conversations/{cid}/stream",
            headers={**bearer(visitor), "Last-Event-ID": str(middle)},
        ) as response:
            resumed = await _sse(response.aiter_lines(), total - middle)
    assert [e["seq"] for e in resumed] == list(range(middle + 1, total + 1))
    other, _other_visitor = await _start(http)
    forbidden = await http.get(f"/v1/conversations/{other}/stream", headers=bearer(visitor))
    assert forbidden.status_code == 403


async def test_a_stream_resumed_after_1000_missed_events_replays_them_in_order(
    dev_env, tmp_path: Path, empty_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A thousand messages in seconds from one visitor: far over the default rate limit.
    monkeypatch.setenv("SWITCHBOARD_MAX_MESSAGES_PER_MINUTE", "1000")
    running = Deployment(dev_env=dev_env, tmp_path=tmp_path, database_url=empty_db.url)
    try:
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=60) as http:
            cid, visitor = await _start(http)
            await _until_event(http, cid, visitor, "queue.position_changed")
            start = len(await _events(http, cid, visitor))
            posts = [_say(http, cid, visitor, f"line {n}") for n in range(1000)]
            for batch in range(0, 1000, 50):  # while the visitor's stream was away
                await asyncio.gather(*posts[batch : batch + 50])
            async with http.stream(
                "GET",
                f"/v1/conversations/{cid}/stream",
                headers={**bearer(visitor), "Last-Event-ID": str(start)},
            ) as response:
                replayed = await _sse(response.aiter_lines(), 1000)
    finally:
        running.stop()
    assert [e["seq"] for e in replayed] == list(range(start + 1, start + 1001))
    assert sorted(e["data"]["content"] for e in replayed) == sorted(
        f"line {n}" for n in range(1000)
    )


async def test_an_api_that_stops_ends_its_streams_cleanly(
    dev_env, tmp_path: Path, empty_db: Database
) -> None:
    running = Deployment(dev_env=dev_env, tmp_path=tmp_path, database_url=empty_db.url)
    try:
        async with httpx.AsyncClient(base_url=running.urls[0], timeout=30) as http:
            cid, visitor = await _start(http)
            await _until_event(http, cid, visitor, "queue.position_changed")
            async with http.stream(
                "GET", f"/v1/conversations/{cid}/stream", headers=bearer(visitor)
            ) as response:
                lines = response.aiter_lines()
                await _sse(lines, 1)
                running.processes["api-0"].send_signal(signal.SIGTERM)
                started = time.monotonic()
                with pytest.raises(AssertionError, match="the stream ended"):
                    await asyncio.wait_for(_sse(lines, 10_000), timeout=20)
                assert time.monotonic() - started < 20  # ended by the server, not the timeout
            assert running.processes["api-0"].wait(20) in (0, -signal.SIGTERM)
    finally:
        running.stop()
