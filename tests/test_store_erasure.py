"""store/erasure.py on SQLite and PostgreSQL, without Temporal: an erase replaces every customer
text of a closed conversation with the marker (none is left in any table), keeps the policy's
texts, is recorded once and changes nothing when repeated; text that comes after it is erased
or refused; retention erases what closed long enough ago, in batches."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from domain.policy import Policy
from domain.types import EventType, Role
from media.storage import LocalStore
from store import lifecycle
from store.attachments import new_attachment_id, object_keys
from store.db import Database
from store.erasure import (
    ERASED,
    ConversationOpen,
    Erased,
    erase_conversation,
    erase_expired_transcripts,
)
from store.events import ConversationNotFound, append_event, events_after
from store.left_messages import LeftMessageNotOffered, record_resolution, store_left_message
from store.models import (
    Attachment,
    Conversation,
    Event,
    LeftMessage,
    Message,
)
from store.tickets import Author, add_comment, erase_customer_tickets, erase_expired_tickets
from tests.support.canary import Canary, rows_holding
from tests.support.data import (
    add_agent,
    app_ticket,
    close_ticket,
    closed_conversation,
    new_conversation,
    store_unsignalled,
    ticket_texts,
)

POLICY = Policy()


def _conversation(db: Database, **fields: object) -> str:
    with db.write() as session:
        return new_conversation(session, **fields).id


def _closed_with_every_text(db: Database, canary: Canary) -> str:
    """A conversation closed with `overflow` holding a canary in each of its free-text fields:
    both sides' messages, the order id and the app's attributes, the left message (text,
    contact, the team's note), the rating comment, a staff note and a transfer note."""
    add_agent(db, "alice", max_concurrent=1)
    conversation_id = _conversation(
        db,
        state="active",
        agent_id="alice",
        order_id=canary("order"),
        attributes={"name": canary("name"), "order": {"total": canary("total")}},
    )
    for role, sender in ((Role.VISITOR, f"visitor:{conversation_id}"), (Role.AGENT, "alice")):
        store_unsignalled(
            db,
            conversation_id=conversation_id,
            sender_role=role,
            sender_id=sender,
            content=canary(f"{role} message"),
        )
    with db.write() as session:
        append_event(
            session,
            conversation_id=conversation_id,
            type="note.created",
            data={"author_id": "alice", "text": canary("staff note")},
        )
        append_event(
            session,
            conversation_id=conversation_id,
            type=EventType.TRANSFERRED,
            data={"from_agent_id": "alice", "to_agent_id": None, "note": canary("transfer note")},
        )
    lifecycle.close_conversation(
        db=db, policy=POLICY, conversation_id=conversation_id, reason="overflow"
    )
    left = store_left_message(
        db,
        conversation_id=conversation_id,
        content=canary("left message"),
        contact=canary("contact"),
    )
    assert left.id is not None
    record_resolution(
        db, left_message_id=left.id, by_role=Role.ADMIN, by_id="admin", note=canary("resolution")
    )
    lifecycle.record_rating(
        db=db, conversation_id=conversation_id, score=4, comment=canary("rating comment")
    )
    return conversation_id


def _events(db: Database, conversation_id: str) -> dict[str, Event]:
    """The conversation's events by type (the latest of each)."""
    with db.read() as session:
        events = events_after(
            session, conversation_id=conversation_id, after_seq=0, limit=1000, staff=True
        )
    return {event.type: event for event in events}


def test_an_erase_leaves_the_marker_in_every_text_and_keeps_the_policy_texts(
    db: Database,
) -> None:
    canary = Canary()
    conversation_id = _closed_with_every_text(db, canary)
    assert rows_holding(db, canary.prefix)  # the canaries are where a reader would look

    assert erase_conversation(db, conversation_id=conversation_id) == Erased(1, 2)

    assert rows_holding(db, canary.prefix) == {}
    with db.read() as session:
        conversation = session.get(Conversation, conversation_id)
        messages = session.exec(
            select(Message.content).where(Message.conversation_id == conversation_id)
        ).all()
        left = session.exec(
            select(LeftMessage).where(LeftMessage.conversation_id == conversation_id)
        ).one()
    assert conversation is not None and conversation.erased_at is not None
    assert (conversation.rating_comment, conversation.order_id) == (ERASED, ERASED)
    assert conversation.attributes == {"name": ERASED, "order": {"total": ERASED}}
    assert conversation.rating_score == 4  # the figures stay
    assert messages == [ERASED, ERASED]
    assert (left.content, left.contact, left.resolution_note) == (ERASED, ERASED, ERASED)
    events = _events(db, conversation_id)
    assert events["note.created"].data == {"author_id": "alice", "text": ERASED}
    assert events[EventType.TRANSFERRED].data["note"] == ERASED
    assert events[EventType.TRANSFERRED].data["from_agent_id"] == "alice"
    # What the policy wrote is no customer's: it stays.
    assert events[EventType.CLOSED].data["text"] == POLICY.closing_text("overflow")


def test_an_erase_again_changes_nothing_and_keeps_when_it_was_first_erased(db: Database) -> None:
    conversation_id = _closed_with_every_text(db, Canary())
    erase_conversation(db, conversation_id=conversation_id)
    before = rows_holding(db, conversation_id)

    assert erase_conversation(db, conversation_id=conversation_id) == Erased()

    assert rows_holding(db, conversation_id) == before


def test_text_that_comes_after_the_erase_is_erased_or_refused(db: Database) -> None:
    canary = Canary()
    conversation_id = _conversation(db)
    lifecycle.close_conversation(
        db=db, policy=POLICY, conversation_id=conversation_id, reason="out_of_hours"
    )
    erase_conversation(db, conversation_id=conversation_id)

    # The visitor's rating window and a left message's offer outlive the erase.
    lifecycle.record_rating(
        db=db, conversation_id=conversation_id, score=2, comment=canary("late comment")
    )
    with pytest.raises(LeftMessageNotOffered):
        store_left_message(db, conversation_id=conversation_id, content=canary("late message"))
    assert rows_holding(db, canary.prefix) == {}


def test_only_a_closed_conversation_is_erased(db: Database) -> None:
    canary = Canary()
    conversation_id = _conversation(db)
    store_unsignalled(
        db,
        conversation_id=conversation_id,
        sender_role=Role.VISITOR,
        sender_id="visitor",
        content=canary("open"),
    )
    with pytest.raises(ConversationOpen):
        erase_conversation(db, conversation_id=conversation_id)
    with pytest.raises(ConversationNotFound):
        erase_conversation(db, conversation_id="nobody")
    assert rows_holding(db, canary.prefix)


def _erased(db: Database, conversation_ids: list[str]) -> list[bool]:
    with db.read() as session:
        erased_at = dict(
            session.execute(
                sa.select(col(Conversation.id), col(Conversation.erased_at)).where(
                    col(Conversation.id).in_(conversation_ids)
                )
            ).all()
        )
    return [erased_at[conversation_id] is not None for conversation_id in conversation_ids]


def test_retention_erases_what_closed_long_enough_ago_in_batches(db: Database) -> None:
    canary = Canary()
    old = [
        closed_conversation(
            db, content=canary(f"closed {2 + index} days ago"), closed_ago=timedelta(days=2 + index)
        )
        for index in range(3)
    ]
    recent = closed_conversation(
        db, content=canary("closed an hour ago"), closed_ago=timedelta(hours=1)
    )
    open_one = _conversation(db)
    day = timedelta(days=1)

    assert erase_expired_transcripts(db, older_than=day, limit=2) == (Erased(2, 2), True)
    assert _erased(db, old) == [False, True, True]  # the longest closed first
    assert erase_expired_transcripts(db, older_than=day, limit=2) == (Erased(1, 1), False)
    assert erase_expired_transcripts(db, older_than=day, limit=2) == (Erased(), False)

    assert _erased(db, [*old, recent, open_one]) == [True, True, True, False, False]
    kept = rows_holding(db, canary.prefix)["message"]
    assert len(kept) == 1 and "closed an hour ago" in kept[0]


def test_retention_deletes_the_files_of_what_it_erases(db: Database, tmp_path: Path) -> None:
    objects = LocalStore(tmp_path / "attachments")
    old = closed_conversation(db, content="a photo's caption", closed_ago=timedelta(days=3))
    recent = closed_conversation(db, content="another caption", closed_ago=timedelta(hours=1))
    keys: dict[str, tuple[str, str]] = {}
    for conversation_id in (old, recent):
        attachment_id = new_attachment_id()
        key, thumbnail = object_keys(conversation_id, attachment_id, ".jpg")
        objects.put(key, b"the photo", "image/jpeg")
        objects.put(thumbnail, b"its thumbnail", "image/jpeg")
        with db.write() as session:
            session.add(
                Attachment(
                    id=attachment_id,
                    conversation_id=conversation_id,
                    uploaded_by_role=Role.VISITOR,
                    uploaded_by_id=f"visitor:{conversation_id}",
                    kind="image",
                    content_type="image/jpeg",
                    size=9,
                    object_key=key,
                    thumbnail_key=thumbnail,
                )
            )
        keys[conversation_id] = (key, thumbnail)

    erased, _ = erase_expired_transcripts(
        db, older_than=timedelta(days=1), limit=10, objects=objects
    )
    assert erased == Erased(1, 1)
    for key in keys[old]:
        with pytest.raises(KeyError):
            objects.get(key)
    assert [objects.get(key) for key in keys[recent]] == [b"the photo", b"its thumbnail"]
    with db.read() as session:
        assert session.exec(select(Attachment.conversation_id)).all() == [recent]


def test_retention_erases_tickets_closed_long_enough_ago_in_batches(db: Database) -> None:
    canary = Canary()
    old = [
        app_ticket(db, canary, customer_id=f"c-{index}", closed_ago=timedelta(days=2 + index))
        for index in range(3)
    ]
    recent = app_ticket(db, canary, customer_id="c-recent", closed_ago=timedelta(hours=1))
    open_one = app_ticket(db, canary, customer_id="c-open", closed_ago=None)
    day = timedelta(days=1)

    assert erase_expired_tickets(db, older_than=day, limit=2) == (2, True)
    assert [set(ticket_texts(db, ticket)) == {ERASED} for ticket in old] == [False, True, True]
    assert erase_expired_tickets(db, older_than=day, limit=2) == (1, False)
    assert erase_expired_tickets(db, older_than=day, limit=2) == (0, False)

    assert all(set(ticket_texts(db, ticket)) == {ERASED} for ticket in old)
    for kept in (recent, open_one):
        assert ERASED not in ticket_texts(db, kept)
    assert len(rows_holding(db, canary.prefix)["ticket"]) == 2  # the recent and the open one


def test_retention_erases_a_comment_written_after_a_customers_erase(db: Database) -> None:
    canary = Canary()
    ticket = app_ticket(db, canary, customer_id="c-1", closed_ago=None)
    assert erase_customer_tickets(db, customer_id="c-1") == 1
    # The ticket still open, the customer writes again; then it closes, long ago.
    add_comment(
        db, ticket_id=ticket, author=Author(Role.APP, "app"), content=canary("again"), public=True
    )
    close_ticket(db, ticket, closed_ago=timedelta(days=3))

    assert erase_expired_tickets(db, older_than=timedelta(days=1), limit=10) == (1, False)
    assert set(ticket_texts(db, ticket)) == {ERASED}
    assert erase_expired_tickets(db, older_than=timedelta(days=1), limit=10) == (0, False)
