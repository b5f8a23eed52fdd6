"""Attachments: the rows of files uploaded to a conversation, and the message that carries one.

The bytes live in the object store (media/storage.py) under keys of the conversation's; a row
says what our inspection found (media/inspect.py), never the name the file was uploaded with.
A message of type image, video or file carries an attachment its sender uploaded to that
conversation, once: its event shows the attachment's metadata and the paths to fetch it.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from domain.types import ConversationState, MessageType
from store.db import Database
from store.events import ConversationClosed, ConversationNotFound
from store.models import Attachment, Conversation
from store.rates import check_rate

# The message types that carry an attachment, and the kind of file each takes.
ATTACHED_TYPES: dict[str, str] = {
    MessageType.IMAGE: "image",
    MessageType.VIDEO: "video",
    MessageType.FILE: "file",
}


class AttachmentNotUsable(Exception):
    """The attachment named by a message is not one this sender may send with it: unknown in
    this conversation, another's, sent already, or of another kind. `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_attachment_id() -> str:
    return "att_" + secrets.token_hex(12)


def object_keys(conversation_id: str, attachment_id: str, extension: str) -> tuple[str, str]:
    """Where an attachment's bytes and its thumbnail's go in the object store."""
    base = f"conversations/{conversation_id}/{attachment_id}"
    return f"{base}{extension}", f"{base}.thumbnail.jpg"


def attachment_path(conversation_id: str, attachment_id: str) -> str:
    """The API path that serves the attachment (with a bearer token, or a ticket for it)."""
    return f"/v1/conversations/{conversation_id}/attachments/{attachment_id}"


def attachment_public(attachment: Attachment) -> dict[str, Any]:
    """The attachment as its message's event and the API show it: what it is, and where."""
    path = attachment_path(attachment.conversation_id, attachment.id)
    return {
        "attachment_id": attachment.id,
        "kind": attachment.kind,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "width": attachment.width,
        "height": attachment.height,
        "duration": attachment.duration,
        "url": path,
        "thumbnail_url": f"{path}/thumbnail" if attachment.thumbnail_key else None,
    }


# A sender's uploads to a conversation within the rate window.
_RECENT_UPLOADS = sa.select(sa.func.count(), sa.func.min(col(Attachment.created_at))).where(
    col(Attachment.conversation_id) == sa.bindparam("of_conversation"),
    col(Attachment.uploaded_by_id) == sa.bindparam("of_sender"),
    col(Attachment.created_at) > sa.bindparam("since"),
)
UPLOAD_WINDOW = timedelta(minutes=1)


def record_attachment(db: Database, attachment: Attachment, *, max_per_minute: int) -> Attachment:
    """Keep the row of an uploaded file (its bytes stored already) while its conversation is
    open, the conversation's row locked: unknown → ConversationNotFound; closed →
    ConversationClosed; the sender's `max_per_minute`-th upload there within a minute →
    RateLimited (counted in the database: across every API process)."""
    with db.write() as session:
        conversation = session.get(Conversation, attachment.conversation_id, with_for_update=True)
        if conversation is None:
            raise ConversationNotFound(attachment.conversation_id)
        if conversation.state == ConversationState.CLOSED:
            raise ConversationClosed(attachment.conversation_id)
        check_rate(
            session.connection(),
            _RECENT_UPLOADS,
            {"of_conversation": attachment.conversation_id, "of_sender": attachment.uploaded_by_id},
            limit=max_per_minute,
            window=UPLOAD_WINDOW,
        )
        session.add(attachment)
    return attachment


def find_attachment(db: Database, *, conversation_id: str, attachment_id: str) -> Attachment | None:
    with db.read() as session:
        found = session.get(Attachment, attachment_id)
    return found if found is not None and found.conversation_id == conversation_id else None


_ATTACHMENT = sa.select(*Attachment.__table__.columns).where(  # type: ignore[attr-defined]
    col(Attachment.id) == sa.bindparam("of_attachment")
)
_SENT_WITH = sa.select(*Attachment.__table__.columns).where(  # type: ignore[attr-defined]
    col(Attachment.conversation_id) == sa.bindparam("of_conversation"),
    col(Attachment.message_seq) == sa.bindparam("of_seq"),
)


def take_for_message(
    connection: Connection,
    *,
    conversation_id: str,
    attachment_id: str,
    sender_id: str,
    message_type: str,
) -> Attachment:
    """The attachment a new message of `sender_id` carries, in the message's transaction (the
    conversation's row locked): theirs, of this conversation, not sent yet, of the type's
    kind; else AttachmentNotUsable. `sent_with` marks it sent."""
    row = connection.execute(_ATTACHMENT, {"of_attachment": attachment_id}).first()
    if row is None or row.conversation_id != conversation_id:
        raise AttachmentNotUsable("no such attachment in this conversation: upload it first")
    attachment = Attachment(**row._asdict())
    if attachment.uploaded_by_id != sender_id:
        raise AttachmentNotUsable("the attachment was uploaded by someone else")
    if attachment.message_seq is not None:
        raise AttachmentNotUsable("the attachment was sent already: upload it again")
    if ATTACHED_TYPES[message_type] != attachment.kind:
        raise AttachmentNotUsable(
            f"the attachment is a {attachment.kind}: send it as a message of that type"
        )
    return attachment


def sent_with(connection: Connection, attachment_id: str, seq: int) -> None:
    connection.execute(
        sa.update(Attachment).where(col(Attachment.id) == attachment_id).values(message_seq=seq)
    )


def attachment_of_message(
    connection: Connection, *, conversation_id: str, seq: int
) -> Attachment | None:
    found = {"of_conversation": conversation_id, "of_seq": seq}
    row = connection.execute(_SENT_WITH, found).first()
    return None if row is None else Attachment(**row._asdict())


def conversation_object_keys(session: Session, conversation_id: str) -> list[str]:
    """Every object key of the conversation's attachments (bytes and thumbnails)."""
    rows = session.exec(
        select(Attachment.object_key, Attachment.thumbnail_key).where(
            Attachment.conversation_id == conversation_id
        )
    ).all()
    return [key for row in rows for key in row if key]


def forget_attachments(session: Session, conversation_id: str) -> int:
    """Delete the conversation's attachment rows (their objects deleted already): how many."""
    return session.execute(
        sa.delete(Attachment).where(col(Attachment.conversation_id) == conversation_id)
    ).rowcount
