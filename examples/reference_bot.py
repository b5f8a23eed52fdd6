"""A tiny external bot for Switchboard's webhook bot (bot = "webhook"): the contract of
examples/README.md, with nothing but Python's standard library.

    python examples/reference_bot.py --port 8900 --secret "$BOT_SECRET"

It refuses (401) a request whose signature or timestamp is wrong, answers a few canned
questions, and hands off to a person on "human", "agent", "转人工" or "人工". Port 0 takes a free
port; the first line it prints says which ("listening on http://127.0.0.1:PORT/").
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The same lines as domain/webhooks.py's sign and verify, on purpose: this file is what a shop
# copies to its own server, where Switchboard's packages are not installed (a test checks that
# both sign alike).
TOLERANCE_SECONDS = 300
LARGEST_BODY = 64 * 1024


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float) -> bool:
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


HANDOFF_WORDS = ("human", "agent", "转人工", "人工")
TALK_TO_A_PERSON = "Talk to a person 转人工"
# The first that the message mentions answers it.
CANNED = [
    (
        ("order", "orders", "parcel", "订单", "快递", "物流"),
        "You can follow your order under My Account → Orders.\n"
        "您可以在「我的账户 → 我的订单」查看物流。",
    ),
    (
        ("hours", "open", "营业", "几点"),
        "Customer service answers every day from 9:00 to 21:00.\n客服每天 9:00-21:00 在线。",
    ),
    (
        ("hello", "hi", "你好"),
        "Hello! I am the shop's bot. Ask me about your order or our opening hours.\n"
        "您好！我是店铺机器人，可以问我订单或营业时间。",
    ),
]


def mentions(text: str, keywords: tuple[str, ...]) -> bool:
    """An English keyword as a whole word ("hi" is not in "shipping"), a Chinese one anywhere."""
    folded = text.casefold()
    words = set(re.findall(r"[a-z0-9]+", folded))
    return any(k in words if k.isascii() else k in folded for k in keywords)


def reply_to(text: str) -> dict[str, Any]:
    """The contract's answer to one visitor message."""
    if mentions(text, HANDOFF_WORDS):
        answer = {
            "text": "I am passing you to a colleague. 正在为您转接人工客服。",
            "quick_replies": [],
        }
        return {"answers": [answer], "handoff": True, "reason": "asked_for_person"}
    for keywords, canned in CANNED:
        if mentions(text, keywords):
            return {"answers": [{"text": canned, "quick_replies": [TALK_TO_A_PERSON]}]}
    not_understood = "Sorry, I did not understand. 抱歉，我没有理解。"
    return {"answers": [{"text": not_understood, "quick_replies": [TALK_TO_A_PERSON]}]}


class BotHandler(BaseHTTPRequestHandler):
    secret = ""
    server_version = "ReferenceBot/1"

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is needed"})
        if int(length) > LARGEST_BODY:
            return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
        body = self.rfile.read(int(length))
        timestamp = self.headers.get("X-Switchboard-Timestamp", "")
        signature = self.headers.get("X-Switchboard-Signature", "")
        if not verify(self.secret, timestamp, body, signature, now=time.time()):
            return self._send(HTTPStatus.UNAUTHORIZED, {"error": "bad signature or timestamp"})
        try:
            request = json.loads(body)
            text = request["message"]["text"]
        except (ValueError, KeyError, TypeError):
            return self._send(HTTPStatus.BAD_REQUEST, {"error": "not the webhook's JSON"})
        if not isinstance(text, str):
            return self._send(HTTPStatus.BAD_REQUEST, {"error": "message.text is no string"})
        answer = {"handoff": False, "reason": None, "skill_group": None, **reply_to(text)}
        return self._send(HTTPStatus.OK, answer)

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only: never the visitor's text.
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument(
        "--secret",
        default=os.environ.get("REFERENCE_BOT_SECRET"),
        help="the secret shared with Switchboard (or REFERENCE_BOT_SECRET)",
    )
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret (or REFERENCE_BOT_SECRET) is needed")
    BotHandler.secret = args.secret
    server = ThreadingHTTPServer((args.host, args.port), BotHandler)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
