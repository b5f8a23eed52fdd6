"""Clients generated from /openapi.json name each call by its operation id: every operation has
one tag and a short, stable, unique id `<tag>.<verb>` (`conversations.start`, `messages.post`)."""

from __future__ import annotations

import re

import httpx
from fastapi.routing import APIRoute, iter_route_contexts

from api.main import create_app

OPERATION_ID = re.compile(r"(?P<tag>[a-z][a-z_]*)\.(?P<verb>[a-z][a-z_]*)")


async def test_every_operation_has_one_tag_and_a_unique_tag_dot_verb_id() -> None:
    app = create_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://switchboard"
    ) as http:
        document = (await http.get("/openapi.json")).json()
    listed: dict[tuple[str, str], str] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            match = OPERATION_ID.fullmatch(operation.get("operationId", ""))
            assert match, f"{where}: operation id {operation.get('operationId')!r}"
            assert operation["tags"] == [match["tag"]], f"{where}: tags {operation['tags']}"
            listed[(method.upper(), path)] = operation["operationId"]
    ids = list(listed.values())
    assert len(set(ids)) == len(ids), f"repeated operation ids: {sorted(ids)}"

    # Included routers are resolved lazily: iter_route_contexts flattens them.
    routes = {
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute) and route.original_route.include_in_schema
        for method in route.methods or ()
    }
    assert routes == set(listed), "every route is in the document, and nothing else"
    # The README's examples, as a generated client names them.
    assert listed[("POST", "/v1/conversations")] == "conversations.start"
    assert listed[("POST", "/v1/conversations/{conversation_id}/messages")] == "messages.post"
    assert listed[("POST", "/v1/conversations/{conversation_id}/close")] == "conversations.close"
    assert listed[("POST", "/v1/agents")] == "agents.create"
