"""Invariant 7 at the edges of what a client can send: lone surrogates in a JSON body, bearer
tokens that are not ASCII, JSON nested to any depth, image and video messages that are not web
addresses, text that is only whitespace. Each got a 500, or was stored; each is a 4xx now and
changes nothing. tests/test_hostile.py generates such requests too; these are the reproductions,
on every route that takes a body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.deps import MAX_JSON_DEPTH
from tests.support.access import ACCESS, Route, Subject, callers_of, make_subject
from tests.support.api import ADMIN_TOKEN, APP_KEY, Visit, bearer
from tests.support.callers import CALLBACK_GROUPS, CALLBACK_ROUTING, OWNER, Caller, World
from tests.support.system import StartSystem, System

BODY_ROUTES = {key: route for key, route in ACCESS.items() if route.body is not None}


@pytest.fixture
async def system(time_env: Any, make_system: StartSystem) -> System:
    return await make_system(time_env, groups=CALLBACK_GROUPS, routing=CALLBACK_ROUTING)


class Requests:
    """Requests to every route with a body, by a caller it admits, about real resources."""

    def __init__(self, system: System, world: World) -> None:
        self.system = system
        self.world = world
        self.subjects: dict[Subject, tuple[Visit, dict[str, str]]] = {}

    async def send(
        self, method: str, path: str, route: Route, body: bytes, token: str | None = None
    ) -> Any:
        if route.subject not in self.subjects:
            self.subjects[route.subject] = await make_subject(self.world, route.subject)
        subject, ids = self.subjects[route.subject]
        # A route open to anyone (its credential is in its path): no token.
        caller = callers_of(route)[0]
        token = (
            token
            or {
                Caller.NOBODY: None,
                Caller.ADMIN: ADMIN_TOKEN,
                Caller.APP: APP_KEY,
                Caller.OWNER_AGENT: self.world.its_agent_token(ids),
                Caller.OWN_VISITOR: subject.token,
            }[caller]
        )
        return await self.system.http.request(
            method,
            self.world.path(path, ids),
            headers={**(bearer(token) if token else {}), "Content-Type": "application/json"},
            content=body,
        )


def with_lone_surrogates(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body with a lone surrogate in each of its strings (the shape the route takes), and
    with one in an extra key and its value (refused by validation, which echoes its input)."""
    mutated = {
        key: value + "\ud800" if isinstance(value, str) else value for key, value in body.items()
    }
    return [mutated, {**body, "\udfff": "\ud83d"}] if mutated != body else [{**body, "\udc00": 1}]


def ascii_json(body: object) -> bytes:
    """As any JSON client sends what it cannot encode as UTF-8: escaped (`\\ud800`)."""
    return json.dumps(body).encode()


async def test_a_lone_surrogate_in_any_body_is_refused(system: System) -> None:
    world = await World(system).populate()
    requests = Requests(system, world)
    active = await world.active()
    before = await system.events(active.conversation_id)
    for (method, path), route in BODY_ROUTES.items():
        assert route.body is not None
        for body in with_lone_surrogates(route.body):
            response = await requests.send(method, path, route, ascii_json(body))
            assert response.status_code == 422, (method, path, body, response.text)
            assert "lone surrogate" in response.json()["detail"]
    assert await system.events(active.conversation_id) == before
    # A pair of surrogates escaped in JSON is one character: taken, stored, shown as it was.
    visit = requests.subjects[Subject.ACTIVE][0]
    emoji = {"client_message_id": "pair", "content": "thanks \ud83d\ude00"}
    stored = await system.http.post(
        f"/v1/conversations/{visit.conversation_id}/messages",
        headers={**bearer(visit.token), "Content-Type": "application/json"},
        content=ascii_json(emoji),
    )
    assert stored.status_code == 201, stored.text
    assert stored.json()["content"] == "thanks 😀"


async def test_json_nested_too_deep_is_refused(system: System) -> None:
    world = await World(system).populate()
    requests = Requests(system, world)
    # Just too deep; deep enough to break a recursive walk; too deep for the JSON parser.
    for depth in (MAX_JSON_DEPTH + 1, 900, 30_000):
        nested = b"[" * depth + b"]" * depth
        for (method, path), route in BODY_ROUTES.items():
            assert route.body is not None
            first = next(iter(route.body))
            for body in (
                nested,
                ascii_json({**route.body, first: "*"}).replace(b'"*"', nested),
                ascii_json({**route.body, "extra": "*"}).replace(b'"*"', nested),
            ):
                response = await requests.send(method, path, route, body)
                assert response.status_code == 422, (method, path, depth, response.text)
                assert f"nested deeper than {MAX_JSON_DEPTH} levels" in response.json()["detail"]


async def test_bearer_tokens_that_are_not_ascii_are_refused(system: System) -> None:
    world = await World(system).populate()
    active = await world.active()
    for token in [
        b"\xe9",  # é in Latin-1, as a header's bytes are read
        "密钥".encode(),
        b"dev-admin-token\xe9",
        b"vis_" + active.conversation_id.encode() + b".\xe9",
        b"agt_\xe9",
        "\ud800".encode("utf-8", "surrogatepass"),
    ]:
        for path in (f"/v1/conversations/{active.conversation_id}", "/v1/monitor"):
            response = await system.http.get(path, headers={"Authorization": b"Bearer " + token})
            assert response.status_code == 401, (token, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"


async def test_images_and_videos_are_uploads_never_addresses_and_text_is_not_blank(
    system: System,
) -> None:
    """An image or a video is a file uploaded first (tests/test_attachments.py): a link is no
    image (a `javascript:` one least of all)."""
    world = await World(system).populate()
    active = await world.active()
    path = f"/v1/conversations/{active.conversation_id}/messages"
    before = await system.events(active.conversation_id)
    refused = [
        ("image", "javascript:alert(1)"),
        ("video", "javascript:alert(1)"),
        ("image", "data:image/png;base64,iVBORw0KGgo="),
        ("image", "http://cdn.example.com/parcel.png"),
        ("video", "https://"),
        ("image", "https://cdn.example.com/a parcel.png"),
        ("image", "//cdn.example.com/parcel.png"),
        ("text", " \t\n "),
        ("emoji", "\u3000"),
        ("image", " "),
        ("image", "https://cdn.example.com/parcel.png?size=2"),
        ("video", "https://cdn.example.com/parcel.mp4"),
        ("file", "https://cdn.example.com/invoice.pdf"),
    ]
    for kind, content in refused:
        for token in (active.token, world.tokens[OWNER]):
            response = await system.http.post(
                path,
                headers=bearer(token),
                json={"client_message_id": f"{kind}-{content}", "type": kind, "content": content},
            )
            assert response.status_code == 422, (kind, content, response.text)
    assert await system.events(active.conversation_id) == before
    overflowed = await world.overflowed()
    blank = await system.leave_message(*overflowed, "   \n")
    assert blank.status_code == 422, blank.text
    assert await system.left_messages() == []
