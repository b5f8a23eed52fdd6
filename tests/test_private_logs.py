"""Logs without customer data (issue 14): no line the API, the worker or the Temporal server
logs carries a customer's id, their words (messages, a left message and its contact), a
transfer note, a rating comment or a credential.

A canary string goes into each of those fields, each written while the database goes away:
the test holds a lock the write waits on, so the write is in flight, its values bound to its
statement, when the database is cut (tests/support/proxy.py). The API answers 503 and a
worker's activity fails; both log why, as they must. Then the database is back, the clients'
retries (and the activities') complete, and the test reads every line every process logged.
"""

from __future__ import annotations

import asyncio
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from store.db import Database
from store.models import Message
from tests.support.api import ADMIN_TOKEN, APP_KEY, ApiClient, bearer, eventually, expect
from tests.support.processes import Deployment
from tests.support.proxy import TcpProxy
from tests.support.temporal import DevServer

# What a worker logs, with the exception, when an activity's attempt fails (the Temporal SDK).
_ACTIVITY_FAILED = "Completing activity as failed"
# Long enough that no timer decides anything while the test holds the database.
_PATIENT = {"idle_warning_after": "10m", "idle_close_after": "10m", "rating_window": "10m"}


def _canary() -> str:
    return f"canary-{uuid.uuid4().hex}"


@contextmanager
def _writes_held(db: Database, table: str) -> Iterator[Callable[[str], Awaitable[bool]]]:
    """Hold writes to `table` (reads go on) until the block ends; yields a check that some
    process waits on the hold with a statement starting with the given words."""
    with db.engine.connect() as holder:
        holder.execute(sa.text(f"LOCK TABLE {table} IN SHARE MODE"))

        def waiting(statement: str) -> bool:
            with db.read() as session:
                found = session.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query ILIKE :statement"
                    ),
                    {"statement": f"{statement}%"},
                ).scalar_one()
            return bool(found)

        async def waits(statement: str) -> bool:
            return await asyncio.to_thread(waiting, statement)

        try:
            yield waits
        finally:
            holder.rollback()


Request = Callable[[], Awaitable[httpx.Response]]


@dataclass
class _Outage:
    """The database goes while a write is in flight, and comes back."""

    proxy: TcpProxy  # the processes' only way to the database
    deployment: Deployment
    db: Database  # the test's own way to it

    async def write(
        self, request: Request, *, table: str, statement: str, until: tuple[int, ...]
    ) -> httpx.Response:
        """Send `request`; once its write waits on `table` with `statement`, cut the database
        and let the write go on the broken connection. The database is back once the write
        failed (the API answered, a 503, or a worker's activity failed); then the request is
        sent again, as a client does after a 503, until it answers one of `until`. Answers
        the first answer."""
        failures = self._activity_failures()
        with _writes_held(self.db, table) as waits:
            answer = asyncio.ensure_future(request())
            await eventually(lambda: waits(statement), what=f"a write waiting at {statement}")
            self.proxy.cut()

        async def failed() -> bool:
            return answer.done() or self._activity_failures() > failures

        try:
            await eventually(failed, timeout=60, what=f"the write at {statement} failing")
        finally:
            self.proxy.restore()
        first = await answer  # (an activity's caller is answered once the database is back)

        async def answered() -> httpx.Response | None:
            response = await request()
            return response if response.status_code in until else None

        await eventually(answered, timeout=90, every=0.5, what=f"an answer in {until}")
        return first

    def _activity_failures(self) -> int:
        return self.deployment.log("worker-0").count(_ACTIVITY_FAILED)


@pytest.mark.e2e
@pytest.mark.postgres
async def test_no_log_line_carries_customer_data_through_an_outage(
    tmp_path: Path, postgres_db: Database
) -> None:
    canary = _canary()
    customer_id = f"customer-{canary}"
    server = DevServer(tmp_path)  # our own, to read its log too
    await server.start()
    url = make_url(postgres_db.url)
    secrets = [ADMIN_TOKEN, APP_KEY]
    try:
        with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            deployment = Deployment(
                directory=tmp_path / "deployment",
                database_url=url.set(host="127.0.0.1", port=proxy.port).render_as_string(
                    hide_password=False
                ),
                temporal_address=server.address,
                timeouts=_PATIENT,
            )
            try:
                async with deployment.client() as api:
                    outage = _Outage(proxy, deployment, postgres_db)
                    await _drive(api, outage, canary, customer_id, secrets)
            finally:
                deployment.stop(faults=True)
    finally:
        server.stop()

    logs = {name.stem: name.read_text() for name in deployment.logs.glob("*.log")}
    logs["temporal"] = server.log.read_text()
    assert set(logs) == {"api-0", "worker-0", "temporal"}
    leaks = [
        f"{name}: {line}"
        for name, log in logs.items()
        for line in log.splitlines()
        if any(private in line for private in (canary, *secrets))
    ]
    assert not leaks, "customer data or a credential in a log line:\n" + "\n".join(leaks)
    # The outage was logged where it hit: the API's 503s, a worker's failed activity (the
    # rating's too, while the worker writes its comment).
    assert logs["api-0"].count("database unavailable") >= 3
    assert deployment.failed_attempts("transfer_conversation") >= 1


