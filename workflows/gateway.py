"""The one way into conversation workflows from outside (the API, the dispatcher, the launcher,
tests): the workflow id, its start, typed signals, updates and queries, the search attributes a
namespace must know, and the engine's answers as the domain's errors (`domain/errors.py`).

Never imported by the workflow itself: the worker's sandbox has no use for the client.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.errors import ConversationEnded, EngineUnavailable, UpdateRejected
from domain.policy import Policy
from domain.types import (
    SA_CHANNEL,
    SA_STATE,
    SEARCH_ATTRIBUTES,
    AgentAssigned,
    CloseRequest,
    ConversationFlow,
    ConversationSnapshot,
    ConversationState,
    MessagePosted,
    RatingSubmission,
    Role,
    TicketChanged,
    TicketFlow,
    TransferRequest,
)
from settings import Settings
from store.models import Conversation
from temporal_client import connect
from workflows.conversation import ConversationWorkflow
from workflows.ticket import TicketWorkflow

# A signal is one write on the server; an update waits for a worker to validate and carry it out.
_SIGNAL_TIMEOUT = timedelta(seconds=5)
_UPDATE_TIMEOUT = timedelta(seconds=30)
# The longest a client waits for an update with an id (then 503: its retry joins the update).
_UPDATE_WAIT = timedelta(seconds=30)

A = TypeVar("A")
R = TypeVar("R")


def workflow_id(conversation_id: str) -> str:
    return f"conversation-{conversation_id}"


class ConversationGateway:
    """Calls into conversation workflows. Made with a connected client (the worker, tests) or
    with the settings to connect at first use (the API starts, and says so, while Temporal is
    down). Every call raises `EngineUnavailable` when the engine cannot take it,
    `ConversationEnded` when the workflow has finished, `UpdateRejected` when it refused.
    With `policy`, an agent's message carries the idle durations an idle countdown needs."""

    def __init__(
        self,
        client: Client | None = None,
        *,
        settings: Settings | None = None,
        policy: Callable[[], Policy] | None = None,
    ) -> None:
        if client is None and settings is None:
            raise ValueError("a connected client, or the settings to connect with")
        self._client = client
        self._settings = settings
        self._policy = policy
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                assert self._settings is not None
                try:
                    self._client = await connect(self._settings)
                except Exception as exc:
                    raise EngineUnavailable() from exc
            return self._client

    async def handle(self, conversation_id: str) -> WorkflowHandle[ConversationWorkflow, str]:
        client = await self.client()
        return client.get_workflow_handle_for(
            ConversationWorkflow.run, workflow_id(conversation_id)
        )

    async def start(self, conversation: Conversation, *, policy: Policy, task_queue: str) -> bool:
        """Start the conversation's workflow, or find it running: a retry after a failed start,
        a customer's open conversation asked for again, or the reconciler's repair of a start
        that failed after the row was written, starts it once. True if this call started it."""
        client = await self.client()
        flow = ConversationFlow(
            conversation_id=conversation.id,
            channel=conversation.channel,
            tier=conversation.tier,
        )
        # For the Temporal UI's list: the group the policy sends it to (the workflow routes it).
        skill_group = policy.route(conversation.visitor_context()).skill_group
        try:
            await client.start_workflow(
                ConversationWorkflow.run,
                flow,
                id=workflow_id(flow.conversation_id),
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(SA_STATE, ConversationState.QUEUED.value),
                        SearchAttributePair(SA_CHANNEL, flow.channel),
                    ]
                ),
                static_summary=" · ".join([flow.channel, skill_group, flow.tier or "standard"]),
            )
        except WorkflowAlreadyStartedError:
            return False
        except RPCError as exc:
            raise EngineUnavailable() from exc
        return True

    # --- signals: they return once the Temporal server has accepted them --------------------

    async def post_message(self, conversation_id: str, message: MessagePosted) -> None:
        if message.sender_role == Role.AGENT and self._policy is not None:
            # The policy file as this process read it: as fresh as the worker's (each process
            # re-reads it when it changes), and the countdown it starts reads nothing more.
            timeouts = self._policy().timeouts
            message = replace(
                message,
                idle_warning_after_s=timeouts.idle_warning_after.total_seconds(),
                idle_close_after_s=timeouts.idle_close_after.total_seconds(),
            )
        await self._signal(conversation_id, ConversationWorkflow.message_posted, message)

    async def assign_agent(self, conversation_id: str, agent_id: str) -> None:
        await self._signal(
            conversation_id, ConversationWorkflow.agent_assigned, AgentAssigned(agent_id=agent_id)
        )

    # --- updates: the workflow's validator says yes or no -----------------------------------

    async def close(self, conversation_id: str, request: CloseRequest) -> str:
        """The close reason, once the closing message (and any rating invite) is out. A caller's
        close is one update however often it is sent: a retry (its first answer lost, say to a
        503) joins it, or has its outcome at once, and is never validated again."""
        return await self._update(
            conversation_id,
            ConversationWorkflow.close,
            request,
            update_id=f"close:{_opaque(request.by_role, request.by_id)}",
        )

    async def transfer(
        self, conversation_id: str, request: TransferRequest, *, assignment: str
    ) -> str:
        """The agent or skill group the conversation went to. `assignment` names the assignment
        it is transferred out of (its time): the same caller's same transfer out of it is one
        update, however often sent."""
        target = request.to_agent_id or f"group:{request.to_skill_group}"
        return await self._update(
            conversation_id,
            ConversationWorkflow.transfer,
            request,
            update_id=f"transfer:{_opaque(request.by_role, request.by_id, target, assignment)}",
        )

    async def submit_rating(self, conversation_id: str, rating: RatingSubmission) -> str:
        """A conversation is rated once: every rating sent is that one update (a second,
        different one gets the first's answer; the caller compares what was stored)."""
        return await self._update(
            conversation_id, ConversationWorkflow.submit_rating, rating, update_id="rating"
        )

    # --- queries ----------------------------------------------------------------------------

    async def snapshot(self, conversation_id: str) -> ConversationSnapshot:
        handle = await self.handle(conversation_id)
        try:
            return await handle.query(ConversationWorkflow.snapshot)
        except RPCError as exc:
            raise EngineUnavailable() from exc

    async def _signal(
        self, conversation_id: str, signal: Callable[[ConversationWorkflow, A], None], arg: A
    ) -> None:
        handle = await self.handle(conversation_id)
        try:
            await handle.signal(signal, arg, rpc_timeout=_SIGNAL_TIMEOUT)
        except RPCError as exc:
            raise _refusal(conversation_id, exc) from exc

    async def _update(
        self,
        conversation_id: str,
        update: Callable[[ConversationWorkflow, A], Awaitable[R]],
        arg: A,
        *,
        update_id: str,
    ) -> R:
        """Requests with the same `update_id` are one update (within the workflow's run): a
        retry joins it, or has its outcome at once. The caller waits at most _UPDATE_WAIT
        however long the workflow still takes (then EngineUnavailable: each call is bounded by
        `rpc_timeout`, and the wait for an outcome is a call repeated)."""
        handle = await self.handle(conversation_id)
        try:
            async with asyncio.timeout(_UPDATE_WAIT.total_seconds()):
                return await handle.execute_update(
                    update, arg, id=update_id, rpc_timeout=_UPDATE_TIMEOUT
                )
        except TimeoutError as exc:
            raise EngineUnavailable("the conversation engine did not answer in time") from exc
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            kind = cause.type if isinstance(cause, ApplicationError) else None
            raise UpdateRejected.from_failure(kind, getattr(cause, "message", str(cause))) from exc
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            raise EngineUnavailable("the conversation engine did not answer in time") from exc
        except RPCError as exc:
            raise _refusal(conversation_id, exc) from exc


