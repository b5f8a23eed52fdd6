"""The authorization matrix: every route, for every kind of caller, is allowed (2xx) or refused
(401 without a valid token, 403 for the wrong role or someone else's resource).

The routes come from `app.routes`, so a new route without a row here fails the test. Each
request carries a valid body, so an allowed caller gets a 2xx: a refusal can only come from
authorization. It runs against real uvicorn and worker processes (streams are real streams)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from api.main import create_app
from store.db import Database
from tests.callers import (
    ADMIN_TOKEN,
    APP_KEY,
    CALLBACK_GROUPS,
    CALLBACK_ROUTING,
    OTHER_AGENT,
    OWNER,
    Caller,
    Conversation,
    World,
    forged_visitor_token,
)
from tests.test_e2e import Deployment
from tests.utils import bearer, write_policy


class Subject(Enum):
    """What the route's {conversation_id} or {left_message_id} is."""

    ACTIVE = "a conversation Alice holds"
    RATING_PENDING = "a conversation closed and waiting for its rating"
    OVERFLOWED = "a conversation closed with overflow (a left message is offered)"
    LEFT_MESSAGE = "an open left message of Alice's group"


@dataclass(frozen=True)
class Route:
    allowed: frozenset[Caller]
    body: dict[str, Any] | None = None
    subject: Subject = Subject.ACTIVE
    # The call changes its subject (closes it, moves it): each allowed caller gets a fresh one.
    consumes: bool = False


ANYONE = frozenset(Caller)
ADMIN = frozenset({Caller.ADMIN})
AGENT_SELF_OR_ADMIN = frozenset({Caller.ADMIN, Caller.OWNER_AGENT})  # {agent_id} is Alice
ITS_SIDES = frozenset({Caller.OWNER_AGENT, Caller.OWN_VISITOR})
ITS_SIDES_OR_ADMIN = ITS_SIDES | ADMIN

ACCESS: dict[tuple[str, str], Route] = {
    ("GET", "/healthz"): Route(ANYONE),
    ("GET", "/metrics"): Route(ANYONE),
    ("POST", "/v1/agents"): Route(
        ADMIN, body={"id": "carol", "name": "C", "skill_groups": ["general"], "max_concurrent": 1}
    ),
    ("GET", "/v1/agents/{agent_id}"): Route(AGENT_SELF_OR_ADMIN),
    ("PUT", "/v1/agents/{agent_id}/status"): Route(AGENT_SELF_OR_ADMIN, body={"status": "online"}),
    ("GET", "/v1/agents/{agent_id}/conversations"): Route(AGENT_SELF_OR_ADMIN),
    ("GET", "/v1/agents/{agent_id}/events"): Route(AGENT_SELF_OR_ADMIN),
    ("GET", "/v1/agents/{agent_id}/stream"): Route(AGENT_SELF_OR_ADMIN),
    ("POST", "/v1/conversations"): Route(
        frozenset({Caller.APP, Caller.ADMIN}), body={"customer_id": "matrix"}
    ),
    ("GET", "/v1/conversations/{conversation_id}"): Route(ITS_SIDES_OR_ADMIN),
    ("POST", "/v1/conversations/{conversation_id}/messages"): Route(
        ITS_SIDES, body={"client_message_id": "matrix-1", "content": "hello"}
    ),
    ("POST", "/v1/conversations/{conversation_id}/read"): Route(ITS_SIDES, body={"seq": 1}),
    ("POST", "/v1/conversations/{conversation_id}/typing"): Route(ITS_SIDES),
    ("GET", "/v1/conversations/{conversation_id}/events"): Route(ITS_SIDES_OR_ADMIN),
    ("GET", "/v1/conversations/{conversation_id}/stream"): Route(ITS_SIDES_OR_ADMIN),
    ("POST", "/v1/conversations/{conversation_id}/close"): Route(ITS_SIDES_OR_ADMIN, consumes=True),
    ("POST", "/v1/conversations/{conversation_id}/transfer"): Route(
        frozenset({Caller.OWNER_AGENT, Caller.ADMIN}),
        body={"to_skill_group": "general"},
        consumes=True,
    ),
    ("POST", "/v1/conversations/{conversation_id}/rating"): Route(
        frozenset({Caller.OWN_VISITOR}),
        body={"score": 5},
        subject=Subject.RATING_PENDING,
        consumes=True,
    ),
    ("POST", "/v1/conversations/{conversation_id}/left-message"): Route(
        frozenset({Caller.OWN_VISITOR}),
        body={"content": "Call me back"},
        subject=Subject.OVERFLOWED,
        consumes=True,
    ),
    ("GET", "/v1/left-messages"): Route(
        frozenset({Caller.ADMIN, Caller.OWNER_AGENT, Caller.OTHER_AGENT})
    ),
    ("POST", "/v1/left-messages/{left_message_id}/resolve"): Route(
        AGENT_SELF_OR_ADMIN,  # Alice is an agent of its group, Bob is not
        body={"note": "Called back"},
        subject=Subject.LEFT_MESSAGE,
        consumes=True,
    ),
    ("GET", "/v1/monitor"): Route(ADMIN),
    ("GET", "/v1/admin/policy"): Route(ADMIN),
    ("POST", "/v1/admin/policy/reload"): Route(ADMIN),
    ("GET", "/v1/admin/conversations/{conversation_id}/snapshot"): Route(ADMIN),
}


