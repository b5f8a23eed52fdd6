"""Limits on every door: each a clear 413, or a 429 with Retry-After.

`FrontDoor` meets every request before routing: its client address's rate, then its caller
(authenticated here, before any body is read: a request that may carry a body and has no valid
token is answered 401 at once), its token's rate, and its body, counted as it arrives (413 past
the limit, whatever `Content-Length` says or does not say). Routes take what is theirs from
`Limits`: conversations started per caller, streams held per caller, typing per conversation.

Rates are sliding windows (`Rate`) kept in this process's memory: behind a load balancer each
API process allows its own. What is stored (messages, a customer's conversations)
is counted in the database instead (store/rates.py).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.streams import StreamSlots
from settings import Settings

# A caller over its stream limit closes one of its streams first; that is noticed at once.
STREAM_RETRY_AFTER_SECONDS = 5
# How much of an invalid input a 422 repeats: enough to find it, never the input itself.
ECHO_CHARS = 80
# Methods whose requests may carry a body: their caller is authenticated before it is read.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})
# The codec endpoint's bodies are pages of payloads (api/routes/codec.py): a limit of their own.
CODEC_PATHS = "/v1/codec/"
# Uploads take bodies the size of a file: the policy's limits, not SWITCHBOARD_MAX_BODY_BYTES.
UPLOAD_PATH = re.compile(r"^/v1/conversations/[^/]+/attachments$")
MULTIPART_FRAMING_BYTES = 16 * 1024


def too_many(detail: str, retry_after: int) -> HTTPException:
    """The 429 a route raises, with the seconds to wait in Retry-After."""
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"{detail}; retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


class Rate:
    """At most `amount` per `period` seconds for each key, in a sliding window: this window's
    count plus the last one's, weighted by how much of it the sliding minute still covers (the
    usual approximation; no per-request timestamps kept). In this process's memory, on the
    event loop (no lock): every request meets it, so it must cost next to nothing."""

    def __init__(self, amount: int, period: float = 60.0) -> None:
        self.amount = amount
        self.period = period
        # key → (window number, count in it, count in the one before)
        self._counts: dict[tuple[str, ...], tuple[int, int, int]] = {}
        self._taken = 0

    def take(self, *key: str, over: str) -> None:
        """Count one for `key`, or (nothing counted) raise the 429 "more than <amount> <over>"
        with the seconds until there is room."""
        window, into = divmod(time.time(), self.period)
        number = int(window)
        seen, current, previous = self._counts.get(key, (number, 0, 0))
        if seen != number:  # a new window: the last one's count becomes the one before
            previous = current if seen == number - 1 else 0
            current = 0
        remaining = 1 - into / self.period  # the share of the last window still in the minute
        if current + previous * remaining >= self.amount:
            raise too_many(f"more than {self.amount} {over}", self._wait(current, previous, into))
        self._counts[key] = (number, current + 1, previous)
        self._taken += 1
        if self._taken % 4096 == 0:
            self._forget(number)

    def _wait(self, current: int, previous: int, into: float) -> int:
        """Seconds until one more would be allowed, if nothing else came."""
        if current >= self.amount:  # the next window, once the last one has faded enough
            wait = self.period - into + self.period * (1 - self.amount / max(current, 1))
        else:  # later in this window, as the last one fades
            wait = self.period * (1 - (self.amount - current) / previous) - into
        return max(1, math.ceil(wait))

    def _forget(self, number: int) -> None:
        """Drop keys not seen in this window or the last (they count nothing any more)."""
        for key in [key for key, (seen, _, _) in self._counts.items() if seen < number - 1]:
            del self._counts[key]


class StreamHolders:
    """The streams each caller holds open in this process: a limit per role."""

    def __init__(self, limits: Mapping[str, int], default: int) -> None:
        self._slots = {role: StreamSlots(limit) for role, limit in limits.items()}
        self._default = StreamSlots(default)

    def take(self, role: str, holder: str) -> Callable[[], None]:
        """One more stream for `holder`: the function that gives the slot back, or a 429."""
        slots = self._slots.get(role, self._default)
        release = slots.take(f"{role}:{holder}")
        if release is None:
            raise too_many(
                f"{slots.limit} streams of this {role} are open already; close one first",
                STREAM_RETRY_AFTER_SECONDS,
            )
        return release


@dataclass
class Limits:
    """This API process's counts (the rates and the streams)."""

    per_address: Rate  # requests of a client address
    per_caller: Rate  # requests of a caller with a valid token
    conversation_starts: Rate  # POST /v1/conversations of a caller (your app's key)
    typing: Rate  # typing signals of a conversation's side
    streams: StreamHolders
    max_body_bytes: int
    max_codec_body_bytes: int
    # An upload's body (POST /v1/conversations/{id}/attachments): the policy's largest file,
    # read when the request comes (the policy reloads), with room for the multipart framing.
    max_upload_bytes: Callable[[], int] = lambda: 0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, max_upload_bytes: Callable[[], int] = lambda: 0
    ) -> Limits:
        return cls(
            per_address=Rate(settings.max_requests_per_minute_per_address),
            per_caller=Rate(settings.max_requests_per_minute_per_caller),
            conversation_starts=Rate(settings.max_conversations_per_minute),
            typing=Rate(settings.max_typing_per_minute),
            streams=StreamHolders(
                {
                    "visitor": settings.max_streams_per_visitor,
                    "agent": settings.max_streams_per_agent,
                },
                default=settings.max_streams_per_admin,
            ),
            max_body_bytes=settings.max_body_bytes,
            max_codec_body_bytes=settings.max_codec_body_bytes,
            max_upload_bytes=max_upload_bytes,
        )

    def max_body(self, path: str) -> int:
        """The body limit of a request to `path`."""
        if path.startswith(CODEC_PATHS):
            return self.max_codec_body_bytes
        if UPLOAD_PATH.match(path):
            return max(self.max_body_bytes, self.max_upload_bytes() + MULTIPART_FRAMING_BYTES)
        return self.max_body_bytes


