"""Hostile input: schemathesis generates requests from our own OpenAPI document, valid ones and
invalid ones, for every operation (but the two never-ending `/stream` routes), and sends them
with the real credentials of every caller the route admits, about real resources (and about
generated ids), to the real API on a real Temporal server and database. Every answer must keep
the contract: never a 5xx, a documented status code, a body and headers as documented.

Schemathesis keeps to what its schema describes and to text it can encode; clients need not.
So each generated request may also be sent with lone surrogates in every string of its JSON
body, nested far deeper than any body of ours, or with an Authorization header that is not
the caller's token (bytes that are not ASCII, a surrogate's, a token cut short).

Who may call what, and the 401/403 of everyone else, is the authorization matrix's part
(tests/test_authorization.py); this test takes its table (tests/support/access.py) to know
whose credentials to use.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.testing import WorkflowEnvironment

from api.deps import MAX_JSON_DEPTH
from tests.support.access import ACCESS, callers_of, make_subject
from tests.support.api import ADMIN_TOKEN, APP_KEY, Visit, bearer
from tests.support.backends import on_postgres_alone_but_in_the_soak
from tests.support.callers import CALLBACK_GROUPS, CALLBACK_ROUTING, OWNER, Caller, World
from tests.support.system import StartSystem, System

T = TypeVar("T")

# Generated requests per operation, caller and mode (valid or invalid input): small enough for
# CI, and derandomized, so every run sends the same ones; SWITCHBOARD_SOAK=1 sends many more.
EXAMPLES = 50 if os.environ.get("SWITCHBOARD_SOAK") == "1" else 5

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,  # invalid input is refused with a 4xx
]

SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
    # Requests go to a live system: slow examples and filtered ones (fixed ids) are expected.
    suppress_health_check=list(HealthCheck),
)


def has_input(operation: schemathesis.APIOperation) -> bool:
    """Whether invalid input can be made for it (its Authorization header is ours to set)."""
    parameters = [p for p in operation.iter_parameters() if p.name != "Authorization"]
    return bool(parameters) or bool(operation.body)


@pytest.fixture
async def system(time_env: WorkflowEnvironment, make_system: StartSystem) -> System:
    return await make_system(time_env, groups=CALLBACK_GROUPS, routing=CALLBACK_ROUTING)


Headers = dict[str, str | bytes]
# A change to a request as sent: its headers and body in, its headers and body out.
Hostility = Callable[[Headers, bytes | None], tuple[Headers, bytes | None]]


def as_generated(headers: Headers, body: bytes | None) -> tuple[Headers, bytes | None]:
    return headers, body


def _with_lone_surrogates(value: Any) -> Any:
    """Every string of a JSON value, keys too, with a lone surrogate at its end."""
    if isinstance(value, str):
        return value + "\ud800"
    if isinstance(value, list):
        return [_with_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_with_lone_surrogates(k): _with_lone_surrogates(v) for k, v in value.items()}
    return value


def lone_surrogates(headers: Headers, body: bytes | None) -> tuple[Headers, bytes | None]:
    try:
        value = json.loads(body or b"")
    except ValueError:
        return headers, body  # no JSON body to put them in
    # As a JSON client sends text it cannot encode as UTF-8: escaped (\ud800).
    return headers, json.dumps(_with_lone_surrogates(value)).encode()


def nested(depth: int) -> Hostility:
    def nest(headers: Headers, body: bytes | None) -> tuple[Headers, bytes | None]:
        return headers, b"[" * depth + (body or b"") + b"]" * depth

    return nest


def authorization(value: Callable[[str], bytes]) -> Hostility:
    """The caller's token (or a made-up one) as `value` makes it into the header's bytes."""

    def replace(headers: Headers, body: bytes | None) -> tuple[Headers, bytes | None]:
        token = str(headers.get("Authorization", "Bearer dev-admin-token")).split(" ", 1)[-1]
        return {**headers, "Authorization": value(token)}, body

    return replace


HOSTILITIES: list[Hostility] = [
    # As generated, more often than not.
    *[as_generated] * 6,
    lone_surrogates,
    nested(MAX_JSON_DEPTH + 1),
    nested(20_000),  # beyond what the JSON parser itself can nest
    authorization(
        lambda token: b"Bearer " + token.encode() + "\ud800".encode(errors="surrogatepass")
    ),
    authorization(lambda token: b"Bearer " + token.encode() + b"\xe9"),  # é, as Latin-1
    authorization(lambda token: "Bearer 密钥".encode()),
    authorization(lambda token: b"Bearer " + token[:-1].encode()),
    authorization(lambda token: b"Bearer"),
]


def _sender(
    http: httpx.AsyncClient, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> Callable[[schemathesis.Case, Hostility], httpx.Response]:
    """Sends a case as schemathesis would (its own serialization), changed by a hostility,
    through our ASGI client."""

    def send(case: schemathesis.Case, hostility: Hostility) -> httpx.Response:
        kwargs = case.as_transport_kwargs(base_url=str(http.base_url).rstrip("/"))
        prepared = requests.Request(**kwargs).prepare()
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        headers, content = hostility(dict(prepared.headers), body)
        if content is not None and content != body:
            headers["Content-Length"] = str(len(content))
        return run(
            http.request(
                prepared.method or "GET", prepared.url or "", headers=headers, content=content
            )
        )

    return send


@on_postgres_alone_but_in_the_soak("db")
async def test_generated_requests_keep_the_contract(system: System) -> None:
    loop = asyncio.get_running_loop()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        """From the fuzzing thread: run on the test's loop, where the API and worker live."""
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    world = await World(system).populate()
    schema = schemathesis.openapi.from_dict((await system.http.get("/openapi.json")).json())
    operations = [
        operation
        for operation in (result.ok() for result in schema.get_all_operations())
        if not operation.path.endswith("/stream")
    ]
    send = _sender(system.http, run)

    def fuzz(
        operation: schemathesis.APIOperation,
        caller: Caller,
        mode: GenerationMode,
        subject: Visit,
        ids: dict[str, str],
    ) -> None:
        token = {
            Caller.NOBODY: None,
            Caller.ADMIN: ADMIN_TOKEN,
            Caller.APP: APP_KEY,
            Caller.OWNER_AGENT: world.its_agent_token(ids),
            Caller.OWN_VISITOR: subject.token,
        }[caller]
        real = {"agent_id": OWNER, **ids}
        # Mostly about the real resources, now and then about generated ids.
        path_choices = [
            {name: value for name, value in real.items() if f"{{{name}}}" in operation.path}
        ] * 3 + [{}]

        @SETTINGS
        @hypothesis.given(data=st.data())
        def generated_requests(data: st.DataObject) -> None:
            path_parameters = data.draw(st.sampled_from(path_choices), label="path")
            case = data.draw(
                operation.as_strategy(
                    mode,
                    path_parameters=path_parameters or None,
                    headers=None if token is None else bearer(token),
                ),
                label="case",
            )
            hostility = data.draw(st.sampled_from(HOSTILITIES), label="hostility")
            case.validate_response(send(case, hostility), checks=CHECKS)

        generated_requests()

    def fuzz_all() -> list[str]:
        failures = []
        for operation in operations:
            route = ACCESS[(operation.method.upper(), operation.path)]
            modes = [GenerationMode.POSITIVE]
            if has_input(operation):
                modes.append(GenerationMode.NEGATIVE)
            subjects = []
            for caller in callers_of(route):
                for mode in modes:
                    run(world.set_status(OWNER, "online"))  # generated requests may set her away
                    # One subject per operation, unless its calls close or move it.
                    if route.consumes or not subjects:
                        subjects.append(run(make_subject(world, route.subject)))
                    try:
                        fuzz(operation, caller, mode, *subjects[-1])
                    except (Exception, FailureGroup) as exc:
                        failures.append(f"{operation.label} by {caller}, {mode.value}: {exc}")
            for subject, _ids in subjects:
                run(world.close(subject))  # frees Alice's capacity for the next ones
        return failures

    failures = await asyncio.to_thread(fuzz_all)
    assert not failures, "\n\n".join(failures)


