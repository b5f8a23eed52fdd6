"""What a supervisor sees of a conversation: pure functions of the workflow's flow.

The `snapshot` query, the Temporal UI's current details and the custom search attributes all
say where a conversation stands and which durable timer it waits on. Ids, states and times only:
never customer text or personal data (invariant 10).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from domain.types import (
        SA_AGENT,
        SA_CHANNEL,
        SA_CLOSE_REASON,
        SA_CLOSED_AT,
        SA_OVERFLOW_HOPS,
        SA_PRIORITY,
        SA_QUEUED_AT,
        SA_SKILL_GROUP,
        SA_STATE,
        ConversationFlow,
        ConversationSnapshot,
        ConversationState,
        OnClosing,
        RatingStatus,
        Stage,
    )

QUEUE_OVERFLOW = "queue overflow"
GROUP_CLOSING = "group closing"
FIRST_REPLY = "agent first reply"
IDLE_WARNING = "idle warning"
IDLE_CLOSE = "idle auto-close"
RATING_EXPIRY = "rating expiry"
BOT_CLOSE = "bot idle close"


def bot_close_at(flow: ConversationFlow) -> datetime | None:
    """When the bot closes the conversation if the visitor writes no more."""
    if flow.bot_idle_close_s is None or flow.last_activity_at is None:
        return None
    return flow.last_activity_at + timedelta(seconds=flow.bot_idle_close_s)


def pending_timers(flow: ConversationFlow) -> dict[str, datetime]:
    """The durable timers the conversation waits on now, by what they do, with when."""
    countdown = flow.countdown
    timers: dict[str, datetime | None] = {}
    match flow.stage:
        case Stage.BOT:
            timers[BOT_CLOSE] = bot_close_at(flow)
        case Stage.QUEUED | Stage.ASSIGNED:
            if flow.max_queue_wait_s and flow.in_group_since:
                wait = timedelta(seconds=flow.max_queue_wait_s)
                timers[QUEUE_OVERFLOW] = flow.in_group_since + wait
            if flow.on_closing == OnClosing.CLOSE:
                timers[GROUP_CLOSING] = flow.group_closes_at
        case Stage.AWAITING_FIRST_REPLY:
            timers[FIRST_REPLY] = flow.first_reply_due_at
        case Stage.COUNTING_DOWN if countdown.armed_at and countdown.warning_after_s is not None:
            # Due from the newest agent message (the timer re-arms for it when it fires).
            timers[IDLE_WARNING] = countdown.armed_at + timedelta(seconds=countdown.warning_after_s)
        case Stage.COUNTING_DOWN:
            timers[IDLE_WARNING] = countdown.warning_at
        case Stage.WARNED:
            timers[IDLE_CLOSE] = countdown.close_at
    if flow.rating_status == RatingStatus.PENDING:
        timers[RATING_EXPIRY] = flow.rating_expires_at
    return {name: at for name, at in timers.items() if at is not None}


def snapshot(flow: ConversationFlow) -> ConversationSnapshot:
    timers = pending_timers(flow)
    return ConversationSnapshot(
        conversation_id=flow.conversation_id,
        state=flow.state,
        channel=flow.channel,
        skill_group=flow.skill_group,
        priority=flow.priority,
        routing_rule=flow.routing_rule,
        policy_version=flow.policy_version,
        overflow_hops=flow.overflow_hops,
        agent_id=flow.agent_id,
        close_reason=flow.close_reason,
        rating_status=flow.rating_status,
        queued_at=flow.queued_at,
        last_message_seq=flow.last_message_seq,
        last_activity_at=flow.last_activity_at,
        closed_at=flow.closed_at,
        overflow_at=timers.get(QUEUE_OVERFLOW),
        first_reply_due_at=timers.get(FIRST_REPLY),
        idle_warning_at=timers.get(IDLE_WARNING),
        idle_close_at=timers.get(IDLE_CLOSE),
        rating_expires_at=timers.get(RATING_EXPIRY),
        closing_at=timers.get(GROUP_CLOSING),
        bot_close_at=timers.get(BOT_CLOSE),
    )


def details(flow: ConversationFlow) -> str:
    """The Temporal UI's current details: where the conversation stands, in markdown."""
    lines = [f"**{flow.state}** · {flow.channel} · {flow.skill_group or 'routing'}"]
    lines.append(f"- stage: {flow.stage.replace('_', ' ')}")
    if flow.agent_id:
        lines.append(f"- agent: **{flow.agent_id}**")
    if flow.stage.state == ConversationState.QUEUED and flow.queued_at:
        lines.append(f"- waiting since {_clock(flow.queued_at)}")
    if flow.last_activity_at:
        lines.append(f"- last message: {_clock(flow.last_activity_at)} ({flow.last_message_role})")
    if flow.bot:
        handoff = f" · handed off: {flow.handoff_reason}" if flow.handoff_reason else ""
        lines.append(f"- bot: {flow.bot}{handoff}")
    if flow.closed_at:
        lines.append(f"- closed {_clock(flow.closed_at)}: {flow.close_reason}")
    rule = "default group" if flow.routing_rule is None else f"rule {flow.routing_rule}"
    hops = flow.overflow_hops
    lines.append(f"- routing: {rule} · priority {flow.priority} · overflow hops {hops}")
    lines += [f"- timer: {name} at {_clock(at)}" for name, at in pending_timers(flow).items()]
    if flow.policy_version:
        lines.append(f"- policy {flow.policy_version}")
    return "\n".join(lines)


def search_attributes(flow: ConversationFlow) -> list[SearchAttributeUpdate]:
    """The custom search attributes' values now (those with none are unset)."""
    optional = (
        (SA_SKILL_GROUP, flow.skill_group),
        (SA_AGENT, flow.agent_id),
        (SA_CLOSE_REASON, flow.close_reason),
    )
    updates: list[SearchAttributeUpdate] = [
        SA_STATE.value_set(flow.state),
        SA_CHANNEL.value_set(flow.channel),
        SA_PRIORITY.value_set(flow.priority),
        *(key.value_set(value) if value else key.value_unset() for key, value in optional),
    ]
    if flow.queued_at:
        updates.append(SA_QUEUED_AT.value_set(flow.queued_at))
    if flow.overflow_hops:
        updates.append(SA_OVERFLOW_HOPS.value_set(flow.overflow_hops))
    if flow.closed_at:
        updates.append(SA_CLOSED_AT.value_set(flow.closed_at))
    return updates


def _clock(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"
