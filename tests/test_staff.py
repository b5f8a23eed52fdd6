"""The staff side of a conversation, through the API with the real worker: what the app tells
staff of its customer (never the visitor), the customer's history for the agent serving them,
supervisors of a group, and a supervisor's assignment of a waiting conversation."""

from __future__ import annotations

import json

from tests.support.api import ADMIN_TOKEN, APP_KEY, AgentLogin, eventually
from tests.support.system import System

ATTRIBUTES = {
    "name": "Li Lei",
    "membership": "gold",
    "order": {"summary": "2 items", "total": "¥299"},
    "links": ["https://shop.example/orders/SO-1001"],
}


async def _served_and_closed(system: System, customer_id: str, agent: AgentLogin, said: str) -> str:
    cid, visitor = await system.start_conversation(customer_id)
    await system.wait_for(cid, timeout=30, state="active", agent_id=agent.id)
    await system.say(cid, visitor, said)
    closed = await system.close(cid, agent.token)
    assert closed.status_code == 200, closed.text
    return cid


async def test_its_agent_reads_the_order_the_attributes_and_the_customers_history(
    system: System,
) -> None:
    alice = AgentLogin(*await system.create_agent("alice", max_concurrent=3))
    bob = AgentLogin(*await system.create_agent("bob", skill_groups=["after_sales"]))
    first = await _served_and_closed(system, "cust-li", alice, "My parcel is late")
    second = await _served_and_closed(system, "cust-li", alice, "Wrong size delivered")
    cid, visitor = await system.start_conversation(
        "cust-li", order_id="SO-1001", entry="order_page", attributes=ATTRIBUTES
    )
    await system.wait_for(cid, timeout=30, state="active", agent_id=alice.id)

    seen = await system.conversation(cid, alice.token)
    assert (seen["order_id"], seen["entry"], seen["attributes"]) == (
        "SO-1001",
        "order_page",
        ATTRIBUTES,
    )
    history = await system.customer_conversations("cust-li", alice.token)
    assert history.status_code == 200, history.text
    assert [(c["id"], c["state"], c["agent_name"]) for c in history.json()] == [
        (cid, "active", "Alice"),
        (second, "closed", "Alice"),
        (first, "closed", "Alice"),
    ]
    assert history.json()[1]["close_reason"] == "agent_closed"
    said = [
        e["data"]["content"]
        for e in await system.events(first, alice.token)
        if e["type"] == "message.created"
    ]
    assert said == ["My parcel is late"]
    assert (await system.conversation(second, alice.token))["id"] == second

    # Another agent reads none of it: not the history, not an old transcript, not the chat.
    for refused in (
        await system.customer_conversations("cust-li", bob.token),
        await system.http.get(
            f"/v1/conversations/{first}/events", headers={"Authorization": f"Bearer {bob.token}"}
        ),
        await system.http.get(
            f"/v1/conversations/{cid}", headers={"Authorization": f"Bearer {bob.token}"}
        ),
    ):
        assert refused.status_code == 403, refused.text
    # Nor does the visitor read what the app said of them, nor where the chat began.
    own = await system.conversation(cid, visitor)
    assert {key: own[key] for key in ("order_id", "entry", "attributes")} == {
        "order_id": None,
        "entry": None,
        "attributes": None,
    }

    # The app changes what it says: staff hear which keys changed, the visitor nothing.
    changed = await system.update_attributes(cid, {"membership": "platinum", "order": None})
    assert changed.status_code == 200, changed.text
    expected = {"name": "Li Lei", "membership": "platinum", "links": ATTRIBUTES["links"]}
    assert changed.json() == {"conversation_id": cid, "attributes": expected}
    assert (await system.conversation(cid, alice.token))["attributes"] == expected
    told = await system.wait_for_event(cid, alice.token, "conversation.attributes_changed")
    assert told["data"] == {"keys": ["membership", "order"]}
    visitor_reads = json.dumps(await system.events(cid, visitor), ensure_ascii=False)
    for private in ("Li Lei", "gold", "platinum", "SO-1001", "attributes_changed"):
        assert private not in visitor_reads

    # Once she no longer serves the customer, their history is not hers to read.
    assert (await system.close(cid, alice.token)).status_code == 200
    assert (await system.customer_conversations("cust-li", alice.token)).status_code == 403
    assert (await system.customer_conversations("cust-li")).status_code == 200  # the admin


