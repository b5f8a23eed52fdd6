"""Agent presence: an agent is present while a workbench holds their stream. Online with no
stream open for the policy's presence timeout (counted from the stream's end, or from going
online with none open), they go away by themselves, with an agent.status_changed (reason
no_connection) on their feed, take no new conversations and keep the ones they hold; a stream
that comes back does not bring them online again. The truth is in the database: a stream held
on one API process keeps its agent online while the worker sweeps, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import alembic.command
import alembic.config
import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from domain.types import NO_CONNECTION, AgentStatus, EventType
from store.agents import (
    agent_feed,
    change_agent_status,
    note_presence,
    set_away_the_absent,
    view_agent,
)
from store.db import MIGRATIONS, Database
from store.events import AgentOwnEvent, EventView, append_event
from store.models import Agent, Conversation, UTCDateTime, utcnow
from tests.support.api import AgentLogin, ApiClient, eventually
from tests.support.data import add_agent, enqueue_conversations
from tests.support.processes import Deployment

TIMEOUT = timedelta(minutes=2)
# The deployments' timeout: a stream's signs come every 1.5 seconds, so a few late ones on a
# loaded machine still keep its agent online.
PRESENCE = "6s"
WENT_AWAY = {"status": "away", "reason": NO_CONNECTION}


def _last_seen(db: Database, agent_id: str, at: datetime) -> None:
    with db.write() as session:
        session.execute(sa.update(Agent).where(col(Agent.id) == agent_id).values(last_seen_at=at))


def _status(db: Database, agent_id: str) -> str:
    return view_agent(db, agent_id=agent_id).agent.status


def test_an_online_agent_without_a_sign_for_the_timeout_goes_away_once(db: Database) -> None:
    long_ago = utcnow() - 2 * TIMEOUT
    for agent_id, status in [
        ("absent", "online"),
        ("streaming", "online"),
        ("back_online", "away"),
        ("resting", "away"),
        ("gone_home", "offline"),
    ]:
        add_agent(db, agent_id, max_concurrent=2, status=status)
        _last_seen(db, agent_id, long_ago)
    [held] = enqueue_conversations(db, 1)
    with db.write() as session:
        session.execute(
            sa.update(Conversation)
            .where(col(Conversation.id) == held)
            .values(agent_id="absent", state="active")
        )
        append_event(session, conversation_id=held, type=EventType.MESSAGE_CREATED)
    note_presence(db, agent_id="streaming")  # a stream of theirs is open
    change_agent_status(db, agent_id="back_online", status=AgentStatus.ONLINE)

    assert set_away_the_absent(db, presence_timeout=TIMEOUT) == ["absent"]
    assert set_away_the_absent(db, presence_timeout=TIMEOUT) == [], "set away twice"

    statuses = {agent_id: _status(db, agent_id) for agent_id in ("streaming", "back_online")}
    assert statuses == {"streaming": "online", "back_online": "online"}
    assert (_status(db, "resting"), _status(db, "gone_home")) == ("away", "offline")
    assert _status(db, "absent") == "away"
    with db.write() as session:
        append_event(session, conversation_id=held, type=EventType.MESSAGE_CREATED)
    feed = agent_feed(db, agent_id="absent", after_seq=0, limit=10)
    assert [seq for seq, _ in feed] == [1, 2, 3]
    (_, before), (_, went), (_, after) = feed
    assert isinstance(before, EventView) and isinstance(after, EventView)
    assert (before.conversation_id, after.conversation_id) == (held, held)
    assert after.seq == before.seq + 1, "the conversation's own seqs go on without the agent's"
    assert isinstance(went, AgentOwnEvent)
    assert (went.type, went.data) == (EventType.AGENT_STATUS_CHANGED, WENT_AWAY)
    assert view_agent(db, agent_id="absent").feed_seq == 3
    # Away, they keep the conversation they hold.
    with db.read() as session:
        conversation = session.get(Conversation, held)
        assert conversation is not None
        assert (conversation.state, conversation.agent_id) == ("active", "absent")
    for agent_id in ("streaming", "back_online", "resting", "gone_home"):
        assert agent_feed(db, agent_id=agent_id, after_seq=0, limit=10) == []


@contextmanager
def _stream_comes_back_after_the_look(db: Database, agent_id: str) -> Iterator[None]:
    """A stream of the agent's opens (on another process) right after the sweep has read who
    to set away, before it sets them away."""
    other = Database(db.url)
    looked = False

    def came_back(*args: Any) -> None:
        nonlocal looked
        statement = args[2]
        if not looked and statement.startswith("SELECT agent.id") and "last_seen_at" in statement:
            looked = True
            note_presence(other, agent_id=agent_id)

    sa.event.listen(sa.Engine, "after_cursor_execute", came_back)
    try:
        yield
    finally:
        sa.event.remove(sa.Engine, "after_cursor_execute", came_back)
        other.dispose()
    assert looked, "the sweep's look was not seen"


def test_an_agent_whose_stream_came_back_after_the_look_stays_online(db: Database) -> None:
    add_agent(db, "returning", max_concurrent=2)
    _last_seen(db, "returning", utcnow() - 2 * TIMEOUT)

    with _stream_comes_back_after_the_look(db, "returning"):
        assert set_away_the_absent(db, presence_timeout=TIMEOUT) == []

    assert _status(db, "returning") == "online"
    assert agent_feed(db, agent_id="returning", after_seq=0, limit=10) == []


def _migrate(db: Database, revision: str) -> None:
    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        alembic.command.upgrade(config, revision)


def _insert(connection: sa.Connection, table_name: str, **values: Any) -> None:
    """A row of these columns alone, as an older revision stored it (the models are newer)."""

    def column(key: str, value: Any) -> sa.ColumnClause[Any]:
        if isinstance(value, datetime):
            return sa.column(key, UTCDateTime())
        return sa.column(key, sa.JSON()) if isinstance(value, dict) else sa.column(key)

    table = sa.table(table_name, *(column(key, value) for key, value in values.items()))
    connection.execute(table.insert().values(**values))


def _rows_before_presence(db: Database) -> None:
    """An online agent holding a conversation with an event in her feed, as revision 0011
    stored them."""
    now = utcnow()
    with db.engine.begin() as connection:
        _insert(
            connection,
            "agent",
            id="olga",
            name="Olga",
            token_hash="h",
            status="online",
            max_concurrent=2,
            active_count=1,
            created_at=now,
        )
        _insert(
            connection,
            "conversation",
            id="c1",
            customer_id="customer-1",
            channel="web",
            state="active",
            priority=0,
            agent_id="olga",
            load_released=False,
            rating_status="none",
            last_seq=1,
            created_at=now,
        )
        _insert(
            connection,
            "event",
            id=1,
            conversation_id="c1",
            seq=1,
            type="conversation.assigned",
            data={},
            at=now,
        )
        _insert(connection, "agent_feed", agent_id="olga", last_seq=1)
        _insert(connection, "agent_event", agent_id="olga", seq=1, event_id=1)


def test_the_migration_keeps_feeds_and_gives_agents_there_the_timeout_from_now(
    empty_db: Database,
) -> None:
    db = empty_db
    _migrate(db, "0011")
    _rows_before_presence(db)
    before = utcnow()
    db.create_schema()  # to the newest

    olga = view_agent(db, agent_id="olga")
    assert olga.agent.last_seen_at is not None and olga.agent.last_seen_at >= before
    assert set_away_the_absent(db, presence_timeout=TIMEOUT) == [], "away at once"
    [(seq, event)] = agent_feed(db, agent_id="olga", after_seq=0, limit=10)
    assert isinstance(event, EventView)
    assert (seq, event.conversation_id, event.seq, event.type) == (
        1,
        "c1",
        1,
        "conversation.assigned",
    )
    # Her next entry follows on: the feed keeps its one gapless order.
    _last_seen(db, "olga", before - 2 * TIMEOUT)
    assert set_away_the_absent(db, presence_timeout=TIMEOUT) == ["olga"]
    assert [seq for seq, _ in agent_feed(db, agent_id="olga", after_seq=0, limit=10)] == [1, 2]
    # A feed entry is a conversation's event or the agent's own: never both, never neither.
    for entry in ({"event_id": None}, {"event_id": 1, "type": "agent.status_changed"}):
        with pytest.raises(sa.exc.IntegrityError), db.write() as session:
            session.execute(
                sa.text(
                    "INSERT INTO agent_event (agent_id, seq, event_id, type) "
                    "VALUES ('olga', 9, :event_id, :type)"
                ),
                {"type": None, **entry},
            )


# --- deployed: streams need real processes -------------------------------------------------


async def _away(api: ApiClient, agent: AgentLogin) -> None:
    async def away() -> bool:
        return (await api.agent(agent.id, agent.token))["status"] == "away"

    await eventually(away, timeout=60, what=f"{agent.id} away")


async def _status_of(api: ApiClient, agent: AgentLogin) -> str:
    return (await api.agent(agent.id, agent.token))["status"]


async def _witness_away(api: ApiClient) -> None:
    """An agent who goes online now with no stream, until they go away: by then the presence
    timeout of every agent who went online before has passed, and a sweep has looked."""
    await _away(api, await api.create_agent())


async def _placed(api: ApiClient, conversation_id: str) -> dict[str, Any]:
    """The conversation, once its workflow has its place in the queue (the enqueue activity,
    with its one assignment attempt, is over)."""

    async def placed() -> bool:
        return (await api.snapshot(conversation_id))["workflow"]["queued_at"] is not None

    await eventually(placed, timeout=30, what=f"{conversation_id} placed in the queue")
    return await api.conversation(conversation_id)


@pytest.mark.e2e
# The sweep's store work runs on both databases above, and with two APIs on PostgreSQL below.
@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_an_agent_is_online_while_their_stream_is_open_and_away_once_it_is_gone(
    db: Database, deploy: Callable[..., Deployment]
) -> None:
    async with deploy(db.url, presence_timeout=PRESENCE).client() as api:
        hana = await api.create_agent("hana", max_concurrent=2, online=False)
        async with api.agent_stream(hana.id, hana.token, after_seq=0) as desk:
            assert desk.response.status_code == 200
            await api.set_status(hana.id, hana.token, "online")
            await _witness_away(api)
            assert await _status_of(api, hana) == "online", "away with her stream open"
            cid, visitor = await api.start_conversation()
            await api.wait_for_state(cid, visitor, "active")
            assigned, active = await desk.take(2, timeout=15)
            assert (assigned["event"], assigned["conversation_id"]) == (
                "conversation.assigned",
                cid,
            )

        # Her workbench is gone: after the timeout she is away, and keeps her conversation.
        await _away(api, hana)
        feed = await api.agent_feed(hana.id, hana.token, after_seq=active["agent_seq"])
        assert [(e["type"], e["conversation_id"], e["seq"], e["data"]) for e in feed] == [
            ("agent.status_changed", None, None, WENT_AWAY)
        ]
        held = await api.conversation(cid)
        assert (held["state"], held["agent_id"]) == ("active", hana.id)

        # She reconnects: the stream shows why she is away, and she stays away.
        async with api.agent_stream(hana.id, hana.token, last_event_id=active["id"]) as desk:
            [changed] = await desk.take(1, timeout=15)
            assert (changed["event"], changed["id"], changed["conversation_id"]) == (
                "agent.status_changed",
                str(feed[0]["agent_seq"]),
                None,
            )
            assert changed["data"] == WENT_AWAY

            async def signed_since_she_went_away() -> bool:
                seen = view_agent(db, agent_id=hana.id).agent.last_seen_at
                return seen is not None and seen > datetime.fromisoformat(changed["at"])

            await eventually(signed_since_she_went_away, what="a sign of the new stream")
            assert await _status_of(api, hana) == "away", "a stream brought her back online"
            # The next arrival in her group waits: she has room, but is away.
            second, second_visitor = await api.start_conversation()
            waiting = await _placed(api, second)
            assert (waiting["state"], waiting["agent_id"]) == ("queued", None)

            # Online again (the status route as before): she takes it at once.
            await api.set_status(hana.id, hana.token, "online")
            await api.wait_for_state(second, second_visitor, "active")
            taken = await desk.until("conversation.assigned", timeout=15)
            assert taken[-1]["conversation_id"] == second


@pytest.mark.e2e
@pytest.mark.postgres
async def test_a_stream_on_one_api_keeps_its_agent_online_while_the_worker_sweeps(
    postgres_db: Database, deploy: Callable[..., Deployment]
) -> None:
    deployment = deploy(postgres_db.url, apis=2, presence_timeout=PRESENCE)
    async with deployment.client(0) as a, deployment.client(1) as b:
        ivy = await a.create_agent("ivy", online=False)
        async with b.agent_stream(ivy.id, ivy.token, after_seq=0) as desk:
            assert desk.response.status_code == 200
            await a.set_status(ivy.id, ivy.token, "online")
            await _witness_away(a)
            assert await _status_of(a, ivy) == "online", "away with her stream open on B"
            # B dies with the stream open: no last sign, only the ones it stopped writing.
            deployment.kill("api-1")
            with pytest.raises(httpx.HTTPError):
                await desk.take(1, timeout=10)
        await _away(a, ivy)
        feed = await a.agent_feed(ivy.id, ivy.token)
        assert [(e["type"], e["data"]) for e in feed] == [("agent.status_changed", WENT_AWAY)]
