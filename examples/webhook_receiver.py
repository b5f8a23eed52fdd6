"""A receiver for Switchboard's webhooks ([[webhooks]] in the policy), with nothing but Python's
standard library: it checks each delivery's signature, answers at once, and hands each event
over once, however often it is delivered (README.md, "Webhooks").

    python examples/webhook_receiver.py --port 8901 --secret "$WEBHOOK_SECRET"

Put your own work in `handle` (look the customer up, push a notification, update the CRM).
It prints each event's id, type and seq: never its data, which holds what customers wrote.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A signed request older (or newer) than this is refused: a recorded one cannot be replayed.
TOLERANCE_SECONDS = 300
LARGEST_BODY = 1024 * 1024


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float) -> bool:
    """Whether `signature` (X-Switchboard-Signature) is the HMAC-SHA256 of the timestamp
    (X-Switchboard-Timestamp), a dot and the raw body, sent within 5 minutes of `now`."""
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), signature)


class Seen:
    """The delivery ids handled already: a delivery sent again (a retry, a redelivery, a
    worker that restarted mid-send) is answered 2xx and not handled twice. Keep them in your
    database in production, as long as your retries may come (a day and a bit)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        with self._lock:
            if delivery_id in self._ids:
                return False
            self._ids.add(delivery_id)
            return True


def handle(event: dict[str, Any]) -> None:
    """Your work for one event. `visitor.unread`: the customer has an unread reply; push it
    to their phone (`data.customer_id`, `data.preview`)."""
    subject = event.get("conversation_id") or event.get("ticket_id")
    print(f"event {event['id']}: {event['type']} of {subject} (seq {event['seq']})", flush=True)


class ReceiverHandler(BaseHTTPRequestHandler):
    secret = ""
    seen = Seen()

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._answer(HTTPStatus.LENGTH_REQUIRED)
        if int(length) > LARGEST_BODY:
            return self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        body = self.rfile.read(int(length))  # the raw bytes: verify before parsing
        timestamp = self.headers.get("X-Switchboard-Timestamp", "")
        signature = self.headers.get("X-Switchboard-Signature", "")
        if not verify(self.secret, timestamp, body, signature, now=time.time()):
            return self._answer(HTTPStatus.UNAUTHORIZED)
        delivery_id = self.headers.get("X-Switchboard-Delivery", "")
        if self.seen.first_time(delivery_id):
            handle(json.loads(body))
        # Any 2xx says "received": anything else (or no answer in time) is sent again later.
        return self._answer(HTTPStatus.NO_CONTENT)

    def _answer(self, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET"),
        help="the endpoint's secret in the policy (or WEBHOOK_SECRET)",
    )
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret (or WEBHOOK_SECRET) is needed")
    ReceiverHandler.secret = args.secret
    server = ThreadingHTTPServer((args.host, args.port), ReceiverHandler)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