async def test_attributes_have_a_shape_and_a_size(system: System) -> None:
    big = {"note": "x" * 4100}
    nested = {"order": {"items": {"sku": "A1"}}}
    for attributes in (big, nested, ["not", "an", "object"], {"": "empty key"}):
        refused = await system.http.post(
            "/v1/conversations",
            headers={"Authorization": f"Bearer {system.app_key}"},
            json={"customer_id": "cust-shape", "attributes": attributes},
        )
        assert refused.status_code == 422, (attributes, refused.text)
    cid, _ = await system.start_conversation("cust-shape", attributes={"a": "x" * 3000})
    # Each half fits; together they would not.
    grown = await system.update_attributes(cid, {"b": "y" * 2000})
    assert grown.status_code == 422, grown.text
    assert "4096" in grown.json()["detail"]
    # The customer's open conversation, started again with attributes, takes the new ones.
    again = await system.http.post(
        "/v1/conversations",
        headers={"Authorization": f"Bearer {system.app_key}"},
        json={"customer_id": "cust-shape", "attributes": {"tier_name": "gold"}},
    )
    assert (again.status_code, again.json()["id"]) == (200, cid), again.text
    assert again.json()["attributes"] is None  # the app's answer is the visitor's view
    assert (await system.conversation(cid))["attributes"] == {"tier_name": "gold"}


async def test_a_supervisor_oversees_their_groups_and_only_those(system: System) -> None:
    alice = AgentLogin(*await system.create_agent("alice", max_concurrent=3))
    await system.create_agent("bob", skill_groups=["after_sales"])
    sue = AgentLogin(
        *await system.create_agent("sue", role="supervisor", online=False, max_concurrent=1)
    )
    oscar = AgentLogin(
        *await system.create_agent(
            "oscar", skill_groups=["after_sales"], role="supervisor", online=False
        )
    )
    cid, visitor = await system.start_conversation("cust-sup", attributes={"name": "Han Meimei"})
    await system.wait_for(cid, timeout=30, state="active", agent_id=alice.id)
    await system.say(cid, visitor, "Where is my refund?")

    seen = await system.conversation(cid, sue.token)
    assert (seen["agent_id"], seen["attributes"]) == ("alice", {"name": "Han Meimei"})
    assert "Where is my refund?" in json.dumps(await system.events(cid, sue.token))
    history = await system.customer_conversations("cust-sup", sue.token)
    assert [c["id"] for c in history.json()] == [cid]
    noted = await system.add_note(cid, "Refund approved by finance", sue.token)
    assert noted.status_code == 201, noted.text
    # Each supervisor's monitor shows their own groups, whose figures count those who serve.
    await system.set_status("sue", sue.token, "online")
    [general] = (await system.monitor(sue.token))["skill_groups"]
    assert (general["skill_group"], general["agents_online"], general["capacity"]) == (
        "general",
        1,
        3,
    )
    assert [g["skill_group"] for g in (await system.monitor(oscar.token))["skill_groups"]] == [
        "after_sales"
    ]
    for refused in (
        await system.http.get(f"/v1/conversations/{cid}", headers=_as(oscar)),
        await system.customer_conversations("cust-sup", oscar.token),
        await system.add_note(cid, "Not my group", oscar.token),
        await system.close(cid, oscar.token),
        # A supervisor oversees: they serve no conversation, and are never handed one.
        await system.post_message(cid, sue.token, "Hello from the supervisor"),
    ):
        assert refused.status_code == 403, refused.text
    to_sue = await system.transfer(cid, alice.token, to_agent_id="sue")
    assert to_sue.status_code == 422, to_sue.text

    closed = await system.close(cid, sue.token)
    assert closed.status_code == 200, closed.text
    assert closed.json()["close_reason"] == "admin_closed"
    # Her close sent again (its answer lost) is answered as it was.
    assert (await system.close(cid, sue.token)).status_code == 200
    closing = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert closing["data"]["close_reason"] == "admin_closed"
    assert closing["data"]["text"] == "This chat was closed by our service team."


def _as(login: AgentLogin) -> dict[str, str]:
    return {"Authorization": f"Bearer {login.token}"}


