"""What every request costs before its route's own work: no dependency of any route runs in
the thread pool (FastAPI runs a dependency that is a plain function there: a trip to a thread
and back on each request, for work that costs nothing on the event loop). Routes take their
blocking work to a thread themselves, once (store/ in one transaction)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import pytest
from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from api.main import create_app
from store.assignment import dispatch
from store.db import Database
from store.messages import store_message
from tests.support.api import bearer
from tests.support.data import add_agent, enqueue_conversations, statements_run
from tests.support.system import System


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _on_the_event_loop(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        type(call).__call__  # a security scheme is an instance (HTTPBearer)
    )


def test_no_dependency_of_any_route_runs_in_the_thread_pool() -> None:
    in_threads = {
        f"{sorted(route.methods or ())} {route.path}: {getattr(call, '__qualname__', call)}"
        for route in iter_route_contexts(create_app().routes)
        if isinstance(route.original_route, APIRoute)
        for call in _calls(route.original_route.dependant)
        if not _on_the_event_loop(call)
    }
    assert not in_threads, "dependencies run in the thread pool:\n" + "\n".join(sorted(in_threads))


async def test_a_common_message_post_solves_no_dependencies(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A visitor's or an agent's message to their own conversation (every chat's hot path)
    goes around FastAPI's dependency solving (api/routes/conversations.py); anything else
    about it (here, a query) goes the usual way. Both answer the same."""
    solved: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*, request: Request, **kwargs: Any) -> Any:
        solved.append(request.url.path)
        return await solve(request=request, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    cid, visitor = await system.start_conversation()
    path = f"/v1/conversations/{cid}/messages"
    solved.clear()

    first = await system.post_message(cid, visitor, "Where is my parcel?", "msg-1")
    again = await system.post_message(cid, visitor, "Where is my parcel?", "msg-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    too_long = await system.post_message(
        cid, visitor, "x" * (system.settings.max_message_chars + 1)
    )
    assert too_long.status_code == 413
    assert solved == []

    usual = await system.http.post(
        path,
        params={"unused": "1"},
        headers=bearer(visitor),
        json={"client_message_id": "msg-2", "content": "Hello?"},
    )
    assert usual.status_code == 201, usual.text
    assert solved == [path]
    assert usual.json().keys() == first.json().keys()
    assert usual.json()["seq"] > first.json()["seq"]
    usual_again = await system.http.post(
        path,
        params={"unused": "1"},
        headers=bearer(visitor),
        json={"client_message_id": "msg-1", "content": "Where is my parcel?"},
    )
    assert (usual_again.status_code, usual_again.json()) == (200, first.json())
    usual_too_long = await system.http.post(
        path,
        params={"unused": "1"},
        headers=bearer(visitor),
        json={
            "client_message_id": "msg-3",
            "content": "x" * (system.settings.max_message_chars + 1),
        },
    )
    assert (usual_too_long.status_code, usual_too_long.json()) == (413, too_long.json())


def test_a_new_message_compiles_only_the_statements_with_times_or_json(db: Database) -> None:
    """A message's transaction runs its statements of plain text and integers (the lock, the
    repeat look-up, the next seq, the agent feed's seq and entry) as prepared SQL: SQLAlchemy
    compiles (works out a cache key for) only the rate count, the event and the message, whose
    times and JSON its types convert."""
    add_agent(db, "alice", max_concurrent=1)
    [conversation_id] = enqueue_conversations(db, 1)
    assert [made.agent_id for made in dispatch(db, ["general"])] == ["alice"]
    with statements_run(db) as seen:
        stored = store_message(
            db,
            conversation_id=conversation_id,
            sender_role="visitor",
            sender_id=f"visitor:{conversation_id}",
            client_message_id="msg-1",
            type="text",
            content="Where is my parcel?",
            max_per_minute=60,
        )
    # Not the hints (PostgreSQL's) nor SQLite's BEGIN IMMEDIATE: the transaction's own.
    own = [ran for ran in seen if "pg_notify" not in ran.sql and not ran.sql.startswith("BEGIN")]
    compiled = [ran.sql.split()[0] for ran in own if ran.compiled]
    prepared = [ran.sql.split()[0] for ran in own if not ran.compiled]
    assert stored.created and stored.holder == "alice"
    assert sorted(compiled) == ["INSERT", "INSERT", "SELECT"]
    assert prepared == ["SELECT", "SELECT", "UPDATE", "INSERT", "INSERT"]