def _opaque(*parts: str) -> str:
    """An update id's caller and target: a history holds update ids in plain text (no codec
    encodes them), so agent ids and group names go in as a hash, the same for the same ones."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _refusal(conversation_id: str, exc: RPCError) -> Exception:
    """A finished workflow is not found; anything else, the server could not take."""
    if exc.status == RPCStatusCode.NOT_FOUND:
        return ConversationEnded(conversation_id)
    return EngineUnavailable()


async def register_search_attributes(client: Client, *, only_missing: bool = True) -> list[str]:
    """Add those of our search attributes the namespace lacks (a dev server started with an
    older state file ignores new --search-attribute flags). Returns the names added.
    `only_missing=False` adds them all unasked (the time-skipping test server cannot list)."""
    known: set[str] = set()
    if only_missing:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(listed.custom_attributes)
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type)
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)


def ticket_workflow_id(ticket_id: int) -> str:
    return f"ticket-{ticket_id}"


class TicketGateway:
    """Calls into ticket workflows, on the conversations' gateway's client. A change to a
    stored ticket is told by signal-with-start: the workflow is started if it is not running
    (a start that failed before is repaired by the next change), never twice."""

    def __init__(self, conversations: ConversationGateway, *, task_queue: str) -> None:
        self._conversations = conversations
        self._task_queue = task_queue

    async def ticket_changed(self, ticket_id: int, *, version: int) -> None:
        client = await self._conversations.client()
        try:
            await client.start_workflow(
                TicketWorkflow.run,
                TicketFlow(ticket_id=ticket_id),
                id=ticket_workflow_id(ticket_id),
                task_queue=self._task_queue,
                start_signal="ticket_changed",
                start_signal_args=[TicketChanged(version=version)],
                static_summary=f"ticket {ticket_id}",
                rpc_timeout=_SIGNAL_TIMEOUT,
            )
        except RPCError as exc:
            raise EngineUnavailable() from exc
