"""The transcript retention run's activity: one batch of expired transcripts erased, as the
policy says (how long transcripts are kept, how many a batch)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from temporalio import activity

from domain.policy import PolicySource
from domain.types import RetentionBatch
from media.storage import ObjectStore
from store.db import Database
from store.erasure import erase_expired_transcripts
from store.tickets import erase_expired_tickets

log = logging.getLogger("switchboard.retention")


class RetentionActivities:
    def __init__(self, *, db: Database, policy: PolicySource, objects: ObjectStore) -> None:
        self.db = db
        self.policy = policy
        self.objects = objects  # the attachments' files, erased with their transcripts

    @activity.defn(name="erase_expired_transcripts")
    async def erase_expired_transcripts(self) -> RetentionBatch:
        """Erase up to a batch of conversations, and a batch of tickets, closed longer ago
        than `retention.transcripts` (none without it: transcripts are kept)."""
        retention = self.policy.current().retention
        if retention.transcripts is None:
            return RetentionBatch(conversations=0, messages=0, more=False)
        erased, more_conversations = await asyncio.to_thread(
            erase_expired_transcripts,
            self.db,
            older_than=retention.transcripts,
            limit=retention.batch_size,
            objects=self.objects,
        )
        tickets, more_tickets = await asyncio.to_thread(
            erase_expired_tickets,
            self.db,
            older_than=retention.transcripts,
            limit=retention.batch_size,
        )
        if erased.conversations or tickets:
            log.info(
                "retention erased %d conversations (%d messages) and %d tickets",
                erased.conversations,
                erased.messages,
                tickets,
            )
        return RetentionBatch(
            conversations=erased.conversations,
            messages=erased.messages,
            tickets=tickets,
            more=more_conversations or more_tickets,
        )

    def all(self) -> list[Callable[..., object]]:
        return [self.erase_expired_transcripts]
