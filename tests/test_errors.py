"""Invariant 7: bad input gets a clear 4xx and changes nothing; never a 500."""

from __future__ import annotations

from typing import Any

from temporalio.testing import WorkflowEnvironment

from api.deps import MAX_SEQ, stream_start
from tests.support.api import ADMIN, APP, bearer
from tests.support.system import StartSystem, System, assigned_while_no_worker_runs


async def _snapshot(system: System, cid: str) -> tuple[int, list[dict[str, Any]]]:
    events = await system.events(cid)
    return len(events), events


async def test_401_without_or_with_a_bad_token(system: System) -> None:
    cid, visitor = await system.start_conversation()
    forged = visitor[:-4] + ("0000" if not visitor.endswith("0000") else "1111")
    for headers in ({}, {"Authorization": "Bearer nonsense"}, bearer(forged), bearer("agt_x")):
        response = await system.http.get(f"/v1/conversations/{cid}", headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    basic = await system.http.get(f"/v1/conversations/{cid}", headers={"Authorization": "Basic x"})
    assert basic.status_code == 401


async def test_403_wrong_role_or_not_yours(system: System) -> None:
    alice, alice_token = await system.create_agent("alice")
    _bob, bob_token = await system.create_agent("bob", online=False)
    mine, visitor = await system.start_conversation()
    await system.wait_for_state(mine, visitor, "active")
    other, other_visitor = await system.start_conversation()
    await system.wait_for_state(other, other_visitor, "active")
    before = await _snapshot(system, mine)

    cases = [
        (
            "POST",
            "/v1/agents",
            APP,
            {"id": "x", "name": "X", "skill_groups": ["general"], "max_concurrent": 1},
        ),
        (
            "POST",
            "/v1/agents",
            bearer(visitor),
            {"id": "x", "name": "X", "skill_groups": ["general"], "max_concurrent": 1},
        ),
        (
            "POST",
            "/v1/agents",
            bearer(alice_token),
            {"id": "x", "name": "X", "skill_groups": ["general"], "max_concurrent": 1},
        ),
        ("POST", "/v1/conversations", bearer(alice_token), {"customer_id": "c"}),
        ("POST", "/v1/conversations", bearer(visitor), {"customer_id": "c"}),
        ("GET", f"/v1/agents/{alice}", APP, None),
        ("GET", f"/v1/agents/{alice}", bearer(bob_token), None),
        ("PUT", f"/v1/agents/{alice}/status", bearer(bob_token), {"status": "offline"}),
        ("GET", f"/v1/agents/{alice}/conversations", bearer(visitor), None),
        ("GET", f"/v1/conversations/{mine}", bearer(other_visitor), None),
        ("GET", f"/v1/conversations/{mine}", bearer(bob_token), None),
        ("GET", f"/v1/conversations/{mine}", APP, None),
        ("GET", f"/v1/conversations/{mine}/events", bearer(other_visitor), None),
        (
            "POST",
            f"/v1/conversations/{mine}/messages",
            bearer(other_visitor),
            {"client_message_id": "m", "content": "hi"},
        ),
        (
            "POST",
            f"/v1/conversations/{mine}/messages",
            bearer(bob_token),
            {"client_message_id": "m", "content": "hi"},
        ),
        (
            "POST",
            f"/v1/conversations/{mine}/messages",
            ADMIN,
            {"client_message_id": "m", "content": "hi"},
        ),
        ("POST", f"/v1/conversations/{mine}/close", bearer(other_visitor), None),
        ("POST", f"/v1/conversations/{mine}/close", bearer(bob_token), None),
        ("POST", f"/v1/conversations/{mine}/rating", bearer(alice_token), {"score": 5}),
    ]
    for method, path, headers, body in cases:
        response = await system.http.request(method, path, headers=headers, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["detail"]
    assert await _snapshot(system, mine) == before
    assert (await system.conversation(mine, visitor))["state"] == "active"
    agent = await system.http.get(f"/v1/agents/{alice}", headers=ADMIN)
    assert agent.json()["status"] == "online"
    assert (await system.http.get("/v1/agents/x", headers=ADMIN)).status_code == 404


async def test_404_unknown_conversation_or_agent(system: System) -> None:
    for method, path in (
        ("GET", "/v1/conversations/nope"),
        ("GET", "/v1/conversations/nope/events"),
        ("POST", "/v1/conversations/nope/close"),
        ("GET", "/v1/agents/nope"),
        ("PUT", "/v1/agents/nope/status"),
    ):
        body = {"status": "online"} if method == "PUT" else None
        response = await system.http.request(method, path, headers=ADMIN, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["detail"].startswith("unknown")


async def test_409_wrong_state(system: System) -> None:
    alice, alice_token = await system.create_agent("alice", online=False)
    queued, queued_visitor = await system.start_conversation()
    await system.wait_for_event(queued, queued_visitor, "queue.position_changed")
    rating = await system.http.post(
        f"/v1/conversations/{queued}/rating", headers=bearer(queued_visitor), json={"score": 5}
    )
    assert rating.status_code == 409  # no invite pending

    await system.set_status(alice, alice_token, "online")
    await system.wait_for_state(queued, queued_visitor, "active")
    closed = await system.http.post(
        f"/v1/conversations/{queued}/close", headers=bearer(alice_token)
    )
    assert closed.status_code == 200
    await system.wait_for_event(queued, queued_visitor, "rating.invited")  # the workflow is idle
    before = await _snapshot(system, queued)
    again = await system.http.post(f"/v1/conversations/{queued}/close", headers=bearer(alice_token))
    assert again.status_code == 200, again.text  # her close sent again gets its answer
    assert again.json()["close_reason"] == "agent_closed"
    other = await system.close(queued)  # the admin's: someone else's close
    assert other.status_code == 409
    for token in (queued_visitor, alice_token):
        late = await system.post_message(queued, token, "hello?")
        assert late.status_code == 409, late.text
    assert await _snapshot(system, queued) == before

    first = await system.http.post(
        f"/v1/conversations/{queued}/rating", headers=bearer(queued_visitor), json={"score": 3}
    )
    assert first.status_code == 201
    second = await system.http.post(
        f"/v1/conversations/{queued}/rating", headers=bearer(queued_visitor), json={"score": 5}
    )
    assert second.status_code == 409
    assert (await system.conversation(queued, queued_visitor))["rating"]["score"] == 3

    duplicate = await system.http.post(
        "/v1/agents",
        headers=ADMIN,
        json={"id": alice, "name": "Again", "skill_groups": ["general"], "max_concurrent": 1},
    )
    assert duplicate.status_code == 409


async def test_an_agent_writes_only_once_the_workflow_has_made_the_conversation_active(
    dev_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    """Assigned in the database but not yet recorded by the workflow (no worker runs): the
    agent holds it, and their message is refused (409) and stored nowhere until it is active.
    (On the dev server: the time-skipping one does not hand a stopped worker's tasks on.)"""
    system = await make_system(dev_env)
    (cid, visitor), agent = await assigned_while_no_worker_runs(system)
    before = await _snapshot(system, cid)
    early = await system.post_message(cid, agent.token, "Hello, I'm on it")
    assert early.status_code == 409, early.text
    assert early.json()["detail"] == "the conversation is not active"
    assert await _snapshot(system, cid) == before

    await system.start_worker()
    await system.wait_for_state(cid, visitor, "active")
    assert (await system.post_message(cid, agent.token, "Hello, I'm on it")).status_code == 201


async def test_an_agent_cannot_write_before_the_conversation_is_theirs(system: System) -> None:
    _bob, bob_token = await system.create_agent("bob", online=False)
    admin_view = await system.http.post(
        "/v1/conversations", headers=ADMIN, json={"customer_id": "early"}
    )
    cid = admin_view.json()["id"]
    # Queued, not assigned: the agent has no access to it at all.
    response = await system.post_message(cid, bob_token, "hi")
    assert response.status_code == 403


async def test_413_oversized_content_or_body(system: System) -> None:
    cid, visitor = await system.start_conversation()
    await system.wait_for_event(cid, visitor, "queue.position_changed")
    before = await _snapshot(system, cid)
    long = await system.post_message(cid, visitor, "x" * 4001)
    assert long.status_code == 413 and "4000" in long.json()["detail"]
    huge = await system.http.post(
        f"/v1/conversations/{cid}/messages",
        headers=bearer(visitor),
        content=b'{"client_message_id": "m", "content": "' + b"x" * 70_000 + b'"}',
    )
    assert huge.status_code == 413
    assert await _snapshot(system, cid) == before
    assert (await system.post_message(cid, visitor, "x" * 4000)).status_code == 201


async def test_422_invalid_bodies(system: System) -> None:
    cid, visitor = await system.start_conversation()
    await system.wait_for_event(cid, visitor, "queue.position_changed")
    before = await _snapshot(system, cid)
    bad_messages = [
        {},
        {"content": "no id"},
        {"client_message_id": "m"},
        {"client_message_id": "m", "content": ""},
        {"client_message_id": "m", "content": "hi", "type": "sticker"},
        {"client_message_id": "m", "content": "hi", "colour": "red"},
        {"client_message_id": "m" * 129, "content": "hi"},
    ]
    for body in bad_messages:
        response = await system.http.post(
            f"/v1/conversations/{cid}/messages", headers=bearer(visitor), json=body
        )
        assert response.status_code == 422, (body, response.text)
    not_json = await system.http.post(
        f"/v1/conversations/{cid}/messages", headers=bearer(visitor), content=b"{nope"
    )
    assert not_json.status_code == 422
    for score in (0, 6, "five"):
        response = await system.http.post(
            f"/v1/conversations/{cid}/rating", headers=bearer(visitor), json={"score": score}
        )
        assert response.status_code == 422
    assert await _snapshot(system, cid) == before

    for body in (
        {"id": "a", "name": "A", "skill_groups": ["vip"], "max_concurrent": 1},
        {"id": "a", "name": "A", "skill_groups": [], "max_concurrent": 1},
        {"id": "a", "name": "A", "skill_groups": ["general"], "max_concurrent": 0},
        {"id": "a b", "name": "A", "skill_groups": ["general"], "max_concurrent": 1},
    ):
        response = await system.http.post("/v1/agents", headers=ADMIN, json=body)
        assert response.status_code == 422, (body, response.text)
    assert (await system.http.get("/v1/agents/a", headers=ADMIN)).status_code == 404
    bad_status = await system.http.put(
        "/v1/agents/a/status", headers=ADMIN, json={"status": "busy"}
    )
    assert bad_status.status_code in (404, 422)
    for body in ({}, {"customer_id": ""}, {"customer_id": "c", "channel": "Web Chat!"}):
        response = await system.http.post("/v1/conversations", headers=APP, json=body)
        assert response.status_code == 422, (body, response.text)
    assert (
        await system.http.get(f"/v1/conversations/{cid}/events?after_seq=-1", headers=ADMIN)
    ).status_code == 422


async def test_422_for_nul_characters_which_postgresql_text_cannot_hold(system: System) -> None:
    _alice, agent = await system.create_agent("alice")
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    before = await _snapshot(system, cid)
    agent_body = {"id": "nul", "name": "N\x00", "skill_groups": ["general"], "max_concurrent": 1}
    cases: list[tuple[str, str, dict[str, str], dict[str, Any] | None]] = [
        ("POST", "/v1/conversations", APP, {"customer_id": "c\x00"}),
        ("POST", "/v1/conversations", APP, {"customer_id": "c", "order_id": "o\x00"}),
        (
            "POST",
            f"/v1/conversations/{cid}/messages",
            bearer(visitor),
            {"client_message_id": "m-1", "content": "hi\x00"},
        ),
        (
            "POST",
            f"/v1/conversations/{cid}/messages",
            bearer(visitor),
            {"client_message_id": "m\x00", "content": "hi"},
        ),
        ("POST", f"/v1/conversations/{cid}/transfer", bearer(agent), {"to_agent_id": "b\x00"}),
        ("POST", "/v1/agents", ADMIN, agent_body),
        ("GET", "/v1/conversations/c%00", ADMIN, None),
        ("GET", "/v1/agents/a%00", ADMIN, None),
        ("PUT", "/v1/agents/a%00/status", ADMIN, {"status": "online"}),
        ("GET", "/v1/left-messages?skill_group=g%00", ADMIN, None),
    ]
    for method, url, headers, body in cases:
        response = await system.http.request(method, url, headers=headers, json=body)
        assert response.status_code == 422, (method, url, body, response.text)
        assert "NUL" in response.json()["detail"]
    assert await _snapshot(system, cid) == before
    assert (await system.http.get("/v1/agents/nul", headers=ADMIN)).status_code == 404


async def test_seqs_beyond_a_database_integer_are_refused_not_a_500(system: System) -> None:
    agent_id, agent = await system.create_agent("alice")
    cid, visitor = await system.start_conversation()
    huge = str(2**63)
    for url, token in [
        (f"/v1/conversations/{cid}/events?after_seq={huge}", visitor),
        (f"/v1/agents/{agent_id}/events?after_seq={huge}", agent),
        (f"/v1/conversations/{cid}/stream?after_seq={huge}", visitor),
        (f"/v1/agents/{agent_id}/stream?after_seq={huge}", agent),
    ]:
        response = await system.http.get(url, headers=bearer(token))
        assert response.status_code == 422, (url, response.text)
    # A Last-Event-ID beyond any seq is beyond the newest event (and refused as such).
    assert stream_start(after_seq=5, last_event_id=huge) == MAX_SEQ + 1
    assert stream_start(after_seq=5, last_event_id="9") == 9


async def test_the_openapi_document_describes_every_route_and_its_errors(system: System) -> None:
    document = (await system.http.get("/openapi.json")).json()
    expected = {
        ("post", "/v1/agents"): {"201", "401", "403", "409", "422"},
        ("get", "/v1/agents/{agent_id}"): {"200", "401", "403", "404"},
        ("put", "/v1/agents/{agent_id}/status"): {"200", "401", "403", "404", "422"},
        ("get", "/v1/agents/{agent_id}/conversations"): {"200", "401", "403", "404"},
        ("post", "/v1/conversations"): {"200", "201", "401", "403", "422", "503"},
        ("get", "/v1/conversations/{conversation_id}"): {"200", "401", "403", "404"},
        ("post", "/v1/conversations/{conversation_id}/messages"): {
            "200",
            "201",
            "401",
            "403",
            "404",
            "409",
            "413",
            "422",
            "503",
        },
        ("get", "/v1/conversations/{conversation_id}/events"): {"200", "401", "403", "404"},
        ("post", "/v1/conversations/{conversation_id}/close"): {
            "200",
            "401",
            "403",
            "404",
            "409",
            "503",
        },
        ("post", "/v1/conversations/{conversation_id}/rating"): {
            "201",
            "401",
            "403",
            "404",
            "409",
            "422",
            "503",
        },
        ("get", "/healthz"): {"200", "503"},
    }
    for (method, path), codes in expected.items():
        operation = document["paths"][path][method]
        assert codes <= set(operation["responses"]), (method, path, operation["responses"].keys())
        assert operation["summary"]
    assert (await system.http.get("/docs")).status_code == 200
