"""store/left_messages.py on SQLite and PostgreSQL, without Temporal: leaving a message after an
out-of-hours or overflow close (once), listing them for the team, resolving them."""

from __future__ import annotations

from typing import Any

import pytest

from domain.types import CloseReason, EventType, Role
from store.conversations import conversation_events
from store.db import Database
from store.events import ConversationNotFound
from store.left_messages import (
    LeftMessageExists,
    LeftMessageNotFound,
    LeftMessageNotOffered,
    LeftMessageResolved,
    NotYourSkillGroup,
    left_messages,
    record_resolution,
    store_left_message,
)
from tests.support.data import add_agent, new_conversation


def _closed(db: Database, reason: str, skill_group: str = "general") -> str:
    with db.write() as session:
        return new_conversation(
            session,
            state="closed",
            close_reason=reason,
            skill_group=skill_group,
            open_customer_key=None,
        ).id


def test_a_message_is_left_once_after_an_out_of_hours_or_overflow_close(db: Database) -> None:
    conversation_id = _closed(db, CloseReason.OUT_OF_HOURS, skill_group="after_sales")
    message = store_left_message(
        db, conversation_id=conversation_id, content="Call me back", contact="555-0100"
    )
    assert message.id is not None
    assert (message.customer_id, message.skill_group, message.status, message.contact) == (
        f"customer-{conversation_id}",
        "after_sales",
        "open",
        "555-0100",
    )
    events = conversation_events(
        db, conversation_id=conversation_id, after_seq=0, limit=10, staff=True
    )
    assert [(event.type, event.data) for event in events] == [
        (EventType.LEFT_MESSAGE_CREATED, {"left_message_id": message.id})
    ]
    with pytest.raises(LeftMessageExists):
        store_left_message(db, conversation_id=conversation_id, content="Again")
    assert (
        len(
            conversation_events(
                db, conversation_id=conversation_id, after_seq=0, limit=10, staff=True
            )
        )
        == 1
    )

    overflowed = _closed(db, CloseReason.OVERFLOW)
    assert store_left_message(db, conversation_id=overflowed, content="Hi").contact is None


def test_no_message_is_left_elsewhere(db: Database) -> None:
    with db.write() as session:
        open_one = new_conversation(session, state="active").id
    served = _closed(db, CloseReason.AGENT_CLOSED)
    for conversation_id in (open_one, served):
        with pytest.raises(LeftMessageNotOffered):
            store_left_message(db, conversation_id=conversation_id, content="Hello")
        assert (
            conversation_events(
                db, conversation_id=conversation_id, after_seq=0, limit=5, staff=True
            )
            == []
        )
    with pytest.raises(ConversationNotFound):
        store_left_message(db, conversation_id="nope", content="Hello")
    assert left_messages(db, status=None) == []


def test_the_list_filters_by_status_group_and_the_agents_groups(db: Database) -> None:
    add_agent(db, "grace", max_concurrent=1, skill_groups=["after_sales"])
    general, after_sales, resolved = (
        store_left_message(db, conversation_id=_closed(db, "overflow", group), content=group).id
        for group in ("general", "after_sales", "after_sales")
    )
    assert resolved is not None
    record_resolution(db, left_message_id=resolved, by_role=Role.ADMIN, by_id="admin")

    def ids(**filters: Any) -> list[int | None]:
        return [message.id for message in left_messages(db, **filters)]

    assert ids() == [general, after_sales]  # open ones, oldest first
    assert ids(status="resolved") == [resolved]
    assert ids(status=None) == [general, after_sales, resolved]
    assert ids(status=None, skill_group="general") == [general]
    assert ids(agent_id="grace") == [after_sales]
    assert ids(agent_id="grace", skill_group="general") == []
    assert ids(agent_id="nobody") == []
    assert ids(status=None, limit=2) == [general, after_sales]


def test_resolving_checks_the_message_the_agents_group_and_that_it_is_open(
    db: Database,
) -> None:
    add_agent(db, "heidi", max_concurrent=1, skill_groups=["general"])
    add_agent(db, "ivan", max_concurrent=1, skill_groups=["after_sales"])
    conversation_id = _closed(db, CloseReason.OUT_OF_HOURS)
    left = store_left_message(db, conversation_id=conversation_id, content="Call me").id
    assert left is not None

    with pytest.raises(LeftMessageNotFound):
        record_resolution(db, left_message_id=left + 1, by_role=Role.ADMIN, by_id="admin")
    with pytest.raises(NotYourSkillGroup):
        record_resolution(db, left_message_id=left, by_role=Role.AGENT, by_id="ivan")

    resolved = record_resolution(
        db, left_message_id=left, by_role=Role.AGENT, by_id="heidi", note="called back"
    )
    assert (resolved.status, resolved.resolved_by, resolved.resolution_note) == (
        "resolved",
        "heidi",
        "called back",
    )
    assert resolved.resolved_at is not None
    with pytest.raises(LeftMessageResolved):
        record_resolution(db, left_message_id=left, by_role=Role.ADMIN, by_id="admin")
    events = conversation_events(
        db, conversation_id=conversation_id, after_seq=0, limit=10, staff=True
    )
    assert [(event.type, event.data) for event in events][1:] == [
        (EventType.LEFT_MESSAGE_RESOLVED, {"left_message_id": left, "resolved_by": "heidi"})
    ]
