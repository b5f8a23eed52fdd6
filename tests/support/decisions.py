"""Decisions taken because nothing happened, checked against what was stored (invariant 8): no
idle warning or idle close follows a message (the visitor's, or the agent's next) newer than
the agent message its countdown ran from, and no first-reply requeue follows a reply stored by
the agent who loses the conversation. Read from the database: the event log and the message
rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from domain.types import CloseReason, EventType, Role
from store.db import Database
from store.models import Event, Message


@dataclass(frozen=True)
class Transcript:
    """A conversation's event log and its messages, each in seq order."""

    conversation_id: str
    events: list[Event]
    messages: list[Message]

    def messages_between(self, after: int, before: int, **sender: str) -> list[Message]:
        """The messages with after < seq < before (whose sender_role, sender_id match)."""
        return [
            message
            for message in self.messages
            if after < message.seq < before
            and all(getattr(message, key) == value for key, value in sender.items())
        ]


def transcript(db: Database, conversation_id: str) -> Transcript:
    with db.read() as session:
        events = session.exec(
            select(Event).where(Event.conversation_id == conversation_id).order_by(col(Event.seq))
        ).all()
        messages = session.exec(
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(col(Message.seq))
        ).all()
    return Transcript(conversation_id, list(events), list(messages))


def _said(message: Message) -> str:
    return f"{message.sender_role} message {message.seq}"


def wrong_decisions(log: Transcript) -> list[str]:
    """What the log shows decided against the stored truth (empty: nothing)."""
    wrong: list[str] = []
    countdown_from: int | None = None  # the agent message of the latest idle warning
    assigned_at: dict[str, int] = {}  # agent → seq of their latest assignment
    for event in log.events:
        data: dict[str, Any] = {**event.data, **(event.staff_data or {})}  # staff's view
        where = f"{log.conversation_id}: {event.type} at seq {event.seq}"
        if event.type == EventType.ASSIGNED:
            assigned_at[data["agent_id"]] = event.seq
        elif event.type == EventType.IDLE_WARNING:
            countdown_from = data["after_agent_message_seq"]
            newer = log.messages_between(countdown_from, event.seq)
            if newer:
                wrong.append(
                    f"{where} (after agent message {countdown_from}) follows "
                    f"{', '.join(map(_said, newer))}"
                )
        elif event.type == EventType.CLOSED and data["close_reason"] == CloseReason.IDLE_TIMEOUT:
            if countdown_from is None:
                wrong.append(f"{where}: an idle close without an idle warning")
                continue
            newer = log.messages_between(countdown_from, event.seq)
            if newer:
                wrong.append(
                    f"{where} (idle since agent message {countdown_from}) follows "
                    f"{', '.join(map(_said, newer))}"
                )
        elif event.type == EventType.REQUEUED:
            agent_id = data["agent_id"]
            replies = log.messages_between(
                assigned_at.get(agent_id, 0), event.seq, sender_role=Role.AGENT, sender_id=agent_id
            )
            if replies:
                wrong.append(
                    f"{where} ({agent_id} never answered) follows their "
                    f"{', '.join(map(_said, replies))}"
                )
    return wrong