async def test_a_supervisor_assigns_a_waiting_conversation_to_an_agent_it_skips(
    system: System,
) -> None:
    """A conversation handed back to the group by its agent skips them while another agent of
    the group is online (full, here): it waits. The supervisor gives it back to her anyway."""
    carol = AgentLogin(*await system.create_agent("carol", max_concurrent=1))
    busy, _ = await system.start_conversation()
    await system.wait_for(busy, timeout=30, state="active", agent_id=carol.id)
    alice = AgentLogin(*await system.create_agent("alice", max_concurrent=2))
    sue = AgentLogin(*await system.create_agent("sue", role="supervisor", online=False))
    oscar = AgentLogin(
        *await system.create_agent(
            "oscar", skill_groups=["after_sales"], role="supervisor", online=False
        )
    )
    cid, visitor = await system.start_conversation()
    await system.wait_for(cid, timeout=30, state="active", agent_id=alice.id)
    handed = await system.transfer(cid, alice.token, to_skill_group="general")
    assert handed.status_code == 200, handed.text
    await system.wait_for(cid, timeout=30, state="queued", queue_position=1)

    # The supervisor lists her group's conversations, the waiting one first; not another's.
    listed = await system.http.get("/v1/conversations", headers=_as(sue))
    assert [(c["id"], c["state"]) for c in listed.json()] == [(cid, "queued"), (busy, "active")]
    queued = await system.http.get(
        "/v1/conversations", params={"state": "queued", "skill_group": "general"}, headers=_as(sue)
    )
    assert [(c["id"], c["queue_position"]) for c in queued.json()] == [(cid, 1)]
    assert (await system.http.get("/v1/conversations", headers=_as(oscar))).json() == []
    for token, params, status in (
        (oscar.token, {"skill_group": "general"}, 403),  # not his group
        (alice.token, {}, 403),  # agents list their own (GET /v1/agents/{id}/conversations)
        (sue.token, {"state": "waiting"}, 422),
    ):
        refused = await system.http.get(
            "/v1/conversations", params=params, headers={"Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == status, (params, refused.text)

    for token, agent_id, status in (
        (oscar.token, "alice", 403),  # not his group
        (alice.token, "alice", 403),  # agents do not assign
        (sue.token, "carol", 409),  # full
        (sue.token, "nobody", 422),
        (sue.token, "sue", 422),  # a supervisor is not assigned
    ):
        refused = await system.assign(cid, agent_id, token)
        assert refused.status_code == status, (agent_id, refused.text)

    assigned = await system.assign(cid, "alice", sue.token)
    assert assigned.status_code == 200, assigned.text
    await system.wait_for(cid, visitor, timeout=30, state="active", agent_name="Alice")
    assert (await system.agent("alice"))["load"] == 1
    assert (await system.post_message(cid, alice.token, "I'm back on it")).status_code == 201
    # Assigned already: a second assignment finds nothing waiting.
    assert (await system.assign(cid, "alice", sue.token)).status_code == 409

    async def told_alice() -> bool:
        feed = await system.agent_feed("alice", alice.token)
        return any(
            e["type"] == "conversation.assigned" and e["conversation_id"] == cid for e in feed
        )

    await eventually(told_alice, what="alice's feed tells her the assignment")


async def test_a_staff_token_says_whose_it_is(system: System) -> None:
    """GET /v1/me: what a workbench signed in with a token alone learns first."""
    alice = AgentLogin(*await system.create_agent("alice", skill_groups=["general", "after_sales"]))
    sue = AgentLogin(*await system.create_agent("sue", role="supervisor", online=False))
    cases = (
        (alice.token, {"role": "agent", "id": "alice", "skill_groups": ["after_sales", "general"]}),
        (sue.token, {"role": "supervisor", "id": "sue", "skill_groups": ["general"]}),
        (ADMIN_TOKEN, {"role": "admin", "id": "admin", "name": "Admin"}),
    )
    for token, expected in cases:
        me = await system.http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert expected.items() <= me.json().items(), me.json()
    _, visitor = await system.start_conversation()
    for token, status in ((visitor, 403), (APP_KEY, 403), ("agt_forged", 401)):
        refused = await system.http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == status, refused.text
