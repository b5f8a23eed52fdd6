"""The staff side of agents, through the API with the real worker (the `system` fixture, on
SQLite and PostgreSQL): an admin changes an agent's capacity and groups (nothing they hold is
taken from them; what waits is theirs at once where they now have room), deactivates an agent
(never while they hold a conversation), lists agents, and brings one back with a new token.

Every "not assigned" below is read after a close answered: a close answers once its closing
activity, which offers the freed seat to whoever waits, has run."""

from __future__ import annotations

from typing import Any

from tests.support.api import Visit, bearer, expect
from tests.support.system import System


async def _held(system: System, agent_id: str) -> set[str]:
    return {view["id"] for view in await system.agent_conversations(agent_id)}


async def _serve(system: System, agent_id: str) -> Visit:
    """A new conversation, active with this agent."""
    visit = await system.start_conversation()
    await system.wait_for(visit.conversation_id, state="active", agent_id=agent_id)
    return visit


async def _queued(system: System) -> Visit:
    """A new conversation, in the queue (told its place: it is in the queue's table)."""
    visit = await system.start_conversation()
    await system.wait_for_event(*visit, "queue.position_changed")
    return visit


async def _close(system: System, visit: Visit) -> None:
    expect(await system.close(visit.conversation_id), 200)


async def test_a_lower_capacity_drops_nothing_and_holds_new_conversations_back(
    system: System,
) -> None:
    gina = await system.create_agent("gina", max_concurrent=3)
    served = [await _serve(system, gina.id) for _ in range(3)]

    lowered = expect(await system.update_agent(gina.id, max_concurrent=1), 200)
    assert (lowered["load"], lowered["max_concurrent"]) == (3, 1)
    assert lowered == await system.agent(gina.id)  # the answer is the agent as GET shows it
    assert await _held(system, gina.id) == {visit.conversation_id for visit in served}
    for visit in served:  # still theirs to answer
        await system.say(visit.conversation_id, gina.token, "Still with you")

    waiting = await _queued(system)
    for visit in served[:2]:  # a load of 2, then 1: not below the capacity of 1
        await _close(system, visit)
        view = await system.conversation(waiting.conversation_id)
        assert (view["state"], view["agent_id"]) == ("queued", None)
    await _close(system, served[2])  # below it now: the waiting one is theirs
    await system.wait_for(waiting.conversation_id, state="active", agent_id=gina.id)

    # Room made: what waits is assigned as the change is answered.
    next_one = await _queued(system)
    raised = expect(await system.update_agent(gina.id, max_concurrent=2), 200)
    assert (raised["load"], raised["max_concurrent"]) == (2, 2)
    await system.wait_for(next_one.conversation_id, state="active", agent_id=gina.id)


async def test_a_group_added_takes_what_waits_there_and_one_removed_keeps_what_is_held(
    system: System,
) -> None:
    hal = await system.create_agent("hal", skill_groups=["after_sales"], max_concurrent=2)
    waiting = await _queued(system)  # in `general`, which nobody serves

    joined = expect(await system.update_agent(hal.id, skill_groups=["general", "after_sales"]), 200)
    assert (joined["skill_groups"], joined["load"]) == (["after_sales", "general"], 1)
    await system.wait_for(waiting.conversation_id, state="active", agent_id=hal.id)

    left = expect(await system.update_agent(hal.id, skill_groups=["after_sales"]), 200)
    assert (left["skill_groups"], left["load"]) == (["after_sales"], 1)
    assert await _held(system, hal.id) == {waiting.conversation_id}
    await system.say(waiting.conversation_id, hal.token, "Still yours, from another group")
    # No longer in `general`: what queues there now waits.
    other = await _queued(system)
    await _close(system, waiting)
    assert (await system.conversation(other.conversation_id))["state"] == "queued"


