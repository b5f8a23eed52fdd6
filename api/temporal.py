"""The API's Temporal connection: made lazily, so the API starts (and says so) while it is down."""

from __future__ import annotations

import asyncio
import logging

from fastapi import HTTPException, status
from temporalio.client import Client

from settings import Settings

log = logging.getLogger("switchboard.api")


class EngineUnavailable(HTTPException):
    def __init__(self, what: str = "the conversation engine is unreachable") -> None:
        log.warning("answering 503: %s", what, exc_info=True)
        super().__init__(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"{what}; nothing was lost, retry the same request",
            headers={"Retry-After": "1"},
        )


class TemporalGateway:
    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await Client.connect(
                        self._settings.temporal_address,
                        namespace=self._settings.temporal_namespace,
                    )
                except Exception as exc:
                    raise EngineUnavailable() from exc
            return self._client
