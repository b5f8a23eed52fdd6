"""Canaries: a unique string put in every free-text field a test writes, and the places to
look for it afterwards, as an operator with the database and the Temporal UI would: every
table's rows as text, and every run's history of a conversation's workflow as JSON."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory

from store.db import Database
from tests.support.histories import runs


@dataclass(frozen=True)
class Canary:
    """`canary("rating comment")` is a text no other test writes, under one prefix: whatever
    holds the prefix holds one of them (`canary.prefix not in text`)."""

    prefix: str = field(default_factory=lambda: f"CANARY{uuid.uuid4().hex[:12]}")

    def __call__(self, what: str) -> str:
        return f"{self.prefix} {what}"


def rows_as_text(db: Database) -> dict[str, list[str]]:
    """Every table of the database (as it is, not as the code declares it), each row as text."""
    tables: dict[str, list[str]] = {}
    with db.engine.connect() as connection:
        metadata = sa.MetaData()
        metadata.reflect(connection)
        for name, table in sorted(metadata.tables.items()):
            rows = connection.execute(sa.select(table)).all()
            tables[name] = [repr(tuple(row)) for row in rows]
    return tables


def rows_holding(db: Database, text: str) -> dict[str, list[str]]:
    """The rows, table by table, that hold `text` anywhere (nothing: an empty dict)."""
    found = {name: [row for row in rows if text in row] for name, rows in rows_as_text(db).items()}
    return {name: rows for name, rows in found.items() if rows}


def _payload_texts(message: Message) -> Iterator[str]:
    """The bytes of every payload anywhere in `message` (search attributes, memos, markers
    included) as text: in the history's JSON they are base64, where no search finds a canary."""
    if isinstance(message, Payload):
        yield message.data.decode("utf-8", "replace")
        yield from (value.decode("utf-8", "replace") for value in message.metadata.values())
        return
    for descriptor, value in message.ListFields():
        kind = descriptor.message_type
        if kind is None:
            continue
        if kind.GetOptions().map_entry:
            children = list(value.values()) if kind.fields_by_name["value"].message_type else []
        else:
            children = list(value) if descriptor.is_repeated else [value]
        for child in children:
            yield from _payload_texts(child)


def history_text(history: WorkflowHistory) -> str:
    """All a history holds, as text: its JSON (ids, names, failure messages) and what every
    payload in it says."""
    decoded = (text for event in history.events for text in _payload_texts(event))
    return "\n".join([history.to_json(), *decoded])


async def histories_as_json(client: Client, conversation_id: str) -> list[str]:
    """Every run of the conversation's workflow (continue-as-new chain included), each
    history as text (history_text): its JSON and its payloads' contents."""
    return [history_text(history) for history in await runs(client, conversation_id)]


async def histories_holding(client: Client, conversation_ids: list[str], text: str) -> list[str]:
    """The conversations whose workflow histories hold `text` anywhere, by run."""
    found = []
    for conversation_id in conversation_ids:
        for index, history in enumerate(await histories_as_json(client, conversation_id)):
            if text in history:
                found.append(f"{conversation_id} run {index + 1}")
    return found