async def test_numbers_beyond_a_database_integer_are_refused_not_a_500(system: System) -> None:
    """What the generated requests found: PostgreSQL's INTEGER is 32 bits, and a larger number
    in a query there is an error (a 500), not an empty answer."""
    world = await World(system).populate()
    conversation = await world.active()
    alice = bearer(world.tokens[OWNER])
    too_big = 2**31
    for method, url in [
        ("GET", f"/v1/conversations/{conversation.conversation_id}/events?after_seq={too_big}"),
        ("GET", f"/v1/agents/{OWNER}/events?after_seq={too_big}"),
        ("POST", f"/v1/left-messages/{too_big}/resolve"),
    ]:
        response = await system.http.request(method, url, headers=alice, json={})
        assert response.status_code == 422, (url, response.text)
    largest = await system.http.get(
        f"/v1/conversations/{conversation.conversation_id}/events?after_seq={too_big - 1}",
        headers=alice,
    )
    assert largest.status_code == 422 and "beyond the newest event" in largest.text


async def test_a_body_that_is_not_utf8_is_an_invalid_body(system: System) -> None:
    """What the generated requests found: FastAPI answered such a body with an undocumented
    400 (a body that is not JSON gets 422)."""
    world = await World(system).populate()
    conversation = await world.active()
    before = (await world.view(conversation))["last_seq"]
    for body, detail in [
        (b'{"client_message_id": "m", "content": "\xff\xfe"}', "not valid JSON (UTF-8)"),
        (b"{not json", "JSON decode error"),
    ]:
        response = await system.http.post(
            f"/v1/conversations/{conversation.conversation_id}/messages",
            headers={**bearer(conversation.token), "Content-Type": "application/json"},
            content=body,
        )
        assert response.status_code == 422, (body, response.text)
        assert detail in response.text
    assert (await world.view(conversation))["last_seq"] == before  # nothing stored
