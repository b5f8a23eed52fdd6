"""The bot phase (机器人会话 → 转人工) on the real worker, API and database (time-skipping
server): the FAQ bot answers first, a hand-off by phrase, quick reply, misses, an entry or an
unreachable webhook bot queues the conversation in the right group with the bot's part of the
transcript; out of service hours the hand-off offers the left message; a silent visitor is let
go as the last answer says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from api.routes.monitor import serve_metrics
from domain.types import SA_STATE
from store.db import Database
from tests.support.api import ApiClient, eventually, expect
from tests.support.backends import on_sqlite_alone
from tests.support.bots import (
    HANDOFF_BUTTON,
    WebhookBot,
    faq_routing,
    webhook_settings,
)
from tests.support.policy import DEFAULT_GROUPS
from tests.support.processes import Deployment, free_port
from tests.support.system import StartSystem, System
from workflows.gateway import workflow_id

HANDED_OFF = "conversation.handed_off"


async def _bot_system(
    time_env: WorkflowEnvironment,
    make_system: StartSystem,
    tmp_path: Path,
    *,
    bot: str = "faq",
    settings: str = "",
    groups: str = DEFAULT_GROUPS,
) -> System:
    return await make_system(
        time_env, routing=faq_routing(tmp_path, bot=bot, settings=settings), groups=groups
    )


async def _ask(api: ApiClient, cid: str, visitor: str, text: str) -> list[dict[str, Any]]:
    """Say `text` as the visitor; the bot's answer to it (its messages, as the visitor reads
    them), or [] once the conversation has left the bot (a hand-off)."""
    seq = await api.say(cid, visitor, text)

    async def answered() -> tuple[list[dict[str, Any]]] | None:
        events = await api.events(cid, visitor, after_seq=seq)
        said = [e for e in events if e["data"].get("sender_role") == "bot"]
        if said or any(e["type"] in (HANDED_OFF, "conversation.closed") for e in events):
            return (said,)
        return None

    (said,) = await eventually(answered, what=f"the bot's answer to {text!r}")
    return said


async def _handed_off(api: ApiClient, cid: str) -> dict[str, Any]:
    """The hand-off event as staff read it."""
    return await api.wait_for_event(cid, None, HANDED_OFF)


async def test_the_faq_bot_answers_then_a_person_takes_over_when_asked(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    system = await _bot_system(time_env, make_system, tmp_path)
    cid, visitor = await system.start_conversation()
    assert (await system.wait_for_state(cid, visitor, "bot"))["state"] == "bot"

    answer = await _ask(system, cid, visitor, "Where is my parcel? 我的快递到哪了")
    assert len(answer) == 1 and "tracking" in answer[0]["data"]["content"].casefold()
    assert answer[0]["type"] == "message.created"
    assert HANDOFF_BUTTON in answer[0]["data"]["quick_replies"]
    assert (await system.conversation(cid, visitor))["state"] == "bot"
    # Supervisors find it in the Temporal UI with ConversationState = "bot".
    handle = time_env.client.get_workflow_handle(workflow_id(cid))
    assert (await handle.describe()).typed_search_attributes.get(SA_STATE) == "bot"

    alice = await system.create_agent("alice")
    assert await _ask(system, cid, visitor, "转人工") == []
    conversation = await system.wait_for_state(cid, visitor, "active")
    assert conversation["agent_id"] is None  # the visitor reads the agent's name, not the id
    staff = await system.conversation(cid)
    assert (staff["agent_id"], staff["skill_group"]) == ("alice", "general")
    assert (staff["bot"], staff["handoff_reason"]) == ("faq", "asked_for_person")
    assert conversation["bot"] is None and conversation["handoff_reason"] is None

    handed = await _handed_off(system, cid)
    assert handed["data"]["reason"] == "asked_for_person"
    assert handed["data"]["skill_group"] == "general"
    assert handed["data"]["matched_entries"] == ["track_order"]
    seen = next(e for e in await system.events(cid, visitor) if e["type"] == HANDED_OFF)
    assert seen["data"] == {
        "reason": "asked_for_person",
        "sender_role": "system",
        "text": "Connecting you to a person. Thank you for waiting.",
    }
    # The agent reads the bot's part of the transcript.
    roles = [
        e["data"]["sender_role"]
        for e in await system.events(cid, alice.token)
        if e["type"] == "message.created"
    ]
    assert roles == ["visitor", "bot", "visitor"]


async def test_the_hand_off_button_after_a_miss(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    system = await _bot_system(time_env, make_system, tmp_path)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "bot")
    miss = await _ask(system, cid, visitor, "Do you sell purple giraffes?")
    assert miss[0]["data"]["content"].startswith("Sorry, I did not understand")
    assert miss[0]["data"]["quick_replies"] == [HANDOFF_BUTTON]

    assert await _ask(system, cid, visitor, HANDOFF_BUTTON) == []
    assert (await _handed_off(system, cid))["data"]["reason"] == "quick_reply"
    queued = await system.wait_for_state(cid, None, "queued")
    assert queued["skill_group"] == "general"
    await system.wait_for_event(cid, None, "queue.position_changed")
    states = [
        (e["data"]["state"], e["data"].get("skill_group"))
        for e in await system.events(cid)
        if e["type"] == "conversation.state_changed"
    ]
    assert states == [("bot", None), ("queued", "general")]  # the queue's once, for staff


async def test_too_many_misses_hand_off_and_the_questions_are_kept_for_ops(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    system = await _bot_system(time_env, make_system, tmp_path)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "bot")
    assert len(await _ask(system, cid, visitor, "Do you sell purple giraffes?")) == 1
    assert await _ask(system, cid, visitor, "What about blue elephants?") == []  # max_misses 2
    assert (await _handed_off(system, cid))["data"]["reason"] == "misses"
    assert (await system.wait_for_state(cid, None, "queued"))["skill_group"] == "general"

    unanswered = expect(
        await system.http.get("/v1/admin/bot/unanswered", headers=system._as(None)), 200
    )
    questions = {item["question"]: item["count"] for item in unanswered["questions"]}
    assert questions == {"Do you sell purple giraffes?": 1, "What about blue elephants?": 1}
    later = await system.http.get(
        "/v1/admin/bot/unanswered",
        params={"since": "2999-01-01T00:00:00Z"},
        headers=system._as(None),
    )
    assert expect(later, 200)["questions"] == []
    for since in ("-105699094", "1767225600", "2026-12-01T09:00:00", "yesterday"):
        refused = await system.http.get(
            "/v1/admin/bot/unanswered", params={"since": since}, headers=system._as(None)
        )
        assert refused.status_code == 422, since


async def test_an_entry_hands_off_to_its_own_group(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    system = await _bot_system(time_env, make_system, tmp_path)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "bot")
    answer = await _ask(system, cid, visitor, "I want to make a complaint 我要投诉")
    assert len(answer) == 1  # the entry's answer, then the hand-off
    handed = await _handed_off(system, cid)
    assert (handed["data"]["reason"], handed["data"]["skill_group"]) == ("entry", "after_sales")
    assert handed["data"]["matched_entries"] == ["complaint"]
    assert (await system.wait_for_state(cid, None, "queued"))["skill_group"] == "after_sales"


async def test_an_unreachable_webhook_bot_hands_off(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    bot = WebhookBot()
    with bot.running():
        url = bot.url
    # The bot's port is closed now: every attempt fails at once.
    system = await _bot_system(
        time_env, make_system, tmp_path, bot="webhook", settings=webhook_settings(url)
    )
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "bot")
    assert await _ask(system, cid, visitor, "Where is my parcel?") == []
    assert (await _handed_off(system, cid))["data"]["reason"] == "bot_unreachable"
    assert (await system.wait_for_state(cid, None, "queued"))["skill_group"] == "general"


async def test_a_webhook_bot_answers_and_hands_off(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    bot = WebhookBot()
    with bot.running():
        system = await _bot_system(
            time_env, make_system, tmp_path, bot="webhook", settings=webhook_settings(bot.url)
        )
        cid, visitor = await system.start_conversation()
        await system.wait_for_state(cid, visitor, "bot")
        answer = await _ask(system, cid, visitor, "Where is my parcel?")
        assert answer[0]["data"]["content"] == "About 'Where is my parcel?': see our help centre."
        assert answer[0]["data"]["quick_replies"] == [HANDOFF_BUTTON]
        assert await _ask(system, cid, visitor, "A person, please") == []
        assert (await _handed_off(system, cid))["data"]["reason"] == "asked_for_person"
        await system.wait_for_state(cid, None, "queued")
    assert bot.refused == 0 and sorted(bot.asked) == bot.asked and len(bot.asked) == 2


@on_sqlite_alone("db")  # the workflow's order of events, whatever stores them
async def test_a_message_written_while_the_bot_answers_the_one_before_is_answered_too(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    # A slow bot: past most of a workflow task's 10 s, the worker reports the task still at
    # work, and the second message's signal reaches the workflow before the first answer does.
    bot = WebhookBot(delay=9)
    with bot.running():
        system = await _bot_system(
            time_env,
            make_system,
            tmp_path,
            bot="webhook",
            settings=webhook_settings(bot.url, timeout="20s"),
        )
        cid, visitor = await system.start_conversation()
        await system.wait_for_state(cid, visitor, "bot")
        first = await system.say(cid, visitor, "Where is my parcel?")
        await eventually(lambda: _asked(bot, first), what="the bot to be asked")
        # Stored and signalled while the bot works on the first: its turn comes next.
        second = await system.say(cid, visitor, "And my invoice?")

        async def both_answered() -> list[str] | None:
            said = [
                e["data"]["content"]
                for e in await system.events(cid, visitor)
                if e["data"].get("sender_role") == "bot"
            ]
            return said if len(said) >= 2 else None

        said = await eventually(both_answered, timeout=60, what="both messages answered")
    assert said == [
        "About 'Where is my parcel?': see our help centre.",
        "About 'And my invoice?': see our help centre.",
    ]
    assert bot.asked == [first, second]


ALWAYS_CLOSED = (
    '[[skill_groups]]\nname = "general"\n[skill_groups.hours]\ntimezone = "UTC"\n'
    "weekly = {}\n"
    '[[skill_groups]]\nname = "after_sales"\n'
)


async def test_out_of_hours_the_bot_answers_and_a_hand_off_offers_the_left_message(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    system = await _bot_system(time_env, make_system, tmp_path, groups=ALWAYS_CLOSED)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "bot")
    assert len(await _ask(system, cid, visitor, "How do I get a refund? 怎么退款")) == 1
    await _ask(system, cid, visitor, "转人工")
    closed = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert (closed["data"]["close_reason"], closed["data"]["left_message"]) == (
        "out_of_hours",
        True,
    )
    handed = next(e for e in await system.events(cid, visitor) if e["type"] == HANDED_OFF)
    assert handed["data"]["text"] is None  # the close says when it opens, with the form


async def test_a_silent_visitor_is_let_go_as_the_last_answer_says(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    system = await _bot_system(
        time_env, make_system, tmp_path, settings='idle_close_after = "5m"\n'
    )
    understood, visitor = await system.start_conversation()
    missed, other = await system.start_conversation()
    for cid, token in ((understood, visitor), (missed, other)):
        await system.wait_for_state(cid, token, "bot")
    assert len(await _ask(system, understood, visitor, "How do I get a refund?")) == 1
    assert len(await _ask(system, missed, other, "Do you sell purple giraffes?")) == 1
    await system.workflow(missed, seen=1)
    await system.env.sleep(4 * 60)
    assert (await system.conversation(understood, visitor))["state"] == "bot"

    await system.env.sleep(90)
    for cid, token, reason in (
        (understood, visitor, "bot_resolved"),
        (missed, other, "idle_timeout"),
    ):
        closed = await system.wait_for_event(cid, token, "conversation.closed")
        assert closed["data"]["close_reason"] == reason
        body = await system.conversation(cid, token)
        assert (body["state"], body["rating"]["status"]) == ("closed", "none")
    resolved = await system.wait_for_event(understood, visitor, "conversation.closed")
    assert resolved["data"]["text"] == "Glad we could help. Write again any time."


async def test_only_the_visitor_or_staff_close_a_bot_conversation(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    system = await _bot_system(time_env, make_system, tmp_path)
    agent = await system.create_agent("bob")
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "bot")
    assert (await system.post_message(cid, agent.token, "Hello from a person")).status_code in (
        403,
        409,
    )
    assert (await system.close(cid, agent.token)).status_code in (403, 409)
    assert (await system.close(cid, visitor)).status_code == 200
    closed = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert closed["data"]["close_reason"] == "visitor_closed"


@pytest.mark.e2e
@pytest.mark.postgres
async def test_a_worker_killed_while_the_bot_answers_neither_loses_nor_repeats_the_answer(
    postgres_db: Database, deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    bot = WebhookBot(delay=3)
    with bot.running():
        directory = tmp_path / "deployment-1"  # where `deploy` puts its first deployment
        routing = faq_routing(
            directory, bot="webhook", settings=webhook_settings(bot.url, timeout="10s")
        )
        deployment = deploy(postgres_db.url, routing=routing)
        try:
            async with deployment.client() as api:
                cid, visitor = await api.start_conversation()
                await api.wait_for_state(cid, visitor, "bot")
                asked = await api.say(cid, visitor, "Where is my parcel?")
                await eventually(lambda: _asked(bot, asked), what="the bot to be asked")
                deployment.kill("worker-0")  # while the bot works on its answer
                deployment.restart_worker()

                answer = await _ask_after(api, cid, visitor, asked)
                assert answer == ["About 'Where is my parcel?': see our help centre."]
                assert bot.asked.count(asked) >= 2, "the kill did not cut an answer short"
                second = await api.say(cid, visitor, "And my invoice?")
                assert len(await _ask_after(api, cid, visitor, second)) == 1
                # Exactly one answer each: the bot's messages, as staff read them.
                said = [
                    e["data"]["content"]
                    for e in await api.events(cid)
                    if e["type"] == "message.created" and e["data"]["sender_role"] == "bot"
                ]
                assert said == [
                    "About 'Where is my parcel?': see our help centre.",
                    "About 'And my invoice?': see our help centre.",
                ]
        finally:
            deployment.stop(faults=True)


async def _asked(bot: WebhookBot, seq: int) -> bool:
    return seq in bot.asked


async def _ask_after(api: ApiClient, cid: str, visitor: str, seq: int) -> list[str]:
    """The bot's answer to the visitor's message `seq`, once there is one."""

    async def answered() -> list[str] | None:
        events = await api.events(cid, visitor, after_seq=seq)
        said = [e["data"]["content"] for e in events if e["data"].get("sender_role") == "bot"]
        return said or None

    return await eventually(answered, timeout=90, what=f"the bot's answer to message {seq}")


async def test_ops_see_the_bots_figures_in_the_monitor_and_the_metrics(
    time_env: WorkflowEnvironment, make_system: StartSystem, tmp_path: Path
) -> None:
    system = await _bot_system(time_env, make_system, tmp_path)
    agent = await system.create_agent("alice", online=False)
    handed, visitor = await system.start_conversation()
    staying, other = await system.start_conversation()
    for cid, token in ((handed, visitor), (staying, other)):
        await system.wait_for_state(cid, token, "bot")
    await _ask(system, handed, visitor, "Where is my parcel?")
    await _ask(system, handed, visitor, "转人工")
    await _ask(system, staying, other, "Do you sell purple giraffes?")
    await _handed_off(system, handed)

    figures = expect(await system.http.get("/v1/monitor", headers=system._as(None)), 200)["bot"]
    assert figures == {
        "conversations": 1,
        "resolved_today": 0,
        "handoffs_today": {"asked_for_person": 1},
        "answers_today": 3,
        "misses_today": 1,
        "entry_hits_today": {"track_order": 1},
    }
    agents = expect(await system.http.get("/v1/monitor", headers=system._as(agent.token)), 200)
    assert agents["bot"] is None  # the bot's figures are the supervisors' and ops'

    address = f"127.0.0.1:{free_port()}"
    stop_metrics = serve_metrics(system.app.state.metrics, address)
    try:
        async with httpx.AsyncClient() as scraper:
            text = (await scraper.get(f"http://{address}/metrics")).text
    finally:
        await asyncio.to_thread(stop_metrics)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("switchboard_bot_")
        for sample in family.samples
    }
    assert samples == {
        ("switchboard_bot_conversations", ()): 1,
        ("switchboard_bot_resolved_today", ()): 0,
        ("switchboard_bot_handoffs_today", (("reason", "asked_for_person"),)): 1,
        ("switchboard_bot_answers_today", ()): 3,
        ("switchboard_bot_misses_today", ()): 1,
        ("switchboard_bot_entry_hits_today", (("entry", "track_order"),)): 1,
    }
