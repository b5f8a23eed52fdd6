"""A TCP proxy for fault tests: put it between our processes and a server, then cut the link
and restore it, without touching the server (which other tests share).

It runs its own event loop in a thread, so the test may block (subprocess waits, synchronous
database reads) without stalling the traffic it forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

_CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()


class TcpProxy:
    """127.0.0.1:`port` forwards to `upstream`. `cut()` breaks every open connection (the
    client sees it reset) and holds new ones unanswered, as a server whose host stopped
    answering does; `restore()` forwards again, the held connections included, unless
    `drop_held()` broke them first (nothing their clients sent reaches the server)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy")
        self._links: set[asyncio.Task[None]] = set()  # forwarding now
        self._tasks: set[asyncio.Task[None]] = set()  # every connection, held ones too
        self._up = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def cut(self) -> None:
        self._run(self._cut())

    def restore(self) -> None:
        self._run(self._restore())

    def drop_held(self) -> None:
        self._run(self._drop_held())

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._up.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        self._up.clear()
        for link in list(self._links):
            link.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def _restore(self) -> None:
        self._up.set()

    async def _drop_held(self) -> None:
        held = self._tasks - self._links
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._up.wait()
            # Registered only once forwarding: a cut breaks live links, held ones stay held.
            self._links.add(task)
            upstream_reader, upstream = await asyncio.open_connection(*self._upstream)
            try:
                directions = [
                    asyncio.ensure_future(_pipe(reader, upstream)),
                    asyncio.ensure_future(_pipe(upstream_reader, client)),
                ]
                try:
                    await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for direction in directions:
                        direction.cancel()
                    await asyncio.gather(*directions, return_exceptions=True)
            finally:
                upstream.transport.abort()
        except (OSError, asyncio.CancelledError):
            pass  # the link is gone: that is what a cut does
        finally:
            self._links.discard(task)
            self._tasks.discard(task)
            client.transport.abort()  # a reset, as a broken link looks to the client
