"""What the webhook tests deploy: endpoints in the policy, and receivers of the test's own
(local HTTP servers) that check each delivery with the receiver example's recipe
(examples/webhook_receiver.py, as README.md documents it) and record what came."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

from settings import PROJECT_ROOT

RECEIVER_EXAMPLE = PROJECT_ROOT / "examples" / "webhook_receiver.py"
# Retries a fraction of a second apart, looks five times a second, a short wait for answers:
# the settings of the worker of a webhook test (never the policy's give_up_after).
FAST_DELIVERY = {
    "SWITCHBOARD_WEBHOOK_POLL_INTERVAL_SECONDS": "0.2",
    "SWITCHBOARD_WEBHOOK_FIRST_RETRY_SECONDS": "0.2",
    "SWITCHBOARD_WEBHOOK_TIMEOUT_SECONDS": "2",
}
# Long enough that no idle warning or close comes while a test drives a conversation.
CALM_TIMEOUTS = {"idle_warning_after": "60s", "idle_close_after": "60s", "rating_window": "60s"}


def receiver_example() -> ModuleType:
    """examples/webhook_receiver.py, loaded as a company would copy it."""
    spec = importlib.util.spec_from_file_location("webhook_receiver", RECEIVER_EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def endpoint_toml(
    name: str, url: str, secret: str, event_types: list[str], *, staff: bool = False
) -> str:
    """One [[webhooks]] table of the policy."""
    types = ", ".join(json.dumps(kind) for kind in event_types)
    return (
        f'[[webhooks]]\nname = "{name}"\nurl = "{url}"\nsecret = "{secret}"\n'
        f"event_types = [{types}]\nstaff = {'true' if staff else 'false'}\n"
    )


@dataclass(frozen=True)
class Received:
    """One request as it arrived (a delivery sent again arrives again)."""

    delivery_id: str
    event_type: str
    verified: bool
    body: dict[str, Any]
    answered: int


class Receiver:
    """A webhook endpoint on a free loopback port. It answers 503 to the first delivery it
    gets, `failures` times, and 200 to everything else, each after `delay` seconds (the first
    `slow` requests only; all with None), and records every request, verified or not."""

    def __init__(
        self,
        secret: str,
        *,
        failures: int = 0,
        delay: float = 0.0,
        slow: int | None = None,
    ) -> None:
        self.secret = secret
        self.failures = failures
        self.delay = delay
        self.slow = slow
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._verify = receiver_example().verify
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks?source=switchboard"

    def toml(self, name: str, event_types: list[str], *, staff: bool = False) -> str:
        return endpoint_toml(name, self.url, self.secret, event_types, staff=staff)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                verified = receiver._verify(
                    receiver.secret,
                    self.headers.get("X-Switchboard-Timestamp", ""),
                    body,
                    self.headers.get("X-Switchboard-Signature", ""),
                    now=time.time(),
                )
                delivery_id = self.headers.get("X-Switchboard-Delivery", "")
                with receiver._lock:
                    number = len(receiver.received)
                    first = receiver.received[0].delivery_id if receiver.received else delivery_id
                    refused = [item for item in receiver.received if item.delivery_id == first]
                    failing = delivery_id == first and len(refused) < receiver.failures
                    status = 503 if failing else 200
                    receiver.received.append(
                        Received(
                            delivery_id=delivery_id,
                            event_type=self.headers.get("X-Switchboard-Event", ""),
                            verified=verified,
                            body=json.loads(body),
                            answered=status,
                        )
                    )
                if receiver.slow is None or number < receiver.slow:
                    time.sleep(receiver.delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender went away (a worker killed while it waited)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def accepted(self) -> list[Received]:
        """The requests answered 200, in the order they came."""
        with self._lock:
            return [item for item in self.received if item.answered == 200]

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The bodies it accepted, of `event_type` if given, each once (the first time)."""
        seen: set[str] = set()
        bodies = []
        for item in self.accepted():
            if item.delivery_id in seen:
                continue
            seen.add(item.delivery_id)
            if event_type is None or item.body["type"] == event_type:
                bodies.append(item.body)
        return bodies

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
