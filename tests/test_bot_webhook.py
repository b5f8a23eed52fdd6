"""The webhook bot's contract (domain/webhooks.py, examples/README.md): the signature both
sides compute, and the reference bot (examples/reference_bot.py) run as a shop would run it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from domain.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BotAnswer,
    BotContext,
    BotMessage,
    BotRequest,
    sign,
    verify,
)
from settings import PROJECT_ROOT

SECRET = "shared-secret-of-the-test"
REFERENCE_BOT = PROJECT_ROOT / "examples" / "reference_bot.py"


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    # Computed independently: printf '1767225600.{"a":1}' | openssl dgst -sha256 -hmac s3cret
    expected = "sha256=7d4120fcebf444efab10ba7cd6c651bf463cefb039db5fad37ff9f7231ac8a4a"
    signature = sign("s3cret", 1767225600, b'{"a":1}')
    assert signature == expected
    assert signature != sign("s3cret", 1767225601, b'{"a":1}')
    assert signature != sign("other", 1767225600, b'{"a":1}')
    assert signature != sign("s3cret", 1767225600, b'{"a":2}')


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "now", "accepted"),
    [
        (SECRET, "1000", b"{}", 1000.0, True),
        (SECRET, 1000, b"{}", 1300.0, True),  # 300 seconds late: still within
        (SECRET, "1000", b"{}", 700.0, True),  # and early
        (SECRET, "1000", b"{}", 1300.5, False),  # later than that: a replay
        (SECRET, "1000", b"{}", 699.0, False),
        ("another secret", "1000", b"{}", 1000.0, False),
        (SECRET, "1000", b"{} ", 1000.0, False),  # the body changed
        (SECRET, "1001", b"{}", 1000.0, False),  # the timestamp changed
        (SECRET, "", b"{}", 1000.0, False),
        (SECRET, "1e3", b"{}", 1000.0, False),
        (SECRET, "-1000", b"{}", 1000.0, False),
        (SECRET, "\uff11\uff10\uff10\uff10", b"{}", 1000.0, False),  # full-width digits
    ],
)
def test_verify_takes_only_the_signature_of_this_body_at_a_recent_time(
    secret: str, timestamp: str | int, body: bytes, now: float, accepted: bool
) -> None:
    signature = sign(SECRET, 1000, b"{}")
    assert verify(secret, timestamp, body, signature, now=now) is accepted


def test_verify_refuses_a_signature_in_another_form() -> None:
    signature = sign(SECRET, 1000, b"{}")
    for other in ["", signature.removeprefix("sha256="), signature.upper(), "sha1=" + "0" * 40]:
        assert not verify(SECRET, "1000", b"{}", other, now=1000.0)


def test_the_reference_bot_signs_as_switchboard_does() -> None:
    spec = importlib.util.spec_from_file_location("reference_bot", REFERENCE_BOT)
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    for timestamp, body in [(0, b""), (1767225600, "转人工".encode()), (42, b'{"a": [1]}')]:
        assert reference.sign(SECRET, timestamp, body) == sign(SECRET, timestamp, body)


@pytest.fixture(scope="module")
def reference_bot() -> Iterator[str]:
    """The reference bot as its docstring says to run it, from the repository root, on a free
    port; -S: no site-packages, so it runs on the standard library alone."""
    process = subprocess.Popen(
        [sys.executable, "-S", str(REFERENCE_BOT.relative_to(PROJECT_ROOT)), "--port", "0"],
        cwd=PROJECT_ROOT,
        env={"REFERENCE_BOT_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("listening on http://127.0.0.1:"), first + (
            process.stderr.read() if process.stderr and process.poll() else ""
        )
        yield first.removeprefix("listening on ").strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def _request(text: str, seq: int = 1) -> bytes:
    request = BotRequest(
        conversation_id="c_test",
        message=BotMessage(seq=seq, text=text),
        context=BotContext(channel="web", language="zh", attributes={"order_id": "A1024"}),
    )
    return request.model_dump_json().encode()


def _post(
    url: str, body: bytes, *, timestamp: int | None = None, secret: str = SECRET, **headers: str
) -> httpx.Response:
    sent_at = int(time.time()) if timestamp is None else timestamp
    signed = {
        TIMESTAMP_HEADER: str(sent_at),
        SIGNATURE_HEADER: sign(secret, sent_at, body),
        "Content-Type": "application/json",
    }
    return httpx.post(url, content=body, headers={**signed, **headers}, timeout=10)


def _answer(response: httpx.Response) -> BotAnswer:
    assert response.status_code == 200, response.text
    return BotAnswer.model_validate_json(response.content)


def test_the_reference_bot_answers_a_signed_message(reference_bot: str) -> None:
    answer = _answer(_post(reference_bot, _request("我的快递到哪了")))
    assert not answer.handoff and answer.reason is None and answer.skill_group is None
    [said] = answer.answers
    assert "My Account" in said.text
    assert said.quick_replies == ["Talk to a person 转人工"]
    not_understood = _answer(_post(reference_bot, _request("do you sell bicycles?", seq=2)))
    assert not not_understood.handoff
    assert "did not understand" in not_understood.answers[0].text


@pytest.mark.parametrize("text", ["转人工", "I want a human", "人工客服", "agent please"])
def test_the_reference_bot_hands_off_when_asked_for_a_person(reference_bot: str, text: str) -> None:
    answer = _answer(_post(reference_bot, _request(text)))
    assert (answer.handoff, answer.reason) == (True, "asked_for_person")
    assert answer.answers and answer.answers[0].text


def _refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    return json.loads(response.content)


def test_the_reference_bot_refuses_a_wrong_signature(reference_bot: str) -> None:
    body = _request("转人工")
    _refused(_post(reference_bot, body, secret="not the shared one"))
    _refused(_post(reference_bot, body, **{SIGNATURE_HEADER: "sha256=" + "0" * 64}))
    _refused(httpx.post(reference_bot, content=body, timeout=10))  # unsigned
    # Signed, then changed on the way.
    sent_at = int(time.time())
    tampered = body.replace(b"c_test", b"c_other")
    headers = {TIMESTAMP_HEADER: str(sent_at), SIGNATURE_HEADER: sign(SECRET, sent_at, body)}
    _refused(httpx.post(reference_bot, content=tampered, headers=headers, timeout=10))


def test_the_reference_bot_refuses_an_old_or_future_timestamp(reference_bot: str) -> None:
    body = _request("转人工")
    _refused(_post(reference_bot, body, timestamp=int(time.time()) - 301 - 5))
    _refused(_post(reference_bot, body, timestamp=int(time.time()) + 301 + 5))
    assert _post(reference_bot, body, timestamp=int(time.time()) - 60).status_code == 200


def test_the_reference_bot_answers_400_to_a_signed_body_that_is_not_the_contract(
    reference_bot: str,
) -> None:
    for body in [b"not json", b"[]", b'{"message": {"text": 3}}']:
        assert _post(reference_bot, body).status_code == 400, body


def test_an_answer_outside_the_contract_is_refused() -> None:
    good = {"answers": [{"text": "hi", "quick_replies": ["Track my order"]}], "handoff": False}
    assert BotAnswer.model_validate({**good, "extra": 1}).answers[0].text == "hi"
    for bad in [
        {"answers": []},  # no handoff
        {"handoff": True},  # no answers
        {**good, "answers": [{"text": ""}]},
        {**good, "answers": [{"text": "hi", "quick_replies": ["x" * 41]}]},
        {**good, "answers": [{"text": "hi", "quick_replies": ["a"] * 7}]},
        {**good, "reason": "Asked for a person!"},
        {**good, "skill_group": "After Sales"},
        {**good, "handoff": "maybe"},
    ]:
        with pytest.raises(ValueError):
            BotAnswer.model_validate(bad)
