"""What the conversation workflow keeps for conversations that started under older code.

A conversation runs for hours (its rating window follows the close) and continue-as-new carries
it on, so a deployment meets conversations that older code began. A change that would give one
of them other commands than its history holds goes behind `workflow.patched(ID)`: the new code
runs where the patch's marker is in history (or the code runs for the first time), the old code
where a history from before lacks it. Some older shapes need no patch: an activity result an
older worker answered, a flow an older version wrote, are read as they come. Every one of them
is listed here, with when it came and when it can go; the workflow uses the ids from here.

Retiring a patch takes two deployments:
1. Once no conversation started before the patch's deployment is open (the Temporal UI lists
   them: `ExecutionStatus = "Running" AND StartTime < "<deployed at>"`), call
   `workflow.deprecate_patch(ID)` where `workflow.patched(ID)` was, delete the old branch and the
   recorded histories that take it (tests/histories/), and move its entry to `DEPRECATED`.
2. Once no conversation started before that second deployment is open, remove the
   `deprecate_patch` call and the entry.
A branch without a patch goes in one step, once its condition holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.types import ConversationFlow, ConversationState, Stage


@dataclass(frozen=True)
class Compatibility:
    """One thing kept for older conversations or workers."""

    name: str  # the patch id, or what the branch without a patch reads
    added: str  # the date, and the commit that brought it
    older: str  # what older code left that this handles
    retire_when: str  # the condition under which it can go


FIRST_REPLY_AFTER_TRANSFER = "first-reply-after-transfer"
LOCAL_ACTIVITIES = "local-activities"
AGENT_WROTE_BEFORE_ACTIVE = "agent-wrote-before-active"
REQUESTS_FIRST = "requests-first"
CLOSE_AT_CLOSING = "close-at-closing"
MESSAGE_DECISIONS = "message-decisions"
IDLE_TIMER_RUNS_ON = "idle-timer-runs-on"

_STARTED_BEFORE = "no conversation started before {} was deployed is open"

PATCHES = (
    Compatibility(
        FIRST_REPLY_AFTER_TRANSFER,
        added="2026-11-25 (ee16c56)",
        older="the agent a conversation was transferred to had no first reply due",
        retire_when=_STARTED_BEFORE.format("ee16c56"),
    ),
    Compatibility(
        LOCAL_ACTIVITIES,
        added="2026-11-25 (9c884d5)",
        older=(
            "every activity ran as a regular activity; the idle warning read the policy again; "
            "the rating invite was an activity of its own after the close"
        ),
        retire_when=_STARTED_BEFORE.format("9c884d5") + " (then delete tests/histories/*.v1.json)",
    ),
    Compatibility(
        AGENT_WROTE_BEFORE_ACTIVE,
        added="2026-11-25 (c1de609)",
        older=(
            "an agent's message that came in one task with the assignment's signal was ignored: "
            "no idle countdown ran"
        ),
        retire_when=_STARTED_BEFORE.format("c1de609")
        + " (then delete tests/histories/agent_wrote_with_its_assignment.v2.json)",
    ),
    Compatibility(
        REQUESTS_FIRST,
        added="2026-11-30 (nothing stuck)",
        older=(
            "continue-as-new waited for every update handler while a transfer or close waited "
            "for the run loop (the conversation froze); a transfer that found the conversation "
            "requeued or closed was never answered"
        ),
        retire_when=_STARTED_BEFORE.format("requests-first")
        + " (a conversation frozen before it stays frozen: reset or terminate it)",
    ),
    Compatibility(
        CLOSE_AT_CLOSING,
        added="2026-11-30 (nothing stuck: on_closing)",
        older=(
            "a conversation queued in a group whose hours ended waited on (no timer for the "
            "closing): it still does, whatever its group's on_closing"
        ),
        retire_when=_STARTED_BEFORE.format("the on_closing policy"),
    ),
    Compatibility(
        MESSAGE_DECISIONS,
        added="2026-12-02 (a signal per message, and nothing else per message)",
        older=(
            "every further agent message restarted the idle countdown (the policy read again, "
            "its timer cancelled and started afresh) and every visitor message before the first "
            "reply restarted the first-reply timer for the same deadline"
        ),
        retire_when=_STARTED_BEFORE.format("message-decisions")
        + " (then delete tests/histories/both_sides_chatting.v5.json)",
    ),
    Compatibility(
        IDLE_TIMER_RUNS_ON,
        added="2026-12-02 (a timer per idle countdown, not per turn)",
        older=(
            "the visitor's answer cancelled the idle countdown's timer and the agent's next "
            "message started another, after a local activity read the policy"
        ),
        retire_when=_STARTED_BEFORE.format("idle-timer-runs-on")
        + " (then delete tests/histories/both_sides_chatting.v6.json)",
    ),
)
PATCH_IDS = frozenset(patch.name for patch in PATCHES)
# Patches whose `workflow.deprecate_patch` call is still in the code (step 2 above).
DEPRECATED: tuple[Compatibility, ...] = ()

_OLDER_WORKER = (
    "no worker older than {} runs and no conversation started before it was deployed is open"
)

BRANCHES = (
    Compatibility(
        "send_idle_warning's result: None",
        added="2026-11-25 (91a4c46)",
        older="the activity answered nothing; the close was due when the workflow planned it",
        retire_when=_OLDER_WORKER.format("91a4c46") + " (then ask for `str`)",
    ),
    Compatibility(
        "IdleCountdown.close_after_s: None",
        added="2026-11-25 (9c884d5)",
        older="a countdown began by older code carries no idle_close_after: read the policy",
        retire_when=f"with {LOCAL_ACTIVITIES}",
    ),
    Compatibility(
        "close_conversation's result: None though a rating invite was asked for",
        added="2026-11-25 (9c884d5)",
        older="the activity did not know invite_rating: the rating phase invites on its own",
        retire_when=_OLDER_WORKER.format("9c884d5"),
    ),
    Compatibility(
        "TransferResult.handover_seq: 0 from a transfer to an agent",
        added="2026-11-25 (9c884d5)",
        older="the activity did not say the handover's seq: the new agent starts afresh",
        retire_when=_OLDER_WORKER.format("9c884d5"),
    ),
    Compatibility(
        "ConversationFlow without a stage (routed, assignment_recorded, agent_replied, warned)",
        added="2026-11-30 (the lifecycle's stages)",
        older=(
            "the flow said where the conversation stood by four flags: an input from an older "
            "API or a continue-as-new by an older worker is read by `read_older_flags`, and "
            "`write_older_flags` writes them for an older worker to read"
        ),
        retire_when=(
            "no worker or API process older than the stages runs and no conversation started "
            "or continued as new before they were deployed is open (then drop the four fields "
            "and tests/histories/continued_as_new.v3.json)"
        ),
    ),
    Compatibility(
        "ConversationFlow.customer_id, RatingSubmission.comment, TransferRequest.note",
        added="2026-12-01 (customer data out of the histories)",
        older=(
            "the flow carried the customer's id, the rating update its comment and the transfer "
            "update its note: the flow's customer_id is written empty (older workers require "
            "it) and whatever an older flow holds there is not used; a comment or note that "
            "comes (from an older API) is still stored by the activities"
        ),
        retire_when=(
            "no worker or API process older than this runs and no conversation started before "
            "it was deployed is open (then drop the three fields; the customer ids in older "
            "histories go with the namespace's retention)"
        ),
    ),
)


def read_older_flags(flow: ConversationFlow) -> None:
    """Give a flow that older code wrote its stage, from its flags. Such a flow carries none
    (it reads as ROUTING) but says it was routed; today's code writes `routed` only with a
    stage past ROUTING."""
    if flow.stage != Stage.ROUTING or not flow.routed:
        return
    if flow.state == ConversationState.CLOSED:
        flow.stage = Stage.CLOSED
    elif flow.state == ConversationState.ACTIVE and flow.assignment_recorded:
        if flow.countdown.warned:
            flow.stage = Stage.WARNED
        elif flow.countdown.agent_message_seq:
            flow.stage = Stage.COUNTING_DOWN
        elif flow.agent_replied:
            flow.stage = Stage.VISITOR_WROTE_LAST
        else:
            flow.stage = Stage.AWAITING_FIRST_REPLY
    elif flow.state == ConversationState.ACTIVE or flow.agent_id is not None:
        flow.stage = Stage.ASSIGNED
    else:
        flow.stage = Stage.QUEUED


def write_older_flags(flow: ConversationFlow) -> None:
    """The flags older code reads, from the stage: a worker of the version before the stages
    may run the next run during a rolling deployment."""
    flow.routed = flow.stage != Stage.ROUTING
    flow.assignment_recorded = flow.stage.state == ConversationState.ACTIVE
    flow.agent_replied = (
        flow.stage in (Stage.VISITOR_WROTE_LAST, Stage.COUNTING_DOWN, Stage.WARNED)
        or flow.countdown.agent_message_seq > 0
    )
    flow.countdown.warned = flow.stage == Stage.WARNED
