"""B1c: chat-shaped ingest. Both sides of 200 active conversations write in alternating bursts
of 1-4 messages with pauses, as people chat: messages/s against the same traffic as raw signals
to minimal workflows, and the Temporal actions each message cost (from the histories), per
kind: the signal, timers started, activities and local activities, upserts."""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from temporalio.api.enums.v1 import EventType as HistoryEvent
from temporalio.client import Client, WorkflowHandle

from bench.api import (
    client,
    create_agents,
    gather_limited,
    post_message,
    poster,
    start_conversations,
    wait_all_assigned,
)
from bench.report import Figure, ScenarioResult, ms, percentile
from tests.support.api import AgentLogin
from workflows.gateway import workflow_id

if TYPE_CHECKING:
    from bench.scenarios import Config

# What Temporal bills as an action, by the history event that records it.
ACTIONS = {
    HistoryEvent.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
    HistoryEvent.EVENT_TYPE_TIMER_STARTED: "timers started",
    HistoryEvent.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activities",
    HistoryEvent.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "upserts",
    HistoryEvent.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED: "memo updates",
}
KINDS = ("signals", "timers started", "activities", "local activities", "upserts")
TARGET = 1.2


async def _history_kinds(handle: WorkflowHandle[Any, Any], after: int) -> tuple[Counter[str], int]:
    """The actions in a workflow's history past its first `after` events, and its length."""
    history = await handle.fetch_history()
    kinds: Counter[str] = Counter()
    for event in history.events[after:]:
        if event.event_type == HistoryEvent.EVENT_TYPE_MARKER_RECORDED:
            name = event.marker_recorded_event_attributes.marker_name
            kinds["local activities" if name == "core_local_activity" else "other markers"] += 1
        elif event.event_type in ACTIONS:
            kinds[ACTIONS[event.event_type]] += 1
    return kinds, len(history.events)


async def _lengths(handles: list[WorkflowHandle[Any, Any]]) -> list[int]:
    return [
        length
        for _kinds, length in await gather_limited(
            [lambda h=h: _history_kinds(h, 0) for h in handles], 16
        )
    ]


async def _kinds_since(handles: list[WorkflowHandle[Any, Any]], marks: list[int]) -> Counter[str]:
    total: Counter[str] = Counter()
    counted = await gather_limited(
        [lambda h=h, m=m: _history_kinds(h, m) for h, m in zip(handles, marks, strict=True)], 16
    )
    for kinds, _length in counted:
        total.update(kinds)
    return total


async def _chat(
    send: Callable[[str, int], Awaitable[bool]], *, seed: int, until: float
) -> tuple[int, int, list[float]]:
    """One conversation's chat until `until`: the visitor first, then the sides in turn, each a
    burst of 1-4 messages a moment apart, then a pause. (sent, failed, latencies)."""
    shape = random.Random(seed)
    sent = failed = 0
    latencies: list[float] = []
    side = "visitor"
    await asyncio.sleep(shape.uniform(0, 1))  # not all at once
    while time.monotonic() < until:
        for _ in range(shape.randint(1, 4)):
            began = time.monotonic()
            if await send(side, sent + failed):
                sent += 1
                latencies.append(time.monotonic() - began)
            else:
                failed += 1
            await asyncio.sleep(shape.uniform(0.02, 0.1))  # typing the next line
        await asyncio.sleep(shape.uniform(0.2, 1.0))  # the other side reads, then answers
        side = "agent" if side == "visitor" else "visitor"
    return sent, failed, latencies


async def _all_chat(
    senders: list[Callable[[str, int], Awaitable[bool]]], duration: float
) -> tuple[int, int, list[float], float]:
    began = time.monotonic()
    until = began + duration
    results = await asyncio.gather(
        *(_chat(send, seed=index, until=until) for index, send in enumerate(senders))
    )
    elapsed = time.monotonic() - began
    latencies = [latency for _sent, _failed, some in results for latency in some]
    return sum(r[0] for r in results), sum(r[1] for r in results), latencies, elapsed


