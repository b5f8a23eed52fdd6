"""The one client of the HTTP API, for the tests and bench/: each operation as an integrator
calls it, with the caller's bearer token; waits that poll the API; server-sent event streams.

It imports nothing of the application, so bench/ drives the product with it as a client does.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import httpx

T = TypeVar("T")

# The tokens of a test deployment (tests.support.policy.test_settings sets them).
ADMIN_TOKEN = "test-admin-token"
APP_KEY = "test-app-key"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)
APP = bearer(APP_KEY)


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 15,
    what: str = "condition",
    every: float = 0.05,
) -> T:
    """Poll (in real time, every `every` seconds) until `check` returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


def expect(response: httpx.Response, *codes: int) -> Any:
    """The answer's JSON, once its status is one of `codes` (any 2xx when none are given)."""
    ok = response.status_code in codes if codes else response.is_success
    assert ok, (
        f"{response.request.method} {response.request.url.path} answered "
        f"{response.status_code}: {response.text[:500]}"
    )
    return response.json()


class AgentLogin(NamedTuple):
    """An agent and the token their workbench uses."""

    id: str
    token: str


class Visit(NamedTuple):
    """A conversation as its visitor holds it: its id and the visitor's token."""

    conversation_id: str
    token: str


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Events off a text/event-stream: the JSON of `data` with the stream's `id` and `event`
    (comments are keep-alives)."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if "data" in fields:
                yield {
                    **json.loads(fields["data"]),
                    "id": fields.get("id"),
                    "event": fields.get("event"),
                }
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value.lstrip(" ")


