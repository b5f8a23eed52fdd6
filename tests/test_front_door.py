"""The front door on the time-skipping server: service hours, routing, overflow, left messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.testing import WorkflowEnvironment

from domain.types import SA_OVERFLOW_HOPS
from tests.support.api import eventually
from tests.support.policy import CLOSING_AT_23_59, the_next_closing
from tests.support.system import StartSystem, System
from workflows.gateway import workflow_id


def _closed_today_groups() -> str:
    """`general` open every day all day, except today (UTC): a special day with no hours."""
    today = datetime.now(UTC).date().isoformat()
    every_day = ", ".join(
        f'{d} = ["00:00-24:00"]' for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    )
    return (
        '[[skill_groups]]\nname = "general"\n'
        "[skill_groups.hours]\n"
        'timezone = "UTC"\n'
        f"weekly = {{ {every_day} }}\n"
        f'special = {{ "{today}" = [] }}\n'
    )


async def test_out_of_hours_closes_with_the_next_opening_then_opening_queues(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=_closed_today_groups())
    await system.create_agent("alice")
    cid, visitor = await system.start_conversation("customer-1")
    closed = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "out_of_hours"
    assert closed["data"]["left_message"] is True
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    assert f"{tomorrow:%a %d %b} at 00:00 (UTC)" in closed["data"]["text"]
    routed = next(
        e for e in await system.events(cid, visitor) if e["type"] == "conversation.routed"
    )
    assert routed["data"]["open"] is False
    assert routed["data"]["next_opening"].startswith(tomorrow.isoformat())
    body = await system.conversation(cid, visitor)
    assert (body["state"], body["close_reason"], body["rating"]["status"]) == (
        "closed",
        "out_of_hours",
        "none",
    )
    # The workflow is done: no agent, nothing to rate.
    handle = time_env.client.get_workflow_handle(workflow_id(cid))
    assert await handle.result() == "out_of_hours"

    midnight = datetime.combine(tomorrow, datetime.min.time(), tzinfo=UTC)
    await time_env.sleep((midnight - await time_env.get_current_time()).total_seconds() + 60)
    again, _visitor_again = await system.start_conversation("customer-1")
    assert again != cid
    assert (await system.wait_for_state(again, None, "active"))["agent_id"] == "alice"


CLOSING_GROUPS = (
    '[[skill_groups]]\nname = "general"\n'  # keeps those waiting (the default)
    + CLOSING_AT_23_59
    + '[[skill_groups]]\nname = "after_sales"\nmax_queue_wait = "25h"\n'
    + 'overflow_to = "general"\non_closing = "close"\n'
    + CLOSING_AT_23_59
    + '[[routing]]\nwhen = { has_order = true }\nskill_group = "after_sales"\n'
)


async def test_at_its_closing_a_group_closes_its_queue_out_of_hours_or_keeps_it(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=CLOSING_GROUPS)
    closing = await the_next_closing(time_env)
    kept, kept_visitor = await system.start_conversation()
    closed_one, visitor = await system.start_conversation(order_id="o-1")
    for cid, token in ((kept, kept_visitor), (closed_one, visitor)):
        await system.wait_for_event(cid, token, "queue.position_changed")
    waiting = await system.pending_timer(closed_one, "closing_at")
    assert datetime.fromisoformat(waiting["closing_at"]) == closing  # before its overflow
    assert (await system.workflow(kept))["closing_at"] is None

    now = await time_env.get_current_time()
    await time_env.sleep((closing - now).total_seconds() + 30)
    closed = await system.wait_for_event(closed_one, visitor, "conversation.closed")
    assert (closed["data"]["close_reason"], closed["data"]["left_message"]) == (
        "out_of_hours",
        True,
    )
    opening = closing + timedelta(minutes=1)
    assert f"{opening:%a %d %b} at 00:00 (UTC)" in closed["data"]["text"]
    handle = time_env.client.get_workflow_handle(workflow_id(closed_one))
    assert await handle.result() == "out_of_hours"
    left = await system.leave_message(closed_one, visitor, "Please call me back")
    assert left.status_code == 201, left.text
    # The general group keeps its queue: that visitor waits on for the opening.
    body = await system.conversation(kept, kept_visitor)
    assert (body["state"], body["queue_position"]) == ("queued", 1)


ROUTED_GROUPS = """
[[skill_groups]]
name = "general"
[[skill_groups]]
name = "vip"
[[skill_groups]]
name = "after_sales"
max_queue_length = 1
overflow_to = "general"
"""
ROUTING = """
[[routing]]
when = { tier = "vip" }
skill_group = "vip"
priority = 10
[[routing]]
when = { has_order = true }
skill_group = "after_sales"
priority = 5
"""


async def test_routing_picks_group_and_priority_and_says_which_rule(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=ROUTED_GROUPS, routing=ROUTING)
    cases = [
        ({"tier": "vip", "order_id": "o-1"}, "vip", 10, 0),
        ({"order_id": "o-2"}, "after_sales", 5, 1),
        ({"language": "en"}, "general", 0, None),
    ]
    for attributes, group, priority, rule in cases:
        cid, visitor = await system.start_conversation(**attributes)
        routed = await system.wait_for_event(cid, None, "conversation.routed")
        assert routed["data"]["skill_group"] == group
        assert routed["data"]["routing_rule"] == rule
        await system.wait_for_state(cid, visitor, "queued")
        body = await system.conversation(cid)  # as staff: routing's workings are theirs
        assert (body["skill_group"], body["priority"], body["routing_rule"]) == (
            group,
            priority,
            rule,
        )


async def test_overflow_by_queue_length_on_arrival(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=ROUTED_GROUPS, routing=ROUTING)
    first, visitor_1 = await system.start_conversation(order_id="o-1")
    await system.wait_for_event(first, visitor_1, "queue.position_changed")
    second, visitor_2 = await system.start_conversation(order_id="o-2")
    overflowed = await system.wait_for_event(second, None, "conversation.overflowed")
    assert overflowed["data"] == {"from": "after_sales", "to": "general", "hop": 1}
    body = await system.conversation(second, visitor_2)
    assert (body["state"], body["skill_group"]) == ("queued", "general")
    assert (await system.conversation(first, visitor_1))["skill_group"] == "after_sales"


WAIT_CHAIN = """
[[skill_groups]]
name = "general"
max_queue_wait = "5m"
overflow_to = "left_message"
[[skill_groups]]
name = "after_sales"
max_queue_wait = "5m"
overflow_to = "general"
[[routing]]
when = { has_order = true }
skill_group = "after_sales"
"""


async def test_overflow_by_wait_to_a_group_then_to_a_left_message_and_its_resolution(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=WAIT_CHAIN)
    early, early_visitor = await system.start_conversation(order_id="o-1")
    await system.wait_for_event(early, early_visitor, "queue.position_changed")
    await time_env.sleep(120)
    later, later_visitor = await system.start_conversation()  # general, 2 minutes later
    await system.wait_for_event(later, later_visitor, "queue.position_changed")

    await time_env.sleep(190)  # the early one has waited 5 minutes in after_sales
    moved = await system.wait_for_event(early, None, "conversation.overflowed")
    assert moved["data"] == {"from": "after_sales", "to": "general", "hop": 1}
    # It kept its original enqueue time: ahead of the one that came 2 minutes later.
    assert (await system.conversation(early, early_visitor))["queue_position"] == 1
    assert (await system.conversation(later, later_visitor))["queue_position"] == 2

    await time_env.sleep(310)  # 5 more minutes, now in general → a left message
    closed = await system.wait_for_event(early, early_visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "overflow"
    assert closed["data"]["left_message"] is True

    left = await system.leave_message(
        early, early_visitor, "Please call me about order o-1", contact="+86 138 0000 0000"
    )
    assert left.status_code == 201, left.text
    assert left.json()["status"] == "open" and left.json()["skill_group"] == "general"
    twice = await system.leave_message(early, early_visitor, "again")
    assert twice.status_code == 409
    listed = await system.left_messages(status="open")
    assert [m["conversation_id"] for m in listed] == [early]

    _agent_id, agent = await system.create_agent("carol", online=False)
    resolved = await system.resolve_left_message(
        left.json()["id"], agent, note="Called back, parcel rerouted"
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["resolved_by"] == "carol"
    assert await system.left_messages(status="open") == []
    again = await system.resolve_left_message(left.json()["id"])
    assert again.status_code == 409
    waiting, waiting_visitor = await system.start_conversation()
    await system.wait_for_event(waiting, waiting_visitor, "queue.position_changed")
    not_offered = await system.leave_message(waiting, waiting_visitor, "hello")
    assert not_offered.status_code == 409


def _chain(length: int, full: int) -> str:
    """g0 → g1 → … with the first `full` groups refusing everyone (max_queue_length 0)."""
    groups = '[[skill_groups]]\nname = "general"\n'
    for index in range(length):
        groups += f'[[skill_groups]]\nname = "g{index}"\n'
        if index < full:
            groups += "max_queue_length = 0\n"
        if index + 1 < length:
            groups += f'overflow_to = "g{index + 1}"\n'
    return groups + '[[routing]]\nwhen = { channel = "app" }\nskill_group = "g0"\n'


async def test_at_most_three_overflow_hops(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(time_env, groups=_chain(5, full=3))
    cid, visitor = await system.start_conversation(channel="app")
    # Three hops, g0 → g1 → g2 → g3, and it waits in g3 (the third hop's event with it).
    body = await system.wait_for(cid, visitor, skill_group="g3")
    assert body["state"] == "queued"
    hops = [e for e in await system.events(cid) if e["type"] == "conversation.overflowed"]
    assert [e["data"] for e in hops] == [  # each hop is told, also into a group that refused
        {"from": "g0", "to": "g1", "hop": 1},
        {"from": "g1", "to": "g2", "hop": 2},
        {"from": "g2", "to": "g3", "hop": 3},
    ]

    await system.stop()  # the next one reads the policy file written for it
    system = await make_system(time_env, groups=_chain(5, full=4))
    cid, visitor = await system.start_conversation(channel="app")
    closed = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "overflow"  # g4 is never tried
    hops = [e for e in await system.events(cid) if e["type"] == "conversation.overflowed"]
    assert [(e["data"]["to"], e["data"]["hop"]) for e in hops] == [
        ("g1", 1),
        ("g2", 2),
        ("g3", 3),
        ("left_message", 4),  # refused everywhere: the last hop is into a left message
    ]
    handle = time_env.client.get_workflow_handle(workflow_id(cid))

    async def four_hops_listed() -> bool:
        return (await handle.describe()).typed_search_attributes.get(SA_OVERFLOW_HOPS) == 4

    await eventually(four_hops_listed, what="OverflowHops = 4, one for each overflowed event")


async def test_a_group_full_on_arrival_overflows_to_a_left_message_with_its_hop(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    groups = '[[skill_groups]]\nname = "general"\nmax_queue_length = 0\n'
    system = await make_system(time_env, groups=groups)
    cid, visitor = await system.start_conversation()
    closed = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert (closed["data"]["close_reason"], closed["data"]["left_message"]) == ("overflow", True)
    hop = await system.wait_for_event(cid, None, "conversation.overflowed")
    assert hop["data"] == {"from": "general", "to": "left_message", "hop": 1}
    assert hop["seq"] < closed["seq"]


async def test_waiting_visitors_hear_their_place_and_estimated_wait(system: System) -> None:
    agent_id, agent = await system.create_agent("alice", max_concurrent=2, online=False)
    queued = []
    for place in range(1, 5):
        cid, visitor = await system.start_conversation()
        queued.append((cid, visitor))
        told = await system.wait_for_event(cid, visitor, "queue.position_changed")
        assert told["data"]["position"] == place
        assert told["data"]["estimated_wait"] is None  # nothing served yet
        assert (await system.conversation(cid, visitor))["queue_position"] == place

    await system.set_status(agent_id, agent, "online")  # serves the first two
    await system.wait_for_state(*queued[1], "active")
    for place, (cid, visitor) in enumerate(queued[2:], start=1):

        async def moved_up(cid: str = cid, visitor: str = visitor, place: int = place) -> bool:
            events = await system.events(cid, visitor)
            told = [e for e in events if e["type"] == "queue.position_changed"]
            return told[-1]["data"]["position"] == place

        await eventually(moved_up, what=f"{cid} told it is number {place}")
        body = await system.conversation(cid, visitor)
        assert body["queue_position"] == place
        assert body["estimated_wait"] is not None
    served = [e for e in await system.events(*queued[0]) if e["type"] == "queue.position_changed"]
    assert [e["data"]["position"] for e in served] == [1]  # told once, then served
