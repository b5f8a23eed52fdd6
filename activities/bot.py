"""The bot phase's activities: the bot answers the visitor's waiting messages, and hands the
conversation to a person (转人工).

The workflow hears seqs only: the activity reads the questions from the database, asks the bot
(the built-in FAQ bot, or the policy's webhook), and writes each answer once with its messages
(store/bot.py), so a retried activity (its worker killed mid-answer) finds the answer written
and neither loses nor repeats it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import ValidationError
from temporalio import activity

from activities.conversation import run_store
from domain.bot import DEFAULT_HANDOFF_QUICK_REPLY, DEFAULT_NOT_UNDERSTOOD, BotError, BotSource
from domain.policy import BotWebhook, Policy, PolicySource
from domain.types import BotTurnRequest, BotTurnResult, HandOffRequest, RouteResult
from domain.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BotAnswer,
    BotContext,
    BotMessage,
    BotRequest,
    sign,
)
from store import bot as bot_store
from store.bot import ANSWER, HANDOFF, MISS, MISSES, Answer, BotText, Context, Question
from store.db import Database

log = logging.getLogger("switchboard.bot")

# Questions read per look at the database (a visitor who wrote faster than the bot answers).
_BATCH = 10
# Why a person takes over.
ASKED_FOR_PERSON = "asked_for_person"
QUICK_REPLY = "quick_reply"
ENTRY = "entry"
BOT_UNREACHABLE = "bot_unreachable"
BOT_HANDOFF = "bot_handoff"  # an external bot's hand-off that gave no reason


class BotActivities:
    def __init__(self, *, db: Database, policy: PolicySource) -> None:
        self.db = db
        self.policy = policy
        self._faq: dict[Path, BotSource] = {}
        self._http: httpx.AsyncClient | None = None

    @activity.defn(name="answer_visitor")
    async def answer_visitor(self, request: BotTurnRequest) -> BotTurnResult:
        """Answer the visitor's messages stored after `request.after_seq`, oldest first, until
        none is left or the bot hands off."""
        policy = self.policy.current()
        after = request.after_seq
        last_seq = 0
        missed = False
        while True:
            questions, misses, context = await run_store(
                lambda after=after: bot_store.waiting(
                    self.db,
                    conversation_id=request.conversation_id,
                    after_seq=after,
                    limit=_BATCH,
                )
            )
            for question in questions:
                turn = await asyncio.to_thread(
                    bot_store.stored_turn,
                    self.db,
                    conversation_id=request.conversation_id,
                    visitor_seq=question.seq,
                )
                if turn is None:
                    answer = await self._answer(policy, request, question, misses, context)
                    turn = await run_store(
                        lambda question=question, answer=answer: bot_store.record_turn(
                            self.db,
                            conversation_id=request.conversation_id,
                            visitor_seq=question.seq,
                            answer=answer,
                        )
                    )
                after = question.seq
                last_seq = turn.last_seq or last_seq
                missed = turn.kind == MISS
                misses = misses + 1 if missed else 0
                if turn.kind == HANDOFF:
                    return self._result(
                        policy, after, last_seq, False, turn.handoff_reason, turn.handoff_group
                    )
            if len(questions) < _BATCH:
                return self._result(policy, after, last_seq, missed, None, None)

    @activity.defn(name="hand_off")
    async def hand_off(self, request: HandOffRequest) -> RouteResult:
        """To a person: the hand-off written (its reason, the matched entries for staff), and
        whether the group that takes it is open now."""
        policy = self.policy.current()
        return await run_store(
            lambda: bot_store.hand_off(
                db=self.db,
                policy=policy,
                conversation_id=request.conversation_id,
                reason=request.reason,
                skill_group=request.skill_group,
                at=request.at,
            )
        )

    def all(self) -> list[Callable[..., object]]:
        return [self.answer_visitor, self.hand_off]

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    # --- the bots --------------------------------------------------------------------------

    @staticmethod
    def _result(
        policy: Policy,
        answered_seq: int,
        last_seq: int,
        missed: bool,
        handoff_reason: str | None,
        handoff_group: str | None,
    ) -> BotTurnResult:
        return BotTurnResult(
            answered_seq=answered_seq,
            last_seq=last_seq,
            missed=missed,
            handoff_reason=handoff_reason,
            handoff_group=handoff_group,
            idle_close_after_s=policy.bot.idle_close_after.total_seconds(),
        )

    async def _answer(
        self,
        policy: Policy,
        request: BotTurnRequest,
        question: Question,
        misses: int,
        context: Context,
    ) -> Answer:
        if request.bot == "webhook" and policy.bot.webhook is not None:
            if not question.text:
                return _not_understood(DEFAULT_NOT_UNDERSTOOD, DEFAULT_HANDOFF_QUICK_REPLY)
            return await self._ask_webhook(
                policy.bot.webhook, request.conversation_id, question, context
            )
        return self._ask_faq(policy, question, misses)

    def _faq_source(self, policy: Policy) -> BotSource:
        path = Path(policy.bot.file)
        if not path.is_absolute():
            path = self.policy.path.parent / path
        source = self._faq.get(path)
        if source is None:
            source = self._faq[path] = BotSource(path)
        return source

    def _ask_faq(self, policy: Policy, question: Question, misses: int) -> Answer:
        try:
            faq = self._faq_source(policy).current()
        except (BotError, OSError) as exc:
            # No bot to answer: a person does, rather than nobody.
            log.error("the FAQ bot cannot answer, handing off: %s", exc)
            return Answer(HANDOFF, handoff_reason=BOT_UNREACHABLE)
        config = faq.config
        if not question.text:  # an image, a video, a file: nothing the FAQ can read
            return _not_understood(
                config.not_understood, config.handoff_quick_reply, misses, config.max_misses
            )
        reply = faq.answer(question.text)
        if reply.kind == "handoff" and reply.reason == "phrase":
            found = config.handoff_finder.found_in(question.text)
            reason = QUICK_REPLY if found == config.handoff_quick_reply else ASKED_FOR_PERSON
            return Answer(HANDOFF, score=reply.score, handoff_reason=reason)
        if reply.kind == "miss":
            return _not_understood(
                config.not_understood,
                config.handoff_quick_reply,
                misses,
                config.max_misses,
                score=reply.score,
            )
        assert reply.text is not None
        said = (BotText(reply.text, reply.quick_replies),)
        if reply.kind == "handoff":
            return Answer(
                HANDOFF,
                said,
                entry_id=reply.entry_id,
                score=reply.score,
                handoff_reason=ENTRY,
                handoff_group=reply.skill_group,
            )
        return Answer(ANSWER, said, entry_id=reply.entry_id, score=reply.score)

    async def _ask_webhook(
        self, webhook: BotWebhook, conversation_id: str, question: Question, context: Context
    ) -> Answer:
        body = (
            BotRequest(
                conversation_id=conversation_id,
                message=BotMessage(seq=question.seq, text=question.text),
                context=BotContext(
                    channel=context.channel,
                    entry=context.entry,
                    language=context.language,
                    tier=context.tier,
                    attributes=context.attributes,
                ),
            )
            .model_dump_json()
            .encode()
        )
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        timeout = webhook.timeout.total_seconds()
        for attempt in range(1, webhook.attempts + 1):
            if attempt > 1:
                await asyncio.sleep(2 ** (attempt - 2))  # 1 s, 2 s, 4 s, 8 s
            timestamp = int(time.time())
            try:
                response = await self._http.post(
                    webhook.url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        TIMESTAMP_HEADER: str(timestamp),
                        SIGNATURE_HEADER: sign(webhook.secret.get_secret_value(), timestamp, body),
                    },
                    timeout=timeout,
                )
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            else:
                if response.status_code == 200:
                    try:
                        answer = BotAnswer.model_validate(json.loads(response.content))
                    except (ValueError, ValidationError):
                        why = "an answer outside the contract"
                    else:
                        return _from_webhook(answer)
                else:
                    why = f"status {response.status_code}"
            # The bot's own fault, never the visitor's words.
            log.warning(
                "bot webhook attempt %d of %d for %s failed: %s",
                attempt,
                webhook.attempts,
                conversation_id,
                why,
            )
        return Answer(HANDOFF, handoff_reason=BOT_UNREACHABLE)


def _not_understood(
    text: str,
    handoff_button: str,
    misses: int = 0,
    max_misses: int | None = None,
    *,
    score: float | None = None,
) -> Answer:
    """A miss: the bot says it did not understand and offers a person; the `max_misses`-th in a
    row hands off instead."""
    if max_misses is not None and misses + 1 >= max_misses:
        return Answer(HANDOFF, score=score, handoff_reason=MISSES)
    return Answer(MISS, (BotText(text, (handoff_button,)),), score=score)


def _from_webhook(answer: BotAnswer) -> Answer:
    said = tuple(BotText(item.text, tuple(item.quick_replies)) for item in answer.answers)
    if answer.handoff:
        return Answer(
            HANDOFF,
            said,
            handoff_reason=answer.reason or BOT_HANDOFF,
            handoff_group=answer.skill_group,
        )
    return Answer(ANSWER, said)
