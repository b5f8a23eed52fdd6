"""The webhook courier: every worker runs one beside its Temporal worker (worker.py). It sends
what the outbox (store/webhooks.py) owes each endpoint of the policy's [[webhooks]], signed,
in seq order per conversation (or ticket) and endpoint, retrying with a doubling backoff until
the policy's `webhook_delivery.give_up_after` has passed since the event.

The outbox is the truth: a delivery is marked delivered only after the endpoint's 2xx, so a
worker killed mid-send loses nothing; its claim runs out and the next look (this worker
restarted, or another) sends it again with the same `X-Switchboard-Delivery` id. Several
workers share the work: each claims what it sends, in a transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import httpx

from domain.policy import VISITOR_UNREAD, Policy, PolicySource, WebhookEndpoint
from domain.types import EventType
from domain.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from store import webhooks as outbox
from store.db import Database, unavailable
from store.models import utcnow

log = logging.getLogger("switchboard.webhooks")

DELIVERY_HEADER = "X-Switchboard-Delivery"
EVENT_HEADER = "X-Switchboard-Event"
# The longest wait between two attempts of one delivery (the backoff doubles up to it).
LONGEST_BACKOFF = timedelta(hours=1)
# Deliveries claimed per look (the first due of as many conversations), sent side by side.
BATCH = 50
_ERROR_CHARS = 300


def backoff(first: float, attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: first, twice it, four times… up to an
    hour."""
    seconds = first * 2 ** min(attempts - 1, 30)
    return min(timedelta(seconds=seconds), LONGEST_BACKOFF)


def body_of(item: outbox.Outgoing, data: dict[str, Any]) -> bytes:
    """What is posted: `{id, type, conversation_id | ticket_id, seq, at, data}` as compact
    JSON (the bytes the signature covers)."""
    payload = {
        "id": str(item.id),
        "type": item.type,
        f"{item.subject}_id": item.subject_id,
        "seq": item.seq,
        "at": item.at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def signed_headers(endpoint: WebhookEndpoint, item: outbox.Outgoing, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "Content-Type": "application/json",
        "User-Agent": "Switchboard-Webhooks",
        DELIVERY_HEADER: str(item.id),
        EVENT_HEADER: item.type,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(endpoint.secret.get_secret_value(), timestamp, body),
    }


class WebhookCourier:
    """Sends the deliveries due, every `poll_interval` seconds (at once again while there is
    a backlog)."""

    def __init__(
        self,
        *,
        db: Database,
        policy: PolicySource,
        poll_interval: float,
        timeout: float,
        first_retry: float,
    ) -> None:
        self.db = db
        self.policy = policy
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.first_retry = first_retry
        # Longer than a send may take: no other courier sends it meanwhile.
        self.hold = timedelta(seconds=2 * timeout + 1)

    async def run_forever(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
            while True:
                sent = 0
                try:
                    sent = await self.deliver_due(http)
                except Exception as exc:
                    if not unavailable(exc):
                        log.exception("webhook deliveries failed; trying again")
                    else:
                        log.warning("webhook deliveries wait for the database (%s)", exc)
                if sent < 1:
                    await asyncio.sleep(self.poll_interval)

    async def deliver_due(self, http: httpx.AsyncClient) -> int:
        """Send what is due now, side by side across conversations; how many were looked at."""
        policy = self.policy.current()
        endpoints = {endpoint.key: endpoint for endpoint in policy.webhooks}
        if not endpoints:
            return 0
        due = await asyncio.to_thread(
            outbox.claim_due, self.db, endpoints=list(endpoints), hold=self.hold, limit=BATCH
        )
        await asyncio.gather(
            *(self._deliver(http, policy, endpoints[item.endpoint], item) for item in due)
        )
        return len(due)

    async def _deliver(
        self,
        http: httpx.AsyncClient,
        policy: Policy,
        endpoint: WebhookEndpoint,
        item: outbox.Outgoing,
    ) -> None:
        data = await self._data(policy, item)
        if data is None:
            return
        body = body_of(item, data)
        error: str | None = None
        try:
            answer = await http.post(
                endpoint.url, content=body, headers=signed_headers(endpoint, item, body)
            )
            if not answer.is_success:
                error = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            # Its kind, never its text: an error may repeat the URL's query (a token).
            error = type(exc).__name__
        if error is None:
            await asyncio.to_thread(outbox.record_delivered, self.db, item.id)
            return
        given_up = utcnow() - item.at >= policy.webhook_delivery.give_up_after
        retry_at = None if given_up else utcnow() + backoff(self.first_retry, item.attempts + 1)
        await asyncio.to_thread(
            outbox.record_failed, self.db, item.id, error=error[:_ERROR_CHARS], retry_at=retry_at
        )
        log.warning(
            "webhook delivery %s to %s failed (attempt %s: %s); %s",
            item.id,
            endpoint.key,
            item.attempts + 1,
            error,
            "given up" if retry_at is None else f"again at {retry_at:%H:%M:%S}",
        )

    async def _data(self, policy: Policy, item: outbox.Outgoing) -> dict[str, Any] | None:
        """The data to send: a message's text joined in (it is stored once, in its row); for
        a visitor.unread, None if it is not due after all (read, or the visitor may still)."""
        if item.subject != "conversation" or item.type not in (
            EventType.MESSAGE_CREATED,
            VISITOR_UNREAD,
        ):
            return item.data
        info = await asyncio.to_thread(
            outbox.message_info, self.db, conversation_id=item.subject_id, seq=item.seq
        )
        if item.type == EventType.MESSAGE_CREATED:
            content = None if info is None else info.content
            return item.data if content is None else {**item.data, "content": content}
        if info is None or info.visitor_read_seq >= item.seq:
            await asyncio.to_thread(outbox.skip_read, self.db, item.id)
            return None
        due_at = item.at + policy.webhook_delivery.unread_after
        if _streaming(info.visitor_stream_until) and utcnow() < due_at:
            await asyncio.to_thread(outbox.postpone, self.db, item.id, until=due_at)
            return None
        data = {**item.data, "customer_id": info.customer_id}
        if info.content:
            data["preview"] = info.content[: outbox.PREVIEW_CHARS]
        return data


def _streaming(until: datetime | None) -> bool:
    return until is not None and until > utcnow()
