"""The bot phase's writes and figures: the questions waiting for an answer, the bot's answers
(each written once, with its messages), the hand-off to a person, and what ops count.

A visitor message is answered once: its `bot_turn` row and the bot's messages are written in
one transaction, and a repeat (an activity retried after a worker died) finds the row and
writes nothing. The questions' text stays in the message rows: the workflow hears seqs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from domain.policy import Policy, folded
from domain.types import (
    ConversationState,
    EventType,
    MessageType,
    Role,
    RouteResult,
)
from store.db import Database
from store.erasure import ERASED
from store.events import ConversationNotFound, append_event
from store.lifecycle import group_open_at, mark_queued
from store.models import BotTurn, Conversation, Message, utcnow

# The bot's messages: one sender for the lot.
BOT_SENDER = "bot"
# Kinds of answer.
ANSWER = "answer"
MISS = "miss"
HANDOFF = "handoff"
# The hand-off after too many misses in a row (activities/bot.py has the other reasons).
MISSES = "misses"


@dataclass(frozen=True)
class Question:
    """A visitor message waiting for the bot's answer."""

    seq: int
    type: str
    text: str  # a text or emoji message's text; "" for an image, video or file


@dataclass(frozen=True)
class BotText:
    text: str
    quick_replies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    """What the bot says to one question, and what it decided."""

    kind: str  # ANSWER | MISS | HANDOFF
    texts: tuple[BotText, ...] = ()
    entry_id: str | None = None
    score: float | None = None
    handoff_reason: str | None = None
    handoff_group: str | None = None


@dataclass(frozen=True)
class Context:
    """What the conversation started with: what an external bot is told."""

    channel: str
    entry: str | None
    language: str | None
    tier: str | None
    attributes: dict[str, object] = field(default_factory=dict)


def waiting(
    db: Database, *, conversation_id: str, after_seq: int, limit: int
) -> tuple[list[Question], int, Context]:
    """The visitor messages after `after_seq` (oldest first, at most `limit`), the misses in a
    row before them, and the conversation's context."""
    with db.read() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        rows = session.exec(
            select(Message.seq, Message.type, Message.content)
            .where(
                Message.conversation_id == conversation_id,
                Message.sender_role == Role.VISITOR,
                col(Message.seq) > after_seq,
            )
            .order_by(col(Message.seq))
            .limit(limit)
        ).all()
        kinds = session.exec(
            select(BotTurn.kind)
            .where(
                BotTurn.conversation_id == conversation_id, col(BotTurn.visitor_seq) <= after_seq
            )
            .order_by(col(BotTurn.visitor_seq).desc())
        ).all()
        context = Context(
            channel=conversation.channel,
            entry=conversation.entry,
            language=conversation.language,
            tier=conversation.tier,
            attributes=dict(conversation.attributes or {}),
        )
    questions = [
        Question(seq, type, content if type in (MessageType.TEXT, MessageType.EMOJI) else "")
        for seq, type, content in rows
    ]
    misses = 0
    for kind in kinds:
        if kind != MISS:
            break
        misses += 1
    return questions, misses, context


def stored_turn(db: Database, *, conversation_id: str, visitor_seq: int) -> BotTurn | None:
    with db.read() as session:
        return _turn(session, conversation_id, visitor_seq)


def _turn(session: Session, conversation_id: str, visitor_seq: int) -> BotTurn | None:
    return session.exec(
        select(BotTurn).where(
            BotTurn.conversation_id == conversation_id, BotTurn.visitor_seq == visitor_seq
        )
    ).first()


def record_turn(db: Database, *, conversation_id: str, visitor_seq: int, answer: Answer) -> BotTurn:
    """Write the bot's answer to the visitor's message `visitor_seq`, its messages with it, once:
    a repeat answers the first. A conversation no longer with the bot (closed meanwhile) gets
    no messages; the turn is still written, so its repeat agrees."""
    with db.write() as session:
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        if (turn := _turn(session, conversation_id, visitor_seq)) is not None:
            return turn
        last_seq = 0
        if conversation.state == ConversationState.BOT:
            for number, said in enumerate(answer.texts):
                last_seq = _bot_message(session, conversation_id, visitor_seq, number, said)
        turn = BotTurn(
            conversation_id=conversation_id,
            visitor_seq=visitor_seq,
            kind=answer.kind,
            entry_id=answer.entry_id,
            score=answer.score,
            handoff_reason=answer.handoff_reason,
            handoff_group=answer.handoff_group,
            last_seq=last_seq,
        )
        session.add(turn)
        session.flush()
        session.refresh(turn)
        return turn


def _bot_message(
    session: Session, conversation_id: str, visitor_seq: int, number: int, said: BotText
) -> int:
    """One of the bot's messages: a `message.created` like any other, with its quick replies."""
    client_message_id = f"bot-{visitor_seq}-{number}"
    event = append_event(
        session,
        conversation_id=conversation_id,
        type=EventType.MESSAGE_CREATED,
        data={
            "sender_role": Role.BOT,
            "client_message_id": client_message_id,
            "message_type": MessageType.TEXT,
            "quick_replies": list(said.quick_replies),
        },
        staff_data={"sender_id": BOT_SENDER},
    )
    session.add(
        Message(
            conversation_id=conversation_id,
            seq=event.seq,
            sender_role=Role.BOT,
            sender_id=BOT_SENDER,
            client_message_id=client_message_id,
            type=MessageType.TEXT,
            content=said.text,
            created_at=event.at,
        )
    )
    return event.seq