def expected_status(route: Route, caller: Caller) -> str:
    if caller in route.allowed:
        return "2xx"
    if caller in (Caller.NOBODY, Caller.BAD_TOKEN):
        return "401"
    return "403"


def test_every_route_has_a_row_in_the_matrix() -> None:
    # Included routers are resolved lazily: iter_route_contexts flattens them.
    routes = {
        (method, route.path)
        for route in iter_route_contexts(create_app().routes)
        if isinstance(route.original_route, APIRoute)
        for method in route.methods or ()
    }
    assert routes == set(ACCESS), (
        f"routes without a row: {sorted(routes - set(ACCESS))}; "
        f"rows without a route: {sorted(set(ACCESS) - routes)}"
    )


def credentials(
    world: World, caller: Caller, subject: Conversation, other: Conversation
) -> dict[str, str]:
    """The caller's Authorization header for a request about `subject`."""
    token = {
        Caller.NOBODY: None,
        Caller.BAD_TOKEN: forged_visitor_token(subject),
        Caller.ADMIN: ADMIN_TOKEN,
        Caller.APP: APP_KEY,
        Caller.OWNER_AGENT: world.tokens[OWNER],
        Caller.OTHER_AGENT: world.tokens[OTHER_AGENT],
        Caller.OWN_VISITOR: subject.visitor_token,
        Caller.OTHER_VISITOR: other.visitor_token,
    }[caller]
    return {} if token is None else bearer(token)


async def make_subject(world: World, kind: Subject) -> tuple[Conversation, dict[str, str]]:
    """A new subject of this kind and the path ids that name it."""
    if kind == Subject.LEFT_MESSAGE:
        owner = await world.active()  # a conversation only for the visitor's credentials
        return owner, {"left_message_id": str(await world.left_message())}
    maker = {
        Subject.ACTIVE: world.active,
        Subject.RATING_PENDING: world.rating_pending,
        Subject.OVERFLOWED: world.overflowed,
    }[kind]
    conversation = await maker()
    return conversation, {"conversation_id": conversation.id}


async def _status(http: httpx.AsyncClient, method: str, url: str, **request: Any) -> int:
    """The answer's status; a stream is opened, its status read, and closed."""
    async with http.stream(method, url, **request) as response:
        return response.status_code


def _status_class(status: int) -> str:
    return "2xx" if 200 <= status < 300 else str(status)


@pytest.fixture
async def world(dev_env, tmp_path: Path, empty_db: Database) -> AsyncIterator[World]:
    deployment = Deployment(dev_env=dev_env, tmp_path=tmp_path, database_url=empty_db.url)
    # The policy is read again when its file changes: ours has the `callback` group.
    policy = Path(deployment.env["SWITCHBOARD_POLICY"])
    write_policy(policy, groups=CALLBACK_GROUPS, routing=CALLBACK_ROUTING)
    try:
        async with httpx.AsyncClient(base_url=deployment.urls[0], timeout=30) as http:
            reloaded = await http.post("/v1/admin/policy/reload", headers=bearer(ADMIN_TOKEN))
            assert "callback" in reloaded.text, reloaded.text
            yield await World(http).populate()
    finally:
        deployment.stop()


@pytest.mark.e2e
async def test_every_route_for_every_caller(world: World) -> None:
    other = await world.active()  # its visitor is "another conversation's visitor"
    shared: dict[Subject, tuple[Conversation, dict[str, str]]] = {}
    wrong = []
    for (method, path), route in ACCESS.items():
        for caller in Caller:
            if route.consumes and caller in route.allowed:
                subject, ids = await make_subject(world, route.subject)
            else:  # a refused call changes nothing: one subject serves them all
                if route.subject not in shared:
                    shared[route.subject] = await make_subject(world, route.subject)
                subject, ids = shared[route.subject]
            status = await _status(
                world.http,
                method,
                path.format(agent_id=OWNER, **ids),
                headers=credentials(world, caller, subject, other),
                json=route.body,
            )
            expected = expected_status(route, caller)
            if _status_class(status) != expected:
                wrong.append(f"{method} {path} by {caller}: {status}, expected {expected}")
    assert not wrong, "\n".join(wrong)