class EventStream:
    """An open stream: its response, and its events as they come (`take`, or `async for`)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._events = sse_events(response.aiter_lines())

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events

    async def take(self, count: int, *, timeout: float = 30) -> list[dict[str, Any]]:
        """The next `count` events; an AssertionError if the stream ends before them."""
        taken: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while len(taken) < count:
                try:
                    taken.append(await anext(self._events))
                except StopAsyncIteration:
                    raise AssertionError(
                        f"the stream ended after {len(taken)} of {count} events"
                    ) from None
        return taken

    async def rest(self, *, timeout: float = 60) -> list[dict[str, Any]]:
        """Every event until the server ends the stream (a TimeoutError if it does not)."""
        async with asyncio.timeout(timeout):
            return [event async for event in self._events]

    async def until(self, event_type: str, *, timeout: float = 30) -> list[dict[str, Any]]:
        """The next events, up to the first of this type."""
        taken: list[dict[str, Any]] = []
        while not taken or taken[-1]["event"] != event_type:
            taken += await self.take(1, timeout=timeout)
        return taken


class ApiClient:
    """Switchboard's API as its callers use it. `token` is the caller's bearer token; where an
    operation lets it be None, the admin calls. Operations whose refusals tests look at answer
    the response itself; the others check their status and answer the JSON."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        admin_token: str = ADMIN_TOKEN,
        app_key: str = APP_KEY,
        patience: float = 15,
    ) -> None:
        self.http = http
        self.admin_token = admin_token
        self.app_key = app_key
        self.patience = patience  # how long the waits poll before they fail

    @classmethod
    def at(
        cls, base_url: str, *, timeout: float | None = 30, connections: int = 100, **options: Any
    ) -> ApiClient:
        """A client of the API at `base_url` over real HTTP (`async with` closes it)."""
        http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            # An idle connection is dropped well before uvicorn's own 5 s: else a request sent
            # just as the server closes it fails with a ReadError on a loaded machine.
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=2,
            ),
        )
        return cls(http, **options)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    def _as(self, token: str | None) -> dict[str, str]:
        return bearer(self.admin_token if token is None else token)

    # --- agents ----------------------------------------------------------------------------

    async def create_agent(
        self,
        agent_id: str | None = None,
        *,
        skill_groups: list[str] | None = None,
        max_concurrent: int = 2,
        online: bool = True,
        role: str = "agent",
    ) -> AgentLogin:
        """Created by the admin and, unless `online` is False, put online with their own token,
        as their workbench does. `role`: agent or supervisor."""
        agent_id = agent_id or f"agent-{uuid.uuid4().hex[:8]}"
        created = await self.http.post(
            "/v1/agents",
            headers=self._as(None),
            json={
                "id": agent_id,
                "name": agent_id.title(),
                "skill_groups": skill_groups or ["general"],
                "max_concurrent": max_concurrent,
                "role": role,
            },
        )
        agent = AgentLogin(agent_id, expect(created, 201)["token"])
        if online:
            await self.set_status(agent.id, agent.token, "online")
        return agent

    async def set_status(self, agent_id: str, token: str | None, status: str) -> dict[str, Any]:
        response = await self.http.put(
            f"/v1/agents/{agent_id}/status", headers=self._as(token), json={"status": status}
        )
        return expect(response, 200)

    async def agent(self, agent_id: str, token: str | None = None) -> dict[str, Any]:
        """The agent's view: status, load, feed_seq."""
        return expect(await self.http.get(f"/v1/agents/{agent_id}", headers=self._as(token)), 200)

    async def update_agent(self, agent_id: str, **changes: Any) -> httpx.Response:
        """An admin's change: any of name, skill_groups, max_concurrent."""
        return await self.http.patch(f"/v1/agents/{agent_id}", headers=self._as(None), json=changes)

    async def deactivate_agent(self, agent_id: str) -> httpx.Response:
        return await self.http.post(f"/v1/agents/{agent_id}/deactivate", headers=self._as(None))

    async def activate_agent(self, agent_id: str) -> httpx.Response:
        """Active again, with a new token (in the answer)."""
        return await self.http.post(f"/v1/agents/{agent_id}/activate", headers=self._as(None))

    async def rotate_token(self, agent_id: str, token: str | None = None) -> httpx.Response:
        """A new token for the agent (in the answer), asked by the agent or (None) the admin."""
        return await self.http.post(f"/v1/agents/{agent_id}/token", headers=self._as(token))

    async def agents(self, **params: Any) -> dict[str, Any]:
        """A page of the list of agents (`include_inactive`, `after`, `limit`)."""
        return expect(await self.http.get("/v1/agents", headers=self._as(None), params=params), 200)

    async def agent_conversations(
        self, agent_id: str, token: str | None = None, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The conversations the agent holds."""
        response = await self.http.get(
            f"/v1/agents/{agent_id}/conversations",
            headers=self._as(token),
            params={} if limit is None else {"limit": limit},
        )
        return expect(response, 200)

    async def agent_feed(
        self, agent_id: str, token: str | None = None, *, after_seq: int = 0
    ) -> list[dict[str, Any]]:
        """The agent's feed after `after_seq`: every event of their conversations, numbered."""
        response = await self.http.get(
            f"/v1/agents/{agent_id}/events",
            headers=self._as(token),
            params={"after_seq": after_seq},
        )
        return expect(response, 200)["events"]

    # --- conversations ---------------------------------------------------------------------

    async def start_conversation(
        self, customer_id: str | None = None, channel: str = "web", **attributes: Any
    ) -> Visit:
        """Started by the app's backend. `attributes`: entry, tier, language, order_id (what
        routing looks at), and `attributes` (what staff read of the customer)."""
        response = await self.http.post(
            "/v1/conversations",
            headers=bearer(self.app_key),
            json={
                "customer_id": customer_id or f"customer-{uuid.uuid4().hex[:8]}",
                "channel": channel,
                **attributes,
            },
        )
        body = expect(response, 201)
        return Visit(body["id"], body["visitor_token"])

    async def mint_visitor_token(
        self, conversation_id: str, token: str | None = None
    ) -> httpx.Response:
        """A fresh visitor token for the conversation, as the app (or `token`) asks for one."""
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/visitor-token",
            headers=bearer(self.app_key if token is None else token),
        )

    async def conversation(self, conversation_id: str, token: str | None = None) -> dict[str, Any]:
        response = await self.http.get(
            f"/v1/conversations/{conversation_id}", headers=self._as(token)
        )
        return expect(response, 200)

    async def post_message(
        self,
        conversation_id: str,
        token: str,
        content: str,
        client_message_id: str | None = None,
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/messages",
            headers=bearer(token),
            json={"client_message_id": client_message_id or uuid.uuid4().hex, "content": content},
        )

    async def say(self, conversation_id: str, token: str, content: str) -> int:
        """A new message, stored and told to the workflow (201): its seq."""
        return expect(await self.post_message(conversation_id, token, content), 201)["seq"]

    async def events(
        self, conversation_id: str, token: str | None = None, *, after_seq: int = 0
    ) -> list[dict[str, Any]]:
        """The conversation's events after `after_seq` that the caller may see, every page."""
        events: list[dict[str, Any]] = []
        while True:
            response = await self.http.get(
                f"/v1/conversations/{conversation_id}/events",
                headers=self._as(token),
                params={"after_seq": after_seq, "limit": 1000},
            )
            page = expect(response, 200)
            events += page["events"]
            if not page["has_more"]:
                return events
            after_seq = page["events"][-1]["seq"]

    async def close(self, conversation_id: str, token: str | None = None) -> httpx.Response:
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/close", headers=self._as(token)
        )

    async def transfer(
        self,
        conversation_id: str,
        token: str | None = None,
        *,
        to_agent_id: str | None = None,
        to_skill_group: str | None = None,
        note: str | None = None,
    ) -> httpx.Response:
        body = {"to_agent_id": to_agent_id, "to_skill_group": to_skill_group, "note": note}
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/transfer",
            headers=self._as(token),
            json={key: value for key, value in body.items() if value is not None},
        )

    async def rate(
        self, conversation_id: str, token: str, score: int, **details: Any
    ) -> httpx.Response:
        """`details`: resolved, comment."""
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/rating",
            headers=bearer(token),
            json={"score": score, **details},
        )

    async def mark_read(self, conversation_id: str, token: str, seq: int) -> httpx.Response:
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/read", headers=bearer(token), json={"seq": seq}
        )

    async def typing(self, conversation_id: str, token: str) -> httpx.Response:
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/typing", headers=bearer(token)
        )

    # --- left messages ---------------------------------------------------------------------

    async def leave_message(
        self, conversation_id: str, token: str, content: str, contact: str | None = None
    ) -> httpx.Response:
        body = {"content": content} if contact is None else {"content": content, "contact": contact}
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/left-message", headers=bearer(token), json=body
        )

    async def left_messages(
        self, token: str | None = None, *, status: str | None = None
    ) -> list[dict[str, Any]]:
        params = {} if status is None else {"status": status}
        response = await self.http.get("/v1/left-messages", headers=self._as(token), params=params)
        return expect(response, 200)

    async def resolve_left_message(
        self, left_message_id: int, token: str | None = None, note: str | None = None
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/left-messages/{left_message_id}/resolve",
            headers=self._as(token),
            json={} if note is None else {"note": note},
        )

    # --- tickets ---------------------------------------------------------------------------

    async def create_ticket(self, token: str | None = None, **body: Any) -> httpx.Response:
        """POST /v1/tickets as `token` (None: the admin; the app: its key)."""
        return await self.http.post("/v1/tickets", headers=self._as(token), json=body)

    async def ticket_from_conversation(
        self, conversation_id: str, token: str | None = None, **body: Any
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/ticket", headers=self._as(token), json=body
        )

    async def ticket_from_left_message(
        self, left_message_id: int, token: str | None = None, **body: Any
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/left-messages/{left_message_id}/ticket", headers=self._as(token), json=body
        )

    async def ticket(self, ticket_id: int, token: str | None = None) -> httpx.Response:
        return await self.http.get(f"/v1/tickets/{ticket_id}", headers=self._as(token))

    async def tickets(self, token: str | None = None, **params: Any) -> httpx.Response:
        return await self.http.get("/v1/tickets", headers=self._as(token), params=params)

    async def update_ticket(
        self, ticket_id: int, token: str | None = None, **changes: Any
    ) -> httpx.Response:
        return await self.http.patch(
            f"/v1/tickets/{ticket_id}", headers=self._as(token), json=changes
        )

    async def comment_ticket(
        self, ticket_id: int, token: str | None, content: str, **body: Any
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/tickets/{ticket_id}/comments",
            headers=self._as(token),
            json={"content": content, **body},
        )

    async def ticket_events(self, ticket_id: int, token: str | None = None) -> list[dict[str, Any]]:
        response = await self.http.get(f"/v1/tickets/{ticket_id}/events", headers=self._as(token))
        return expect(response, 200)

    async def customer_conversations(
        self, customer_id: str, token: str | None = None
    ) -> httpx.Response:
        return await self.http.get(
            f"/v1/customers/{customer_id}/conversations", headers=self._as(token)
        )

    async def update_attributes(
        self, conversation_id: str, attributes: dict[str, Any], token: str | None = None
    ) -> httpx.Response:
        """As the app's backend (or `token`) changes what staff read of the customer."""
        return await self.http.patch(
            f"/v1/conversations/{conversation_id}/attributes",
            headers=bearer(self.app_key if token is None else token),
            json={"attributes": attributes},
        )

    async def assign(
        self, conversation_id: str, agent_id: str, token: str | None = None
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/assign",
            headers=self._as(token),
            json={"agent_id": agent_id},
        )

    async def add_note(
        self, conversation_id: str, content: str, token: str | None = None
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/conversations/{conversation_id}/notes",
            headers=self._as(token),
            json={"content": content},
        )

    # --- admin -----------------------------------------------------------------------------

    async def monitor(self, token: str | None = None) -> dict[str, Any]:
        return expect(await self.http.get("/v1/monitor", headers=self._as(token)), 200)

    async def snapshot(self, conversation_id: str) -> dict[str, Any]:
        """What the conversation's workflow knows now (`workflow`: its state and pending
        timers), with its live queue position."""
        response = await self.http.get(
            f"/v1/admin/conversations/{conversation_id}/snapshot", headers=self._as(None)
        )
        return expect(response, 200)

    async def canned_replies(
        self, token: str | None = None, *, q: str | None = None, conversation_id: str | None = None
    ) -> httpx.Response:
        """The canned replies the caller sees, holding `q`, filled for `conversation_id`."""
        params = {"q": q, "conversation_id": conversation_id}
        return await self.http.get(
            "/v1/canned-replies",
            headers=self._as(token),
            params={key: value for key, value in params.items() if value is not None},
        )

    async def reload_policy(self) -> httpx.Response:
        return await self.http.post("/v1/admin/policy/reload", headers=self._as(None))

    # --- waits -----------------------------------------------------------------------------

    async def wait_for(
        self,
        conversation_id: str,
        token: str | None = None,
        *,
        timeout: float | None = None,
        **expected: Any,
    ) -> dict[str, Any]:
        """The conversation's view, once each field in `expected` has its value."""

        async def check() -> dict[str, Any] | None:
            body = await self.conversation(conversation_id, token)
            return body if all(body[key] == value for key, value in expected.items()) else None

        return await eventually(
            check, timeout=timeout or self.patience, what=f"{conversation_id} with {expected}"
        )

    async def wait_for_state(
        self, conversation_id: str, token: str | None, state: str, timeout: float | None = None
    ) -> dict[str, Any]:
        return await self.wait_for(conversation_id, token, timeout=timeout, state=state)

    async def wait_for_event(
        self,
        conversation_id: str,
        token: str | None,
        event_type: str,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The latest event of this type, once there is one."""

        async def check() -> dict[str, Any] | None:
            found = [
                e for e in await self.events(conversation_id, token) if e["type"] == event_type
            ]
            return found[-1] if found else None

        return await eventually(
            check, timeout=timeout or self.patience, what=f"{event_type} in {conversation_id}"
        )

    # --- streams ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _stream(
        self, path: str, token: str | None, after_seq: int | None, last_event_id: str | None
    ) -> AsyncIterator[EventStream]:
        headers = self._as(token)
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        params = {} if after_seq is None else {"after_seq": after_seq}
        async with self.http.stream("GET", path, headers=headers, params=params) as response:
            yield EventStream(response)

    def conversation_stream(
        self,
        conversation_id: str,
        token: str | None = None,
        *,
        after_seq: int | None = None,
        last_event_id: str | None = None,
    ) -> AbstractAsyncContextManager[EventStream]:
        """`async with` it: the conversation's events as they come (from after `after_seq`,
        or resumed after `last_event_id`)."""
        return self._stream(
            f"/v1/conversations/{conversation_id}/stream", token, after_seq, last_event_id
        )

    def agent_stream(
        self,
        agent_id: str,
        token: str | None = None,
        *,
        after_seq: int | None = None,
        last_event_id: str | None = None,
    ) -> AbstractAsyncContextManager[EventStream]:
        """`async with` it: the agent's feed as it comes."""
        return self._stream(f"/v1/agents/{agent_id}/stream", token, after_seq, last_event_id)

    async def stream_ticket(self, stream: str, token: str | None = None) -> httpx.Response:
        """Ask for a ticket to open the stream at path `stream` without a token."""
        return await self.http.post(
            "/v1/stream-tickets", headers=self._as(token), json={"stream": stream}
        )

    # --- the codec endpoint (the Temporal UI's and CLI's) -----------------------------------

    async def codec(
        self, way: str, payloads: list[dict[str, Any]], token: str | None = None
    ) -> httpx.Response:
        """`POST /v1/codec/<way>` (decode or encode) of protobuf-JSON payloads, as the CLI
        sends them with `--codec-auth "Bearer <token>"`."""
        return await self.http.post(
            f"/v1/codec/{way}", headers=self._as(token), json={"payloads": payloads}
        )

    async def codec_ticket(self, token: str | None = None) -> httpx.Response:
        """Ask for a codec endpoint with a ticket, for the Temporal UI."""
        return await self.http.post("/v1/codec/tickets", headers=self._as(token))

    async def decode_with_ticket(
        self, endpoint: str, payloads: list[dict[str, Any]]
    ) -> httpx.Response:
        """What the Temporal UI sends to the codec `endpoint` it was given: no token."""
        return await self.http.post(
            f"{endpoint}/decode",
            headers={"X-Namespace": "default"},
            json={"payloads": payloads},
        )

    @asynccontextmanager
    async def ticketed_stream(self, stream: str, ticket: str) -> AsyncIterator[EventStream]:
        """`async with` it: the stream at path `stream` opened with `ticket` and no token, as
        a browser's EventSource opens it (look at `.response.status_code` first)."""
        async with self.http.stream("GET", stream, params={"ticket": ticket}) as response:
            yield EventStream(response)


def gapless(events: list[dict[str, Any]], *, after_seq: int = 0) -> list[dict[str, Any]]:
    """The events, after checking their seqs follow `after_seq` without a gap or a repeat."""
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(after_seq + 1, after_seq + len(events) + 1)), (
        f"gap or disorder {seqs}"
    )
    return events