def hand_off(
    *,
    db: Database,
    policy: Policy,
    conversation_id: str,
    reason: str,
    skill_group: str | None,
    at: datetime,
) -> RouteResult:
    """The bot passes the conversation to a person (转人工): to `skill_group` if the policy has
    it, else the routed group; whether that group is open at `at`, and if not when it opens.
    A repeat keeps the first hand-off."""
    with db.write() as session:
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        if conversation.handoff_reason is None:
            conversation.handoff_reason = reason
            conversation.handed_off_at = utcnow()
            if skill_group in policy.skill_group_names:
                conversation.skill_group = skill_group
        group, is_open, next_opening = group_open_at(policy, conversation.skill_group, at)
        entries = session.exec(
            select(BotTurn.entry_id)
            .where(BotTurn.conversation_id == conversation_id, col(BotTurn.entry_id).is_not(None))
            .order_by(col(BotTurn.visitor_seq))
        ).all()
        append_event(
            session,
            conversation_id=conversation_id,
            type=EventType.HANDED_OFF,
            data={
                "reason": conversation.handoff_reason,
                "sender_role": Role.SYSTEM,
                # Out of hours the close that follows says when it opens, with a left message.
                "text": policy.texts.handoff if is_open else None,
            },
            staff_data={"skill_group": group.name, "matched_entries": list(dict.fromkeys(entries))},
            dedupe_key="handed_off",
        )
        if is_open and conversation.state == ConversationState.BOT:
            mark_queued(session, conversation, group.name)
        session.add(conversation)
        return RouteResult(
            skill_group=group.name,
            priority=conversation.priority,
            rule=conversation.routing_rule,
            is_open=is_open,
            next_opening=next_opening,
            policy_version=policy.version,
        )


# --- what ops see -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BotFigures:
    """Since a given time: conversations the bot resolved (closed without a hand-off), hand-offs
    by reason, answers per FAQ entry, visitor messages answered and of those the misses; and
    how many conversations are with a bot now."""

    with_bot: int
    resolved: int
    handoffs: dict[str, int]
    entry_hits: dict[str, int]
    answers: int
    misses: int


def figures(db: Database, *, since: datetime) -> BotFigures:
    with db.read() as session:
        with_bot = session.exec(
            select(sa.func.count()).where(Conversation.state == ConversationState.BOT)
        ).one()
        resolved = session.exec(
            select(sa.func.count()).where(
                col(Conversation.bot).is_not(None),
                col(Conversation.handoff_reason).is_(None),
                Conversation.state == ConversationState.CLOSED,
                col(Conversation.closed_at) >= since,
            )
        ).one()
        handoffs = session.exec(
            select(Conversation.handoff_reason, sa.func.count())
            .where(col(Conversation.handed_off_at) >= since)
            .group_by(col(Conversation.handoff_reason))
        ).all()
        kinds = session.exec(
            select(BotTurn.kind, BotTurn.entry_id, sa.func.count())
            .where(col(BotTurn.at) >= since)
            .group_by(col(BotTurn.kind), col(BotTurn.entry_id))
        ).all()
    entry_hits: Counter[str] = Counter()
    answers = misses = 0
    for kind, entry_id, count in kinds:
        if entry_id is not None:
            entry_hits[entry_id] += count
        answers += count
        if kind == MISS:
            misses += count
    return BotFigures(
        with_bot=with_bot,
        resolved=resolved,
        handoffs={reason: count for reason, count in handoffs if reason},
        entry_hits=dict(entry_hits.most_common()),
        answers=answers,
        misses=misses,
    )


@dataclass(frozen=True)
class Unanswered:
    question: str
    count: int
    last_asked_at: datetime


def unanswered(db: Database, *, since: datetime, limit: int) -> list[Unanswered]:
    """The questions the bot did not understand since `since`, the most asked first (the same
    question in other case or width counts once): what to add to the FAQ next."""
    with db.read() as session:
        rows = session.exec(
            select(Message.content, BotTurn.at)
            .join(
                Message,
                sa.and_(
                    col(Message.conversation_id) == col(BotTurn.conversation_id),
                    col(Message.seq) == col(BotTurn.visitor_seq),
                ),
            )
            .where(
                # A miss, or the one that made too many in a row (a hand-off, unanswered too).
                sa.or_(BotTurn.kind == MISS, BotTurn.handoff_reason == MISSES),
                col(BotTurn.at) >= since,
                col(Message.type).in_((MessageType.TEXT, MessageType.EMOJI)),
            )
        ).all()
    grouped: dict[str, tuple[str, int, datetime]] = {}
    for content, at in rows:
        if content == ERASED:
            continue
        text = " ".join(content.split())
        key = folded(text)
        shown, count, last = grouped.get(key, (text, 0, at))
        grouped[key] = (shown, count + 1, max(last, at))
    ranked = sorted(grouped.values(), key=lambda item: (-item[1], -item[2].timestamp()))
    return [Unanswered(text, count, last) for text, count, last in ranked[:limit]]