# --- the front door -------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    """Raised while the body is read, past the limit: the app answers it as any HTTPException."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE, detail=f"request body over {limit} bytes"
        )


# The request's caller (with `role` and `id`), or an HTTPException (401) for no or a bad token.
Authenticate = Callable[[Request], Awaitable[Any]]


class FrontDoor:
    """Middleware: the limits every request meets before routing (see the module's docstring).
    `authenticate(request)` answers the caller, kept in `request.state.principal` for the
    routes; `limits()` are the process's counts (None before the app has started); a request
    to one of `open_paths` without a valid token reaches its route, body and all."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Callable[[], Limits | None],
        authenticate: Authenticate,
        open_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.limits = limits
        self.authenticate = authenticate
        # Paths whose route takes a body from anyone (the demo's backend, development only).
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limits = self.limits() if scope["type"] == "http" else None
        if limits is None:  # not a request, or served before startup (no counts yet)
            await self.app(scope, receive, send)
            return
        try:
            await self._admit(limits, scope)
        except HTTPException as refused:
            await _answer(refused, scope, receive, send)
            return
        await self._pass_counting(limits.max_body(scope["path"]), scope, receive, send)

    async def _admit(self, limits: Limits, scope: Scope) -> None:
        """Raise the refusal of a request that may not come in (its body still unread)."""
        address = scope["client"][0] if scope.get("client") else "unknown"
        limits.per_address.take(address, over="requests a minute from your address")
        request = Request(scope)
        try:
            principal = await self.authenticate(request)
        except HTTPException:
            if scope["method"] in _BODILESS or scope["path"] in self.open_paths:
                return  # the route decides: some need no token
            raise  # before a byte of its body is read
        except Exception:  # not found out now (the database unreachable, say): the route's
            return  # own look-up fails the same way, and the app answers it (503)
        request.state.principal = principal
        limits.per_caller.take(
            principal.role, principal.id, over="requests a minute with your token"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        limit = limits.max_body(scope["path"])
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)

    async def _pass_counting(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; its body raises BodyTooLarge once more than `limit` bytes of it
        have arrived (chunked bodies have no Content-Length to look at first)."""
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as too_large:  # read outside the app's own error handling
            if started:
                raise
            await _answer(too_large, scope, receive, send)


async def _answer(refusal: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        {"detail": refusal.detail}, status_code=refusal.status_code, headers=refusal.headers
    )
    await response(scope, receive, send)


# --- what a refusal repeats -----------------------------------------------------------------


def _slice(text: str) -> str:
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


async def _invalid_input(_request: Request, exc: Exception) -> JSONResponse:
    """422, one {loc, msg, type} per invalid field: never the input itself, and no more than a
    slice of any key or message that repeats part of it."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [part if isinstance(part, int) else _slice(str(part)) for part in error["loc"]],
            "msg": _slice(str(error["msg"])),
            "type": error["type"],
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def answer_invalid_input(app: FastAPI) -> None:
    """Register the short 422 on the app."""
    app.add_exception_handler(RequestValidationError, _invalid_input)
