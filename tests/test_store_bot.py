"""store/bot.py on SQLite and PostgreSQL, without Temporal: an answer is written once with its
messages, a hand-off once; what ops count (figures, the unanswered questions)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.policy import Policy
from domain.types import ConversationState, EventType, MessageType, Role
from store import bot
from store.bot import ANSWER, HANDOFF, MISS, MISSES, Answer, BotText
from store.conversations import conversation_events
from store.db import Database
from store.erasure import erase_conversation
from store.messages import store_message
from store.models import Conversation, utcnow
from tests.support.data import new_conversation

POLICY = Policy.model_validate({"skill_groups": [{"name": "general"}, {"name": "after_sales"}]})


def _with_bot(db: Database) -> str:
    with db.write() as session:
        return new_conversation(session, state="bot", bot="faq", skill_group="general").id


def _ask(db: Database, conversation_id: str, text: str) -> int:
    return store_message(
        db,
        conversation_id=conversation_id,
        sender_role=Role.VISITOR,
        sender_id="customer",
        client_message_id=text,
        type=MessageType.TEXT,
        content=text,
    ).message.seq


def _close(db: Database, conversation_id: str) -> None:
    with db.write() as session:
        row = session.get(Conversation, conversation_id)
        assert row is not None
        row.state = ConversationState.CLOSED
        row.open_customer_key = None
        row.closed_at = utcnow()
        session.add(row)


def _bot_messages(db: Database, conversation_id: str) -> list[tuple[str | None, list[str]]]:
    events = conversation_events(
        db, conversation_id=conversation_id, after_seq=0, limit=100, staff=False
    )
    return [
        (event.data.get("content"), event.data["quick_replies"])
        for event in events
        if event.type == EventType.MESSAGE_CREATED and event.data["sender_role"] == Role.BOT
    ]


def test_an_answer_is_written_once_with_its_messages(db: Database) -> None:
    cid = _with_bot(db)
    asked = _ask(db, cid, "Where is my parcel?")
    questions, misses, context = bot.waiting(db, conversation_id=cid, after_seq=0, limit=10)
    assert [(q.seq, q.text) for q in questions] == [(asked, "Where is my parcel?")]
    assert (misses, context.channel) == (0, "web")

    answer = Answer(
        ANSWER,
        (BotText("Tracking is under Orders.", ("Talk to a person",)),),
        entry_id="track_order",
        score=0.9,
    )
    first = bot.record_turn(db, conversation_id=cid, visitor_seq=asked, answer=answer)
    other = Answer(MISS, (BotText("Sorry?"),))
    again = bot.record_turn(db, conversation_id=cid, visitor_seq=asked, answer=other)
    assert (again.id, again.kind, again.last_seq) == (first.id, ANSWER, first.last_seq)
    assert first.last_seq > asked
    assert _bot_messages(db, cid) == [("Tracking is under Orders.", ["Talk to a person"])]
    assert bot.stored_turn(db, conversation_id=cid, visitor_seq=asked) is not None
    assert bot.waiting(db, conversation_id=cid, after_seq=asked, limit=10)[0] == []


def test_misses_in_a_row_are_counted_from_the_stored_answers(db: Database) -> None:
    cid = _with_bot(db)
    seqs = [_ask(db, cid, text) for text in ("a", "b", "c")]
    bot.record_turn(db, conversation_id=cid, visitor_seq=seqs[0], answer=Answer(ANSWER))
    bot.record_turn(db, conversation_id=cid, visitor_seq=seqs[1], answer=Answer(MISS))
    bot.record_turn(db, conversation_id=cid, visitor_seq=seqs[2], answer=Answer(MISS))
    assert bot.waiting(db, conversation_id=cid, after_seq=seqs[1], limit=10)[1] == 1
    assert bot.waiting(db, conversation_id=cid, after_seq=seqs[2], limit=10)[1] == 2
    assert bot.waiting(db, conversation_id=cid, after_seq=seqs[0], limit=10)[1] == 0


def test_a_conversation_no_longer_with_the_bot_gets_no_message(db: Database) -> None:
    cid = _with_bot(db)
    asked = _ask(db, cid, "Hello")
    _close(db, cid)
    turn = bot.record_turn(
        db, conversation_id=cid, visitor_seq=asked, answer=Answer(ANSWER, (BotText("Hi"),))
    )
    assert turn.last_seq == 0 and _bot_messages(db, cid) == []


def test_the_hand_off_is_written_once_and_queues_where_it_says(db: Database) -> None:
    cid = _with_bot(db)
    asked = _ask(db, cid, "I want to complain")
    bot.record_turn(
        db,
        conversation_id=cid,
        visitor_seq=asked,
        answer=Answer(
            HANDOFF, entry_id="complaint", handoff_reason="entry", handoff_group="after_sales"
        ),
    )
    at = utcnow()
    route = bot.hand_off(
        db=db, policy=POLICY, conversation_id=cid, reason="entry", skill_group="after_sales", at=at
    )
    again = bot.hand_off(
        db=db, policy=POLICY, conversation_id=cid, reason="misses", skill_group="nowhere", at=at
    )
    assert (route.skill_group, route.is_open, again.skill_group) == (
        "after_sales",
        True,
        "after_sales",
    )
    staff = conversation_events(db, conversation_id=cid, after_seq=0, limit=100, staff=True)
    handed = [e for e in staff if e.type == EventType.HANDED_OFF]
    assert len(handed) == 1
    assert handed[0].data == {
        "reason": "entry",
        "sender_role": "system",
        "text": POLICY.texts.handoff,
        "skill_group": "after_sales",
        "matched_entries": ["complaint"],
    }
    states = [e.data["state"] for e in staff if e.type == EventType.STATE_CHANGED]
    assert states == ["queued"]
    visitor = conversation_events(db, conversation_id=cid, after_seq=0, limit=100, staff=False)
    seen = next(e for e in visitor if e.type == EventType.HANDED_OFF)
    assert "matched_entries" not in seen.data and "skill_group" not in seen.data


def test_an_unknown_group_hands_off_to_the_routed_one(db: Database) -> None:
    cid = _with_bot(db)
    route = bot.hand_off(
        db=db,
        policy=POLICY,
        conversation_id=cid,
        reason="bot_handoff",
        skill_group="no_such_group",
        at=utcnow(),
    )
    assert route.skill_group == "general"


def test_figures_and_the_unanswered_questions(db: Database) -> None:
    since = utcnow() - timedelta(minutes=1)
    first, second, erased = _with_bot(db), _with_bot(db), _with_bot(db)
    for cid, text in (
        (first, "Purple giraffes?"),
        (second, "purple  GIRAFFES?"),
        (erased, "My card 4111 was refused"),
    ):
        seq = _ask(db, cid, text)
        bot.record_turn(db, conversation_id=cid, visitor_seq=seq, answer=Answer(MISS))
    seq = _ask(db, first, "Blue elephants?")
    bot.record_turn(
        db, conversation_id=first, visitor_seq=seq, answer=Answer(HANDOFF, handoff_reason=MISSES)
    )
    bot.hand_off(
        db=db, policy=POLICY, conversation_id=first, reason=MISSES, skill_group=None, at=utcnow()
    )
    seq = _ask(db, second, "Where is my parcel?")
    bot.record_turn(
        db,
        conversation_id=second,
        visitor_seq=seq,
        answer=Answer(ANSWER, entry_id="track_order", score=0.8),
    )
    _close(db, erased)
    erase_conversation(db, conversation_id=erased)

    questions = bot.unanswered(db, since=since, limit=10)
    assert [(q.question, q.count) for q in questions] == [
        ("Purple giraffes?", 2),
        ("Blue elephants?", 1),
    ]
    assert bot.unanswered(db, since=utcnow() + timedelta(minutes=1), limit=10) == []
    assert len(bot.unanswered(db, since=since, limit=1)) == 1

    figures = bot.figures(db, since=since)
    assert figures.handoffs == {MISSES: 1}
    assert figures.entry_hits == {"track_order": 1}
    assert (figures.answers, figures.misses) == (5, 3)
    assert figures.with_bot == 1  # the first is queued now, the erased one closed
    assert figures.resolved == 1  # the erased one: closed with no hand-off


@pytest.mark.parametrize("reason", ["bot_resolved", "visitor_closed"])
def test_a_conversation_the_bot_closed_alone_counts_as_resolved(db: Database, reason: str) -> None:
    since = utcnow() - timedelta(minutes=1)
    with db.write() as session:
        new_conversation(
            session,
            state="closed",
            bot="faq",
            close_reason=reason,
            closed_at=utcnow(),
            open_customer_key=None,
        )
        new_conversation(
            session,
            state="closed",
            bot="faq",
            close_reason="agent_closed",
            handoff_reason="asked_for_person",
            handed_off_at=utcnow(),
            closed_at=utcnow(),
            open_customer_key=None,
        )
    assert bot.figures(db, since=since).resolved == 1
