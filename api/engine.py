"""Telling conversation workflows what clients did, and mapping the engine's answers to HTTP."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import HTTPException, status
from temporalio.client import (
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.temporal import EngineUnavailable, TemporalGateway
from domain.types import workflow_id
from workflows.conversation import FORBIDDEN, INVALID_STATE

_SIGNAL_TIMEOUT = timedelta(seconds=5)
_UPDATE_TIMEOUT = timedelta(seconds=30)
# The longest a client waits for an update with an id (then 503: its retry joins the update).
_UPDATE_WAIT = timedelta(seconds=30)
_ENDED = "the conversation has ended"


class ConversationEnded(HTTPException):
    """409: the conversation's workflow has finished (closed, and its rating phase is over)."""

    def __init__(self) -> None:
        super().__init__(status.HTTP_409_CONFLICT, detail=_ENDED)


async def conversation_handle(temporal: TemporalGateway, conversation_id: str) -> WorkflowHandle:
    client = await temporal.client()
    return client.get_workflow_handle(workflow_id(conversation_id))


async def signal(temporal: TemporalGateway, conversation_id: str, name: str, arg: Any) -> None:
    """Return only once the Temporal server has accepted the signal."""
    handle = await conversation_handle(temporal, conversation_id)
    try:
        await handle.signal(name, arg, rpc_timeout=_SIGNAL_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ConversationEnded() from exc
        raise EngineUnavailable() from exc


async def update(
    temporal: TemporalGateway,
    conversation_id: str,
    name: str,
    arg: Any,
    result_type: type,
    *,
    update_id: str | None = None,
) -> Any:
    """Run a validated update; a rejection becomes 409/403/422, an outage 503. Requests with
    the same `update_id` are one update: a retry waits for the first one's outcome, or has
    it at once (the server keeps it with the workflow's history), and is never validated.
    Such an update answers 503 after _UPDATE_WAIT however long its workflow still takes:
    `rpc_timeout` bounds each call, and the wait for an outcome is a call repeated."""
    handle = await conversation_handle(temporal, conversation_id)
    bound = None if update_id is None else _UPDATE_WAIT.total_seconds()
    try:
        async with asyncio.timeout(bound):
            return await handle.execute_update(
                name, arg, id=update_id, result_type=result_type, rpc_timeout=_UPDATE_TIMEOUT
            )
    except TimeoutError as exc:
        raise EngineUnavailable("the conversation engine did not answer in time") from exc
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        kind = cause.type if isinstance(cause, ApplicationError) else None
        code = {
            INVALID_STATE: status.HTTP_409_CONFLICT,
            FORBIDDEN: status.HTTP_403_FORBIDDEN,
        }.get(kind or "", status.HTTP_422_UNPROCESSABLE_CONTENT)
        raise HTTPException(code, detail=getattr(cause, "message", str(cause))) from exc
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        raise EngineUnavailable("the conversation engine did not answer in time") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ConversationEnded() from exc
        raise EngineUnavailable() from exc
