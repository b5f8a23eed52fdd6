"""What the bot tests deploy: the FAQ bot's file beside a test policy, the routing rule that
sends conversations to a bot, and a webhook bot of the test's own (a local HTTP server)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from domain.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from settings import PROJECT_ROOT

WEBHOOK_SECRET = "the-test-bots-shared-secret"
HANDOFF_BUTTON = "Talk to a person 转人工"


def faq_routing(directory: Path, *, bot: str = "faq", settings: str = "") -> str:
    """The routing rule that sends web conversations to `bot` first (TOML for the policy's
    `routing`), with the repository's FAQ file copied beside the policy and `settings` (keys of
    the policy's [bot] table)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "config" / "bot.toml", directory / "bot.toml")
    return (
        f'[[routing]]\nwhen = {{ channel = "web" }}\nskill_group = "general"\nbot = "{bot}"\n'
        f"[bot]\n{settings}"
    )


def webhook_settings(url: str, *, timeout: str = "2s", attempts: int = 2) -> str:
    return (
        f'[bot.webhook]\nurl = "{url}"\nsecret = "{WEBHOOK_SECRET}"\n'
        f'timeout = "{timeout}"\nattempts = {attempts}\n'
    )


Answerer = Callable[[str], dict[str, Any]]


def answer_or_hand_off(text: str) -> dict[str, Any]:
    """A shop's bot: hands off when asked for a person, else answers with the hand-off button."""
    if "person" in text.casefold():
        return {"answers": [], "handoff": True, "reason": "asked_for_person"}
    return {
        "answers": [
            {"text": f"About {text!r}: see our help centre.", "quick_replies": [HANDOFF_BUTTON]}
        ],
        "handoff": False,
    }


class WebhookBot:
    """A webhook bot on a free loopback port: it checks each request's signature, waits `delay`
    seconds, answers with `answer(text)`, and records each request's message seq (a retried
    request repeats one)."""

    def __init__(self, answer: Answerer = answer_or_hand_off, *, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.asked: list[int] = []
        self.refused = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/bot"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        bot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signed = verify(
                    WEBHOOK_SECRET,
                    self.headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                    now=time.time(),
                )
                if not signed:
                    bot.refused += 1
                    self._send(401, {"error": "bad signature"})
                    return
                request = json.loads(body)
                bot.asked.append(request["message"]["seq"])
                time.sleep(bot.delay)
                self._send(200, bot.answer(request["message"]["text"]))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller went away (a worker killed while it waited)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    @contextmanager
    def running(self) -> Iterator[WebhookBot]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
