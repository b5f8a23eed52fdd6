"""The authorization matrix: every route, for every kind of caller, is allowed (2xx) or refused
(401 without a valid token, 403 for the wrong role or someone else's resource).

The routes come from `app.routes`, so a new route without a row here fails the test. Each
request carries a valid body, so an allowed caller gets a 2xx: a refusal can only come from
authorization. It runs against real uvicorn and worker processes (streams are real streams)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from api.main import create_app
from store.db import Database
from tests.support.access import ACCESS, Route, Subject, make_subject
from tests.support.api import ADMIN_TOKEN, APP_KEY, Visit, bearer
from tests.support.callers import (
    CALLBACK_GROUPS,
    CALLBACK_ROUTING,
    OTHER_AGENT,
    OWNER,
    Caller,
    World,
    forged_visitor_token,
)
from tests.support.policy import write_policy
from tests.support.processes import Deployment


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


def credentials(world: World, caller: Caller, subject: Visit, other: Visit) -> dict[str, str]:
    """The caller's Authorization header for a request about `subject`."""
    token = {
        Caller.NOBODY: None,
        Caller.BAD_TOKEN: forged_visitor_token(subject),
        Caller.ADMIN: ADMIN_TOKEN,
        Caller.APP: APP_KEY,
        Caller.OWNER_AGENT: world.tokens[OWNER],
        Caller.OTHER_AGENT: world.tokens[OTHER_AGENT],
        Caller.OWN_VISITOR: subject.token,
        Caller.OTHER_VISITOR: other.token,
    }[caller]
    return {} if token is None else bearer(token)


async def _status(http: httpx.AsyncClient, method: str, url: str, **request: Any) -> int:
    """The answer's status; a stream is opened, its status read, and closed."""
    async with http.stream(method, url, **request) as response:
        return response.status_code


def _status_class(status: int) -> str:
    return "2xx" if 200 <= status < 300 else str(status)


@pytest.fixture
async def world(empty_db: Database, deploy: Callable[..., Deployment]) -> AsyncIterator[World]:
    deployment = deploy(empty_db.url)
    # The policy is read again when its file changes: ours has the `callback` group.
    write_policy(deployment.settings.policy, groups=CALLBACK_GROUPS, routing=CALLBACK_ROUTING)
    async with deployment.client() as api:
        reloaded = await api.reload_policy()
        assert "callback" in reloaded.text, reloaded.text
        yield await World(api).populate()


@pytest.mark.e2e
async def test_every_route_for_every_caller(world: World) -> None:
    other = await world.active()  # its visitor is "another conversation's visitor"
    shared: dict[Subject, tuple[Visit, dict[str, str]]] = {}
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
                world.api.http,
                method,
                path.format(agent_id=OWNER, **ids),
                headers=credentials(world, caller, subject, other),
                json=route.body,
            )
            expected = expected_status(route, caller)
            if _status_class(status) != expected:
                wrong.append(f"{method} {path} by {caller}: {status}, expected {expected}")
    assert not wrong, "\n".join(wrong)
