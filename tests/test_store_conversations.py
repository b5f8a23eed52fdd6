"""store/conversations.py (and the readiness and live-signal calls of store/db.py) on SQLite and
PostgreSQL, without Temporal: starting or getting back the customer's open conversation, its
view, its events, read marks."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy.engine import make_url

from domain.types import ConversationState, EventType, Role
from store.conversations import (
    SeqNotReached,
    conversation_events,
    find_conversation,
    open_conversation,
    record_read,
    view_conversation,
)
from store.db import Database, notify, reachable
from store.events import ConversationNotFound, append_event
from store.models import Conversation
from tests.support.data import enqueue_conversations, new_conversation


def _with_events(db: Database, count: int) -> str:
    with db.write() as session:
        conversation_id = new_conversation(session).id
        for n in range(count):
            append_event(
                session, conversation_id=conversation_id, type=EventType.ROUTED, data={"n": n}
            )
    return conversation_id


def test_a_customer_has_one_open_conversation_and_a_new_one_after_it_closed(
    db: Database,
) -> None:
    first = open_conversation(db, customer_id="c-1", channel="app", tier="vip", order_id="o-9")
    assert first.created
    row = first.conversation
    assert (row.state, row.channel, row.tier, row.order_id) == ("queued", "app", "vip", "o-9")
    assert row.open_customer_key == "c-1"

    again = open_conversation(db, customer_id="c-1", channel="web")
    assert not again.created and again.conversation.id == row.id
    assert again.conversation.channel == "app"  # the open one, as it was started

    with db.write() as session:
        closed = session.get(Conversation, row.id)
        assert closed is not None
        closed.state, closed.open_customer_key = ConversationState.CLOSED, None
    later = open_conversation(db, customer_id="c-1", channel="web")
    assert later.created and later.conversation.id != row.id


def test_concurrent_starts_of_one_customer_make_one_conversation(db: Database) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        started = list(
            pool.map(lambda _: open_conversation(db, customer_id="c-2", channel="web"), range(8))
        )
    assert sum(opened.created for opened in started) == 1
    assert len({opened.conversation.id for opened in started}) == 1


def test_find_conversation(db: Database) -> None:
    with db.write() as session:
        conversation_id = new_conversation(session).id
    found = find_conversation(db, conversation_id=conversation_id)
    assert found is not None and found.id == conversation_id
    assert find_conversation(db, conversation_id="nope") is None


def test_the_view_gives_a_queued_conversation_its_place(db: Database) -> None:
    with pytest.raises(ConversationNotFound):
        view_conversation(db, conversation_id="nope")

    with db.write() as session:
        unrouted = new_conversation(session).id
        active = new_conversation(session, state="active", agent_id="alice").id
    waiting = enqueue_conversations(db, 3)

    assert view_conversation(db, conversation_id=unrouted).queue_position is None
    assert [view_conversation(db, conversation_id=c).queue_position for c in waiting] == [1, 2, 3]
    third = view_conversation(db, conversation_id=waiting[2])
    assert third.conversation.skill_group == "general"
    assert third.estimated_wait is None  # the group has served nobody lately
    view = view_conversation(db, conversation_id=active)
    assert (view.queue_position, view.estimated_wait) == (None, None)
    assert view.conversation.agent_id == "alice"


def test_events_come_in_seq_order_after_a_seq(db: Database) -> None:
    conversation_id = _with_events(db, 5)
    page = conversation_events(
        db, conversation_id=conversation_id, after_seq=1, limit=3, staff=True
    )
    assert [(event.seq, event.data["n"]) for event in page] == [(2, 1), (3, 2), (4, 3)]
    assert (
        conversation_events(db, conversation_id=conversation_id, after_seq=5, limit=3, staff=True)
        == []
    )
    assert conversation_events(db, conversation_id="nope", after_seq=0, limit=3, staff=True) == []


def test_a_read_mark_moves_forward_only_and_tells_the_news_once(db: Database) -> None:
    conversation_id = _with_events(db, 4)

    marks = record_read(
        db, conversation_id=conversation_id, reader_role=Role.VISITOR, reader_id="v", seq=3
    )
    assert (marks.visitor_read_seq, marks.agent_read_seq) == (3, 0)
    told = conversation_events(
        db, conversation_id=conversation_id, after_seq=4, limit=10, staff=True
    )
    assert [(event.type, event.data) for event in told] == [
        (EventType.MESSAGE_READ, {"by_role": "visitor", "by_id": "v", "seq": 3})
    ]
    visitor_told = conversation_events(
        db, conversation_id=conversation_id, after_seq=4, limit=10, staff=False
    )
    assert [event.data for event in visitor_told] == [{"by_role": "visitor", "seq": 3}]

    # The same seq again, or an older one: nothing changes, nothing is told.
    for seq in (3, 2):
        marks = record_read(
            db, conversation_id=conversation_id, reader_role=Role.VISITOR, reader_id="v", seq=seq
        )
        assert (marks.visitor_read_seq, marks.agent_read_seq) == (3, 0)
    assert (
        len(
            conversation_events(
                db, conversation_id=conversation_id, after_seq=4, limit=10, staff=True
            )
        )
        == 1
    )

    marks = record_read(
        db, conversation_id=conversation_id, reader_role=Role.AGENT, reader_id="alice", seq=5
    )
    assert (marks.conversation_id, marks.visitor_read_seq, marks.agent_read_seq) == (
        conversation_id,
        3,
        5,
    )


def test_a_read_mark_beyond_the_log_or_of_an_unknown_conversation_is_refused(
    db: Database,
) -> None:
    conversation_id = _with_events(db, 2)
    with pytest.raises(SeqNotReached) as beyond:
        record_read(
            db, conversation_id=conversation_id, reader_role=Role.AGENT, reader_id="a", seq=3
        )
    assert (beyond.value.seq, beyond.value.last_seq) == (3, 2)
    assert str(beyond.value) == "seq 3 is beyond the newest event (2)"
    with pytest.raises(ConversationNotFound):
        record_read(db, conversation_id="nope", reader_role=Role.VISITOR, reader_id="v", seq=1)
    assert (
        conversation_events(db, conversation_id=conversation_id, after_seq=2, limit=10, staff=True)
        == []
    )


def test_a_reachable_database_and_one_that_is_not(db: Database) -> None:
    assert reachable(db)
    nowhere = Database("postgresql+psycopg://postgres@127.0.0.1:1/test")
    try:
        assert not reachable(nowhere)
    finally:
        nowhere.dispose()


def test_a_live_signal_reaches_every_listener(postgres_db: Database) -> None:
    conninfo = make_url(postgres_db.url).set(drivername="postgresql")
    with psycopg.connect(
        conninfo.render_as_string(hide_password=False), autocommit=True
    ) as listener:
        channel = f"test_live_{uuid.uuid4().hex[:8]}"
        listener.execute(f"LISTEN {channel}")
        notify(postgres_db, channel=channel, payload=json.dumps({"keys": ["c-1"]}))
        received = next(listener.notifies(timeout=10))
    assert (received.channel, json.loads(received.payload)) == (channel, {"keys": ["c-1"]})
