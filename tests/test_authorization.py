"""The authorization matrix: every route, for every kind of caller, is allowed (2xx) or refused
(401 without a valid token, 403 for the wrong role or someone else's resource). Valid means
one the API handed out and still honours: not an odd one, not a visitor's whose rating window
has ended, not a disabled agent's; and an agent who handed a conversation on has no more
rights to it than any other agent.

The routes come from `app.routes`, so a new route without a row here fails the test. Each
request carries a valid body, so an allowed caller gets a 2xx: a refusal can only come from
authorization. It runs against real uvicorn and worker processes (streams are real streams)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from api.credentials import visitor_token
from api.main import create_app
from settings import Settings
from store.db import Database
from tests.support.access import ACCESS, Route, Subject, filled_body, make_subject
from tests.support.api import ADMIN_TOKEN, APP_KEY, Visit
from tests.support.callers import (
    CALLBACK_GROUPS,
    CALLBACK_ROUTING,
    DISABLED_AGENT,
    FORMER_AGENT,
    OTHER_AGENT,
    OTHER_SUPERVISOR,
    SUPERVISOR,
    UNAUTHENTICATED,
    Caller,
    World,
    forged_visitor_token,
)
from tests.support.data import disable_agent, end_rating_window
from tests.support.policy import write_policy
from tests.support.processes import Deployment


def expected_status(route: Route, caller: Caller) -> str:
    if caller in route.allowed:
        return route.allowed_answer
    if caller in UNAUTHENTICATED:
        return "401"
    if caller == Caller.OWNER_AGENT and route.subject == Subject.DEACTIVATED_AGENT:
        return "401"  # a deactivated agent's own token is nobody's
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
    world: World,
    caller: Caller,
    subject: Visit,
    ids: dict[str, str],
    other: Visit,
    expired: Visit,
) -> dict[str, bytes]:
    """The caller's Authorization header for a request about `subject` and `ids` (`other`:
    another conversation; `expired`: one whose rating window has ended)."""
    unknown_key = Settings(env="test", secret_key="a-key-this-deployment-never-held")
    token = {
        Caller.NOBODY: None,
        Caller.BAD_TOKEN: forged_visitor_token(subject),
        Caller.ADMIN: ADMIN_TOKEN,
        Caller.APP: APP_KEY,
        Caller.OWNER_AGENT: world.its_agent_token(ids),
        Caller.OTHER_AGENT: world.tokens[OTHER_AGENT],
        Caller.OWN_VISITOR: subject.token,
        Caller.OTHER_VISITOR: other.token,
        Caller.FORMER_AGENT: world.tokens[FORMER_AGENT],
        Caller.SUPERVISOR: world.tokens[SUPERVISOR],
        Caller.OTHER_SUPERVISOR: world.tokens[OTHER_SUPERVISOR],
        Caller.EXPIRED_VISITOR: expired.token,
        Caller.DISABLED_AGENT: world.tokens[DISABLED_AGENT],
        Caller.UNSIGNED: subject.token.rsplit(".", 1)[0],
        Caller.UNKNOWN_KEY: visitor_token(unknown_key, subject.conversation_id),
        Caller.NOT_ASCII: subject.token + "\u00e9\u00ff",
        Caller.LONG_TOKEN: "agt_" + "x" * 4096,
    }[caller]
    # Latin-1: the bytes of a header as the server decodes them.
    return {} if token is None else {"Authorization": f"Bearer {token}".encode("latin-1")}


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
        world = await World(api, handed_over=True).populate()
        disabled = await api.create_agent(DISABLED_AGENT, online=False)
        disable_agent(empty_db, disabled.id)
        world.tokens[DISABLED_AGENT] = disabled.token
        yield world


@pytest.mark.e2e
async def test_every_route_for_every_caller(world: World, empty_db: Database) -> None:
    other = await world.active()  # its visitor is "another conversation's visitor"
    expired = await world.rating_pending()
    end_rating_window(empty_db, expired.conversation_id)
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
                world.path(path, ids),
                headers=credentials(world, caller, subject, ids, other, expired),
                params={key: value.format(**ids) for key, value in (route.query or {}).items()},
                json=filled_body(route, ids),
                files=route.files,
            )
            expected = expected_status(route, caller)
            if _status_class(status) != expected:
                wrong.append(f"{method} {path} by {caller}: {status}, expected {expected}")
    assert not wrong, "\n".join(wrong)