async def b1c_chat(config: Config) -> ScenarioResult:
    from bench.scenarios import quiet, start_inboxes  # (scenarios lists this one)

    result = ScenarioResult("B1c", "chat-shaped ingest: both sides in bursts, actions per message")
    conversations = config.n(200, minimum=20)
    duration = config.seconds(30, quick=8)
    result.parameters = {
        "conversations": conversations,
        "seconds": duration,
        "shape": "alternating bursts of 1-4 messages per side, 20-100 ms apart, 0.2-1 s pauses",
    }
    async with (
        config.stack("b1c") as stack,
        client(stack.api_url, 16) as api,
        poster(stack.api_url, 64) as messages,
    ):
        agents = await create_agents(
            api, math.ceil(conversations / 50), prefix="b1c", max_concurrent=50
        )
        visits = await start_conversations(api, conversations, prefix="b1c")
        await wait_all_assigned(api, agents, conversations)
        inboxes = await start_inboxes(stack.client, conversations, prefix="b1c-ref")
        await quiet(stack, names=("worker", "dev server", "reference worker"))
        owner: dict[str, AgentLogin] = {}
        for agent in agents:
            for conversation in await api.agent_conversations(agent.id, agent.token, limit=500):
                owner[conversation["id"]] = agent

        temporal: Client = stack.client
        inbox_marks = await _lengths(inboxes)

        def raw(handle: WorkflowHandle[Any, Any]) -> Callable[[str, int], Awaitable[bool]]:
            async def send(_side: str, _n: int) -> bool:
                await handle.signal("message", time.time())
                return True

            return send

        mark = stack.cpu()
        ref_sent, _ref_failed, ref_latencies, ref_elapsed = await _all_chat(
            [raw(handle) for handle in inboxes], duration
        )
        result.details["reference_cpu"] = stack.cpu_between(mark, stack.cpu(), per=ref_sent)
        await quiet(stack, names=("dev server", "reference worker"))
        reference_kinds = await _kinds_since(inboxes, inbox_marks)

        handles = [temporal.get_workflow_handle(workflow_id(v.conversation_id)) for v in visits]
        marks = await _lengths(handles)

        def product(index: int) -> Callable[[str, int], Awaitable[bool]]:
            visit = visits[index]

            async def send(side: str, n: int) -> bool:
                token = owner[visit.conversation_id].token if side == "agent" else visit.token
                status = await post_message(
                    messages, visit.conversation_id, token, f"{side} line {n}", uuid.uuid4().hex
                )
                return status == 201

            return send

        mark = stack.cpu()
        sent, failed, latencies, elapsed = await _all_chat(
            [product(i) for i in range(len(visits))], duration
        )
        result.details["product_cpu"] = stack.cpu_between(mark, stack.cpu(), per=sent)
        result.details["product_drain_s"] = await quiet(stack, names=("dev server", "worker"))
        kinds = await _kinds_since(handles, marks)

    rate, reference_rate = sent / elapsed, ref_sent / ref_elapsed
    result.add(
        Figure(
            "messages/s",
            round(rate, 1),
            "/s",
            reference=round(reference_rate, 1),
            note="reference: the same chats as raw signals to minimal workflows",
        )
    )
    result.add(
        Figure(
            "POST p50",
            ms(percentile(latencies, 50)),
            "ms",
            reference=ms(percentile(ref_latencies, 50)),
        )
    )
    actions = sum(kinds[kind] for kind in KINDS)
    per_message = round(actions / sent, 3) if sent else None
    reference_actions = sum(reference_kinds[kind] for kind in KINDS)
    result.add(
        Figure(
            "Temporal actions per message",
            per_message,
            reference=round(reference_actions / ref_sent, 3) if ref_sent else None,
            target=f"≤ {TARGET}",
            passed=per_message is not None and per_message <= TARGET,
            note="signals, timers started, activities, local activities, upserts",
        )
    )
    for kind in KINDS:
        result.add(
            Figure(
                f"  {kind} per message",
                round(kinds[kind] / sent, 3) if sent else None,
                reference=round(reference_kinds[kind] / ref_sent, 3) if ref_sent else None,
            )
        )
    result.add(Figure("failed requests", failed, reference=0))
    result.details["actions"] = dict(kinds)
    result.details["reference_actions"] = dict(reference_kinds)
    result.details["messages"] = {"product": sent, "reference": ref_sent}
    return result
