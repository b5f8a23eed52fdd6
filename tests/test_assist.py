"""Staff assist: canned replies of the caller's skill groups, found in English and Chinese and
filled for a conversation, and the SOP staff read with a conversation (never its visitor).
The real API and worker on a real Temporal server, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from temporalio.testing import WorkflowEnvironment

from tests.support.api import APP_KEY, AgentLogin, Visit, expect
from tests.support.policy import STAFF_ASSIST, add_to_policy
from tests.support.system import StartSystem, System

# Conversations that came in through the refund entry go to `general`, with priority.
REFUND_ROUTING = '[[routing]]\nwhen = { entry = "refund" }\nskill_group = "general"\npriority = 5\n'


async def _assisted_system(env: WorkflowEnvironment, make_system: StartSystem) -> System:
    system = await make_system(env, routing=REFUND_ROUTING)
    add_to_policy(system.policy_path, STAFF_ASSIST)
    return system


async def _served_by(system: System, agent: AgentLogin, **attributes: Any) -> Visit:
    visit = await system.start_conversation(**attributes)
    await system.wait_for(visit.conversation_id, state="active", agent_id=agent.id)
    return visit


async def _shortcuts(system: System, token: str | None, q: str | None = None) -> list[str]:
    found = expect(await system.canned_replies(token, q=q), 200)
    return [reply["shortcut"] for reply in found["canned_replies"]]


async def test_canned_replies_by_group_and_query_filled_for_a_conversation(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await _assisted_system(time_env, make_system)
    alice = await system.create_agent("alice", skill_groups=["general"], max_concurrent=5)
    bob = await system.create_agent("bob", skill_groups=["after_sales"])

    # By group: a reply for every group, and those of the agent's own groups; an admin: all.
    assert await _shortcuts(system, alice.token) == ["hello", "refund"]
    assert await _shortcuts(system, bob.token) == ["hello", "label"]
    assert await _shortcuts(system, None) == ["hello", "refund", "label"]
    # By query, whatever the case, in English and in Chinese; never another group's reply.
    assert await _shortcuts(system, alice.token, "REFUND") == ["refund"]
    assert await _shortcuts(system, alice.token, "退款") == ["refund"]
    assert await _shortcuts(system, alice.token, "退货") == []
    assert await _shortcuts(system, bob.token, "退货") == ["label"]
    assert await _shortcuts(system, bob.token, "how can i") == ["hello"]

    # Filled for a conversation: its agent's name and its order; no name given yet, so the
    # policy's fallback fills it, and the reply says so.
    visit = await _served_by(system, alice, order_id="SO-1001")
    filled = expect(
        await system.canned_replies(alice.token, conversation_id=visit.conversation_id), 200
    )
    replies = {reply["shortcut"]: reply for reply in filled["canned_replies"]}
    assert replies["hello"]["text"] == "Hello customer, this is Alice. How can I help?"
    assert replies["hello"]["unfilled"] == ["customer_name"]
    assert replies["refund"]["text"].startswith("The refund of order SO-1001 is on its way.")
    assert replies["refund"]["unfilled"] == []
    # An admin reads the conversation's agent's name; without a conversation, as written.
    as_admin = expect(
        await system.canned_replies(q="label", conversation_id=visit.conversation_id), 200
    )
    assert [reply["text"] for reply in as_admin["canned_replies"]] == ["Alice 已为您发送退货标签。"]
    plain = expect(await system.canned_replies(alice.token, q="hello"), 200)
    assert plain["canned_replies"][0]["text"].startswith("Hello {customer_name}, this is {agent_")

    # Nobody reads what the conversation holds but its agent and admins.
    for token, conversation_id in [
        (visit.token, None),
        (visit.token, visit.conversation_id),
        (APP_KEY, None),
        (bob.token, visit.conversation_id),
    ]:
        refused = await system.canned_replies(token, conversation_id=conversation_id)
        assert refused.status_code == 403, (token, conversation_id, refused.text)
    unknown = await system.canned_replies(alice.token, conversation_id="nosuchconversation")
    assert unknown.status_code == 404, unknown.text
    too_long = await system.canned_replies(alice.token, q="退" * 101)
    assert too_long.status_code == 422, too_long.text

    # The app tells the customer's name: it fills the greeting; the group's supervisor reads
    # the group's replies, filled for its conversations too.
    named = await system.update_attributes(visit.conversation_id, {"name": "Li Lei"})
    assert named.status_code == 200, named.text
    sue = await system.create_agent("sue", role="supervisor", online=False)
    for token in (alice.token, sue.token):
        greeting = expect(
            await system.canned_replies(token, q="hello", conversation_id=visit.conversation_id),
            200,
        )["canned_replies"][0]
        assert (greeting["text"], greeting["unfilled"]) == (
            "Hello Li Lei, this is Alice. How can I help?",
            [],
        )
    assert await _shortcuts(system, sue.token) == ["hello", "refund"]


async def test_a_new_canned_reply_shows_without_a_restart(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await _assisted_system(time_env, make_system)
    alice = await system.create_agent("alice", skill_groups=["general"])
    assert await _shortcuts(system, alice.token, "发票") == []

    add_to_policy(
        system.policy_path,
        '[[canned_replies]]\nshortcut = "invoice"\ntitle = "发票"\n'
        'text = "The invoice for {order_id} is in your e-mail."\n',
    )
    assert await _shortcuts(system, alice.token, "发票") == ["invoice"]


async def test_staff_read_the_sop_of_a_matching_conversation_and_its_visitor_never(
    time_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await _assisted_system(time_env, make_system)
    alice = await system.create_agent("alice", skill_groups=["general"], max_concurrent=5)
    refund = await _served_by(system, alice, entry="refund")
    other = await _served_by(system, alice)

    for token in (alice.token, None):  # its agent, an admin
        seen = await system.conversation(refund.conversation_id, token)
        assert seen["routing_rule"] == 0
        assert seen["sop"] == {
            "title": "Refund request",
            "steps": [
                {"text": "Check the order's payment and delivery state", "canned_reply": None},
                {"text": "Tell the customer the refund has started", "canned_reply": "refund"},
            ],
        }
        assert (await system.conversation(other.conversation_id, token))["sop"] is None
    assert (await system.conversation(refund.conversation_id, refund.token))["sop"] is None
