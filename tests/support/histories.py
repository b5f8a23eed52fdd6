"""A conversation's workflow as the server recorded it: every run of its continue-as-new chain,
replayed against today's code; the updates each run accepted and finished; where the server
first suggested continue-as-new; what a workflow that stands still looks like; and what a
history holds besides its search attributes (payloads, text)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, SuggestContinueAsNewReason
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer

from tests.support.api import eventually
from workflows import ConversationWorkflow
from workflows.gateway import workflow_id

_TASK_STARTED = EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
_UPDATE_ACCEPTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
_UPDATE_COMPLETED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED


async def runs(client: Client, conversation_id: str) -> list[WorkflowHistory]:
    """Every run of the conversation's workflow, first to last: the chain walked back from the
    newest run, and any run the server lists that the chain does not name."""
    wid = workflow_id(conversation_id)
    newest = await client.get_workflow_handle(wid).fetch_history()
    chain = [newest]
    while previous := (
        chain[-1].events[0].workflow_execution_started_event_attributes.continued_execution_run_id
    ):
        chain.append(await client.get_workflow_handle(wid, run_id=previous).fetch_history())
    chain.reverse()
    known = {_run_id(history) for history in chain}
    async for listed in client.list_workflows(f'WorkflowId = "{wid}"'):
        if listed.run_id not in known:
            handle = client.get_workflow_handle(wid, run_id=listed.run_id)
            chain.insert(0, await handle.fetch_history())
    return chain


def _run_id(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.original_execution_run_id


async def replay(histories: list[WorkflowHistory]) -> None:
    """Replay each history with today's workflow code; a nondeterminism (or any other failure
    of a replayed task) raises, naming the run."""
    replayer = Replayer(workflows=[ConversationWorkflow])
    for history in histories:
        try:
            await replayer.replay_workflow(history)
        except Exception as exc:
            raise AssertionError(
                f"{history.workflow_id} run {_run_id(history)} does not replay: {exc!r}"
            ) from exc


@dataclass(frozen=True)
class AcceptedUpdate:
    """An update a run accepted: its name and id, whether the task that took it in was one
    where the server suggested continue-as-new, and whether the run finished it."""

    name: str
    update_id: str
    in_suggesting_task: bool
    finished: bool


def accepted_updates(history: WorkflowHistory) -> list[AcceptedUpdate]:
    finished = {
        event.workflow_execution_update_completed_event_attributes.meta.update_id
        for event in history.events
        if event.event_type == _UPDATE_COMPLETED
    }
    accepted: list[AcceptedUpdate] = []
    suggested = False  # by the latest task started before the event at hand
    for event in history.events:
        if event.event_type == _TASK_STARTED:
            suggested = event.workflow_task_started_event_attributes.suggest_continue_as_new
        elif event.event_type == _UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            accepted.append(
                AcceptedUpdate(
                    name=request.input.name,
                    update_id=request.meta.update_id,
                    in_suggesting_task=suggested,
                    finished=request.meta.update_id in finished,
                )
            )
    return accepted


def unfinished_updates(history: WorkflowHistory) -> list[AcceptedUpdate]:
    """The updates the run accepted and never finished: their callers wait for nothing."""
    return [update for update in accepted_updates(history) if not update.finished]


def suggesting_tasks(history: WorkflowHistory) -> list[int]:
    """The event ids of the workflow tasks in which the server suggested continue-as-new."""
    return [
        event.event_id
        for event in history.events
        if event.event_type == _TASK_STARTED
        and event.workflow_task_started_event_attributes.suggest_continue_as_new
    ]


def continue_as_new_reasons(history: WorkflowHistory) -> set[str]:
    """Why the server suggested continue-as-new in the run (`history_size_too_large`,
    `too_many_history_events`, …): nothing if it never did."""
    return {
        SuggestContinueAsNewReason.Name(reason)
        .removeprefix("SUGGEST_CONTINUE_AS_NEW_REASON_")
        .lower()
        for event in history.events
        if event.event_type == _TASK_STARTED
        for reason in event.workflow_task_started_event_attributes.suggest_continue_as_new_reasons
    }


async def settled(handle: WorkflowHandle[Any, Any]) -> tuple[str, int]:
    """The newest run's id and history length, once no workflow task is pending (so the next
    task is scheduled after the events counted)."""

    async def idle() -> tuple[str, int] | None:
        description = await handle.describe()
        if description.raw_description.HasField("pending_workflow_task"):
            return None
        return description.run_id, description.history_length

    return await eventually(idle, what=f"{handle.id} to finish its workflow task", timeout=60)


async def standing_still(handle: WorkflowHandle[Any, Any]) -> str:
    """What a workflow that does not move looks like, for an assertion's message: its status
    and the last events of its newest run."""
    description = await handle.describe()
    history = await handle.fetch_history()
    tail = [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events]
    status = description.status.name if description.status else "?"
    open_updates = [update.name for update in unfinished_updates(history)]
    return (
        f"{handle.id} is {status} (run {description.run_id}), updates accepted and unfinished: "
        f"{open_updates}, its last events: {tail[-8:]}"
    )


async def completed(handle: WorkflowHandle[Any, Any], *, timeout: float) -> Any:
    """The workflow's result, once its newest run has completed (AssertionError after
    `timeout` seconds, with what it stands on)."""

    async def done() -> bool:
        return (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

    try:
        await eventually(done, what=f"{handle.id} to complete", timeout=timeout, every=0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {await standing_still(handle)}") from None
    return await handle.result()


# The SDK's own bookkeeping in its markers (which local activity ran and when, which patch):
# JSON that its core writes and no codec encodes. It names activity types, never our data.
_SDK_MARKER_DATA = frozenset({"data", "patch-data"})


def _bookkeeping(message: Message, key: str) -> bool:
    return message.DESCRIPTOR.name == "MarkerRecordedEventAttributes" and key in _SDK_MARKER_DATA


def _parts(message: Message) -> Iterator[Message]:
    """`message` and every message within it, but its search attributes' (Temporal indexes
    those in plain text: no codec encodes them) and the SDK's marker bookkeeping."""
    yield message
    for field, value in message.ListFields():
        if field.name == "search_attributes" or field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
            children = [child for key, child in value.items() if not _bookkeeping(message, key)]
        else:
            children = list(value) if field.is_repeated else [value]
        for child in children:
            yield from _parts(child)


def payloads(history: WorkflowHistory) -> list[Payload]:
    """Every payload of the history's events (inputs, signals, updates, results, memos,
    summaries, failures' encoded attributes), but its search attributes'."""
    return [part for event in history.events for part in _parts(event) if isinstance(part, Payload)]


def plain_text(history: WorkflowHistory) -> list[str]:
    """Every text field of the history's events outside payloads and search attributes (ids,
    names, failure messages): what anyone who reads the history reads as it is."""
    texts: list[str] = []
    for event in history.events:
        for part in _parts(event):
            if isinstance(part, Payload):
                continue
            for field, value in part.ListFields():
                if field.type == field.TYPE_STRING:
                    texts.extend(value if field.is_repeated else [value])
    return texts


def sdk_bookkeeping(history: WorkflowHistory) -> list[Payload]:
    """The SDK's marker bookkeeping (see _SDK_MARKER_DATA): plain JSON, whatever the codec."""
    return [
        payload
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
        for key, entry in event.marker_recorded_event_attributes.details.items()
        if key in _SDK_MARKER_DATA
        for payload in entry.payloads
    ]
