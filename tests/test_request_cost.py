"""What every request costs before its route's own work: no dependency of any route runs in
the thread pool (FastAPI runs a dependency that is a plain function there: a trip to a thread
and back on each request, for work that costs nothing on the event loop). Routes take their
blocking work to a thread themselves, once (store/ in one transaction)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from api.main import create_app


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
