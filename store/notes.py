"""Staff notes: what agents and admins write about a conversation for each other (an internal
note, the note that goes with a transfer). Events for staff alone: never the visitor's, and
never through Temporal (the workflow hears of none of them)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from domain.types import Audience, EventType
from store.db import Database
from store.erasure import ERASED
from store.events import ConversationNotFound, EventView, append_event, event_view
from store.models import Conversation, Event


def write_note(
    session: Session,
    *,
    conversation_id: str,
    by_id: str,
    text: str,
    kind: str = "note",
    dedupe_key: str | None = None,
    also_to_agents: Iterable[str | None] = (),
) -> Event:
    """A staff-only `note.created` event in the caller's transaction (once per dedupe key)."""
    return append_event(
        session,
        conversation_id=conversation_id,
        type=EventType.NOTE_CREATED,
        data={"kind": kind, "by": by_id, "text": text},
        audience=Audience.STAFF,
        dedupe_key=dedupe_key,
        also_to_agents=also_to_agents,
    )


def add_note(db: Database, *, conversation_id: str, by_id: str, text: str) -> EventView:
    """An internal note on the conversation. Unknown → ConversationNotFound."""
    with db.write() as session:
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        if conversation.erased_at is not None:  # what is written about it is erased too
            text = ERASED
        event = write_note(session, conversation_id=conversation_id, by_id=by_id, text=text)
        return event_view(event, staff=True)


def add_transfer_note(
    db: Database, *, conversation_id: str, by_id: str, text: str
) -> EventView | None:
    """The note that goes with this caller's newest transfer of the conversation, for the agent
    it went to and the one it came from (once: a retried transfer writes it once). None if
    the caller has not transferred it."""
    with db.write() as session:
        transfers = session.exec(
            select(Event)
            .where(Event.conversation_id == conversation_id, Event.type == EventType.TRANSFERRED)
            .order_by(col(Event.seq).desc())
        )
        for transfer in transfers:
            details = {**transfer.data, **(transfer.staff_data or {})}
            if details.get("by") != by_id:
                continue
            event = write_note(
                session,
                conversation_id=conversation_id,
                by_id=by_id,
                text=text,
                kind="transfer",
                dedupe_key=f"note:transfer:{transfer.seq}",
                also_to_agents=[details.get("from_agent_id")],
            )
            return event_view(event, staff=True)
    return None