async def _drive(
    api: ApiClient, outage: _Outage, canary: str, customer_id: str, secrets: list[str]
) -> None:
    """Every customer field written through an outage; the credentials used join `secrets`."""
    first = await api.create_agent(max_concurrent=5)
    second = await api.create_agent(max_concurrent=5)
    secrets += [first.token, second.token]

    # The customer's id: the app's backend starts a conversation as the database goes.
    def start() -> Awaitable[httpx.Response]:
        return api.http.post(
            "/v1/conversations",
            headers=bearer(APP_KEY),
            json={"customer_id": customer_id, "channel": "web", "order_id": f"order-{canary}"},
        )

    refused = await outage.write(
        start, table="conversation", statement="INSERT INTO conversation", until=(200, 201)
    )
    assert refused.status_code == 503, refused.text
    started = expect(await start())
    conversation_id, visitor = started["id"], started["visitor_token"]
    secrets.append(visitor)
    held = await api.wait_for(conversation_id, timeout=60, state="active")
    holder = first if held["agent_id"] == first.id else second
    other = second if holder is first else first

    # The customer's words: a message, posted again after its 503 with the same id.
    message_id = uuid.uuid4().hex

    def post() -> Awaitable[httpx.Response]:
        return api.post_message(
            conversation_id, visitor, f"My address is 1 {canary} Road", message_id
        )

    refused = await outage.write(
        post, table="message", statement="INSERT INTO message", until=(200, 201)
    )
    assert refused.status_code == 503, refused.text

    # A transfer note: the worker's activity writes it, and fails as the database goes.
    def transfer() -> Awaitable[httpx.Response]:
        return api.transfer(
            conversation_id, holder.token, to_agent_id=other.id, note=f"Refund {canary}"
        )

    await outage.write(transfer, table="event", statement="INSERT INTO event", until=(200,))
    await api.wait_for(conversation_id, timeout=60, agent_id=other.id)

    # A rating comment, the same way.
    expect(await api.close(conversation_id, other.token), 200)
    await api.wait_for(conversation_id, timeout=60, state="closed")

    async def invited() -> bool:
        return (await api.conversation(conversation_id))["rating"]["status"] == "pending"

    await eventually(invited, timeout=60, what="the rating invite")

    def rate() -> Awaitable[httpx.Response]:
        return api.rate(conversation_id, visitor, 2, comment=f"Rude: {canary}")

    # The worker records the score, then the API stores the comment: the first write that
    # waits is cut (whichever it is), and the retried rating stores both.
    await outage.write(
        rate, table="conversation", statement="UPDATE conversation SET%rating_", until=(201,)
    )

    # A left message and its contact: a callback conversation overflows to one (processes.py).
    callback = await api.start_conversation(f"{customer_id}-2", entry="callback_test")
    secrets.append(callback.token)
    await api.wait_for(callback.conversation_id, timeout=60, state="closed")

    def leave() -> Awaitable[httpx.Response]:
        return api.leave_message(
            callback.conversation_id,
            callback.token,
            f"Call me {canary}",
            contact=f"{canary}@example",
        )

    refused = await outage.write(
        leave, table="left_message", statement="INSERT INTO left_message", until=(201,)
    )
    assert refused.status_code == 503, refused.text

    # Paths: a customer's id in one (routed or not), a stream ticket in a query string.
    await api.http.get(f"/v1/customers/{customer_id}/conversations", headers=bearer(ADMIN_TOKEN))
    stream = f"/v1/conversations/{conversation_id}/stream"
    ticket = expect(await api.stream_ticket(stream, visitor), 201)["ticket"]
    secrets.append(ticket)
    async with api.http.stream("GET", stream, params={"ticket": ticket}) as opened:
        assert opened.status_code in (200, 401, 403, 409), opened.status_code


def test_a_failed_statement_carries_no_bound_values(db: Database) -> None:
    """Errors of every engine (SQLite and PostgreSQL) leave the statement's values out: they
    are logged, and an activity's failure is kept in its workflow's history."""
    canary = _canary()
    with pytest.raises(sa.exc.IntegrityError) as refused, db.write_connection() as connection:
        connection.execute(  # a message of no conversation: refused by its foreign key
            sa.insert(Message).values(
                conversation_id="no-such-conversation",
                seq=1,
                sender_role="visitor",
                sender_id="visitor",
                client_message_id="m-1",
                type="text",
                content=canary,
                created_at=datetime.now(UTC),
            )
        )
    assert canary not in "".join(traceback.format_exception(refused.value))
