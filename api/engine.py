"""The conversation engine's answers as HTTP, in one place: the gateway's errors
(`domain/errors.py`) become the status codes and bodies clients have always seen."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from domain.errors import ConversationEnded, EngineUnavailable, Rejection, UpdateRejected
from media.storage import ObjectStoreUnavailable

log = logging.getLogger("switchboard.api")

_REJECTION_STATUS = {
    Rejection.INVALID_STATE: status.HTTP_409_CONFLICT,
    Rejection.FORBIDDEN: status.HTTP_403_FORBIDDEN,
    Rejection.INVALID_INPUT: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


async def _engine_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineUnavailable)
    log.warning("answering 503: %s", exc.what, exc_info=exc)
    return JSONResponse(
        {"detail": f"{exc.what}; nothing was lost, retry the same request"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1"},
    )


async def _objects_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("answering 503: the attachments' store: %s", exc)
    return JSONResponse(
        {"detail": "the attachments' store is unavailable; retry the same request"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


async def _conversation_ended(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": "the conversation has ended"}, status_code=status.HTTP_409_CONFLICT
    )


async def _update_rejected(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UpdateRejected)
    return JSONResponse({"detail": exc.message}, status_code=_REJECTION_STATUS[exc.kind])


def answer_engine_errors(app: FastAPI) -> None:
    """Register the mapping on the app: 503 with Retry-After (the engine, the attachments'
    store), 409, 403 or 422."""
    app.add_exception_handler(EngineUnavailable, _engine_unavailable)
    app.add_exception_handler(ObjectStoreUnavailable, _objects_unavailable)
    app.add_exception_handler(ConversationEnded, _conversation_ended)
    app.add_exception_handler(UpdateRejected, _update_rejected)