async def test_a_change_is_checked_as_a_creation_is(system: System) -> None:
    await system.create_agent("ivy", max_concurrent=2)
    before = await system.agent("ivy")
    refusals: list[dict[str, Any]] = [
        {"skill_groups": ["general", "no_such_group"]},
        {"skill_groups": []},
        {"max_concurrent": 0},
        {"max_concurrent": 51},
        {"name": ""},
        {},
        {"status": "online"},
    ]
    for body in refusals:
        refused = await system.update_agent("ivy", **body)
        assert refused.status_code == 422, (body, refused.text)
    assert (
        "no_such_group" in (await system.update_agent("ivy", skill_groups=["no_such_group"])).text
    )
    assert await system.agent("ivy") == before
    assert (await system.update_agent("nobody", name="Nobody")).status_code == 404


async def test_an_agent_is_deactivated_once_they_hold_nothing_and_can_come_back(
    system: System,
) -> None:
    jan = await system.create_agent("jan", max_concurrent=2)
    kim = await system.create_agent("kim", skill_groups=["after_sales"])
    held = [await _serve(system, jan.id) for _ in range(2)]

    refused = await system.deactivate_agent(jan.id)
    assert refused.status_code == 409 and "holds 2 conversation(s)" in refused.text
    await _close(system, held[0])
    refused = await system.deactivate_agent(jan.id)
    assert refused.status_code == 409 and "holds 1 conversation(s)" in refused.text
    assert (await system.agent(jan.id))["active"] is True
    await _close(system, held[1])

    earlier = jan.token
    rotated = expect(await system.rotate_token(jan.id), 200)["token"]
    deactivated = expect(await system.deactivate_agent(jan.id), 200)
    assert (deactivated["active"], deactivated["status"]) == (False, "offline")
    for token in (earlier, rotated):  # every token they had
        response = await system.http.get(f"/v1/agents/{jan.id}", headers=bearer(token))
        assert response.status_code == 401, response.text
    listed = await system.agents()
    assert [agent["id"] for agent in listed["agents"]] == [kim.id]
    everyone = await system.agents(include_inactive=True)
    assert [(agent["id"], agent["active"]) for agent in everyone["agents"]] == [
        (jan.id, False),
        (kim.id, True),
    ]
    # Never assigned again: the admin cannot put them online, and what queues waits.
    online = await system.http.put(
        f"/v1/agents/{jan.id}/status", headers=bearer(system.admin_token), json={"status": "online"}
    )
    assert online.status_code == 409, online.text
    waiting = await _queued(system)
    expect(await system.update_agent(jan.id, max_concurrent=5), 200)  # dispatches: nobody
    assert (await system.conversation(waiting.conversation_id))["agent_id"] is None

    back = expect(await system.activate_agent(jan.id), 200)
    assert (back["active"], back["status"]) == (True, "offline")
    for token in (earlier, rotated):
        response = await system.http.get(f"/v1/agents/{jan.id}", headers=bearer(token))
        assert response.status_code == 401, response.text
    await system.set_status(jan.id, back["token"], "online")
    await system.wait_for(waiting.conversation_id, state="active", agent_id=jan.id)
    assert jan.id in [agent["id"] for agent in (await system.agents())["agents"]]
    assert (await system.deactivate_agent("nobody")).status_code == 404
    assert (await system.activate_agent("nobody")).status_code == 404


async def test_the_list_of_agents_pages(system: System) -> None:
    for n in range(5):
        await system.create_agent(f"agent-{n}", online=False)
    pages, after = [], None
    while True:
        page = await system.agents(limit=2, **({} if after is None else {"after": after}))
        pages.append([agent["id"] for agent in page["agents"]])
        if not page["has_more"]:
            break
        after = pages[-1][-1]
    assert pages == [["agent-0", "agent-1"], ["agent-2", "agent-3"], ["agent-4"]]
    first = (await system.agents(limit=1))["agents"][0]
    assert first == await system.agent("agent-0")
    for bad in ({"limit": 0}, {"limit": 501}, {"after": "x" * 65}):
        response = await system.http.get(
            "/v1/agents", headers=bearer(system.admin_token), params=bad
        )
        assert response.status_code == 422, (bad, response.text)
