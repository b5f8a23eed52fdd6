"""Chatty conversations continue-as-new when Temporal suggests it, carrying their whole state."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from tests.support.system import StartSystem
from workflows import ConversationWorkflow
from workflows.gateway import workflow_id


async def test_a_long_conversation_continues_as_new_and_loses_nothing(
    short_history_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    env = short_history_env
    system = await make_system(env, idle_warning_after="1s")
    agent_id, agent = await system.create_agent()
    conversation_id, visitor = await system.start_conversation()
    await system.wait_for_state(conversation_id, visitor, "active")
    for index in range(60):
        last_seq = await system.say(conversation_id, visitor, f"question {index}")

    handle = env.client.get_workflow_handle(workflow_id(conversation_id))
    # The newest run started from a predecessor: continue-as-new happened.
    start = await handle.fetch_history()
    attributes = start.events[0].workflow_execution_started_event_attributes
    assert attributes.continued_execution_run_id, "never continued as new"

    # State carried over: same agent, still active, and the idle countdown still works.
    snapshot = await handle.query(ConversationWorkflow.snapshot)
    assert (snapshot.state, snapshot.agent_id) == ("active", agent_id)
    assert snapshot.last_message_seq == last_seq
    await system.post_message(conversation_id, agent, "Anything else?")
    warning = await system.wait_for_event(conversation_id, visitor, "conversation.idle_warning")
    assert warning["data"]["after_agent_message_seq"] == last_seq + 1
    assert (await system.agent(agent_id))["load"] == 1
