"""The built-in FAQ bot (domain/bot.py) on the shipped config/bot.toml: Chinese and English
questions to their entries, misses, hand-offs, the file's validation and its reload."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from domain.bot import BotError, BotReply, BotSource, FaqBot
from settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "config" / "bot.toml"

# None of these is an example question of the file: paraphrases, typos, other words for the
# same thing, Chinese and English and both at once.
EXPECTED = [
    # English, in other words
    ("where's my parcel", "track_order"),
    ("I still haven't got my order", "track_order"),
    ("can you tell me the tracking number?", "track_order"),
    ("what is the status of my shipment", "track_order"),
    ("how long will shipping take", "delivery_time"),
    ("when does my order arrive", "delivery_time"),
    ("is express shipping available", "delivery_time"),
    ("I put in a wrong delivery address", "change_address"),
    ("can I change the address on my order", "change_address"),
    ("please cancel my order", "cancel_order"),
    ("I ordered by mistake, can I cancel it", "cancel_order"),
    ("how do I get my money back", "refund"),
    ("where is my refund", "refund"),
    ("refund not received yet", "refund"),
    ("how can I send an item back", "return_item"),
    ("what is your return policy", "return_item"),
    ("the shoes are too small, can I exchange them", "return_item"),
    ("my item arrived broken", "return_item"),
    ("I need a receipt for my purchase", "invoice"),
    ("how can I download my invoice", "invoice"),
    ("my card was declined", "payment_failed"),
    ("payment failed again", "payment_failed"),
    ("do you accept alipay", "payment_failed"),
    ("how do I apply a discount code", "coupon"),
    ("coupon is not working", "coupon"),
    ("when are you open", "store_hours"),
    ("are you open on sunday", "store_hours"),
    ("I want to speak to a real person", "talk_to_person"),
    ("I'd like to file a complaint", "complaint"),
    # English with typos
    ("wher is my oder", "track_order"),
    ("trak my pacakge", "track_order"),
    ("how long dose delivary take", "delivery_time"),
    ("I want a refnud", "refund"),
    ("how do i retrun an item", "return_item"),
    ("chnage my adress", "change_address"),
    ("i need an invocie", "invoice"),
    ("my paymnet failed", "payment_failed"),
    ("cupon code doesnt work", "coupon"),
    # Chinese, in other words
    ("我的包裹到哪儿了", "track_order"),
    ("帮我查一下物流", "track_order"),
    ("订单一直没到", "track_order"),
    ("大概几天能到", "delivery_time"),
    ("今天下单什么时候能发货", "delivery_time"),
    ("收货地址写错了怎么办", "change_address"),
    ("我想修改地址", "change_address"),
    ("订单能取消吗", "cancel_order"),
    ("我要申请退款", "refund"),
    ("退款多久到账", "refund"),
    ("钱怎么还没退回来", "refund"),
    ("这个商品怎么退", "return_item"),
    ("衣服尺码不对想换货", "return_item"),
    ("需要开发票", "invoice"),
    ("发票在哪下载", "invoice"),
    ("付款失败了怎么办", "payment_failed"),
    ("可以用微信支付吗", "payment_failed"),
    ("优惠券怎么使用", "coupon"),
    ("客服什么时候上班", "store_hours"),
    ("我要投诉你们的快递员", "complaint"),
    ("我要找真人客服", "talk_to_person"),
    # Chinese with a wrong character from the input method
    ("我的快第到哪了", "track_order"),
    ("怎么申请退或", "return_item"),
    ("优惠卷用不了", "coupon"),
    # Both languages at once
    ("我的order到哪了", "track_order"),
    ("refund什么时候到账", "refund"),
    ("invoice怎么开", "invoice"),
    ("coupon用不了", "coupon"),
]

OFF_TOPIC = [
    "what's the weather like today",
    "今天天气怎么样",
    "你好吗",
    "你好",
    "hello",
    "thanks",
    "tell me a joke",
    "who won the football match",
    "how old are you",
    "what is the meaning of life",
    "where is my brother",
    "我想买一台电脑",
    "推荐一部电影",
    "asdfgh",
    "order",  # a word most entries hold: too little to go on
    "how",
    "",
    "？！",
]


@pytest.fixture(scope="module")
def bot() -> FaqBot:
    return FaqBot.load(SHIPPED)


def test_questions_in_chinese_and_english_find_their_entry(bot: FaqBot) -> None:
    assert len(EXPECTED) >= 40
    assert not {question for question, _ in EXPECTED} & {
        question for entry in bot.config.entries for question in entry.questions
    }, "the table must ask in other words than the file's examples"
    wrong = []
    for question, expected in EXPECTED:
        reply = bot.answer(question)
        found = reply.entry_id if reply.kind != "miss" else None
        if found != expected:
            wrong.append(
                f"{question!r}: {expected} expected, got {reply.kind} {found} {reply.score:.2f}"
            )
    print(f"{len(EXPECTED) - len(wrong)} of {len(EXPECTED)} right; wrong:", *wrong, sep="\n  ")
    assert 1 - len(wrong) / len(EXPECTED) >= 0.9, wrong


def test_a_wrong_answer_is_rarer_than_a_miss(bot: FaqBot) -> None:
    """Below the threshold the visitor is asked again; above it a wrong entry would be said."""
    answered_wrongly = [
        question
        for question, expected in EXPECTED
        if (reply := bot.answer(question)).kind != "miss" and reply.entry_id != expected
    ]
    assert len(answered_wrongly) <= 1, answered_wrongly


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_off_topic_questions_are_misses_that_offer_a_person(bot: FaqBot, question: str) -> None:
    reply = bot.answer(question)
    assert reply.kind == "miss", reply
    assert reply.entry_id is None and reply.reason is None and reply.skill_group is None
    assert reply.text == bot.config.not_understood
    assert reply.quick_replies == ("Talk to a person 转人工",)
    assert 0 <= reply.score < bot.config.threshold


def test_every_example_and_quick_reply_of_the_file_leads_where_it_says(bot: FaqBot) -> None:
    for entry in bot.config.entries:
        for question in entry.questions:
            reply = bot.answer(question)
            assert (reply.entry_id, reply.score) == (entry.id, 1.0), (question, reply)
        for button in entry.quick_replies:
            assert bot.answer(button).kind in ("answer", "handoff"), button


@pytest.mark.parametrize(
    "question",
    [
        "转人工",
        "人工客服在吗",
        "我要转人工！",
        "I want a human",
        "HUMAN please",
        "agent",
        "can I talk to a person?",
        "Talk to a person 转人工",  # the button the bot offers
        "talk  to   a PERSON",
        "我的order到哪了 转人工",
    ],
)
def test_a_handoff_phrase_or_the_button_hands_off(bot: FaqBot, question: str) -> None:
    assert bot.answer(question) == BotReply("handoff", None, None, (), None, 1.0, "phrase")


def test_english_phrases_match_whole_words_only(bot: FaqBot) -> None:
    assert bot.answer("are your agents humans?").reason is None
    assert bot.answer("humane packaging").reason is None


def test_an_entry_that_hands_off_says_its_answer_and_names_its_group(bot: FaqBot) -> None:
    reply = bot.answer("the courier was really rude to me")
    assert (reply.kind, reply.reason, reply.entry_id) == ("handoff", "entry", "complaint")
    assert reply.skill_group == "after_sales"
    assert reply.text is not None and "after-sales" in reply.text
    to_anyone = bot.answer("我要找真人")
    assert (to_anyone.kind, to_anyone.reason, to_anyone.skill_group) == (
        "handoff",
        "entry",
        None,
    )


def test_an_answer_carries_the_entry_text_and_buttons(bot: FaqBot) -> None:
    reply = bot.answer("Where is my package?")
    assert (reply.kind, reply.entry_id, reply.reason) == ("answer", "track_order", None)
    entry = bot.entry("track_order")
    assert entry is not None
    assert reply.text == entry.answer
    assert reply.quick_replies == ("When will it arrive?", "Talk to a person 转人工")
    assert bot.entry("nope") is None


def test_a_long_message_is_read_by_its_beginning_and_a_phrase_anywhere(bot: FaqBot) -> None:
    assert bot.answer("查物流" + " 嗯" * 2000).entry_id == "track_order"
    assert bot.answer("查物流" + " 嗯" * 2000 + " 转人工").reason == "phrase"


# The file's validation: each mistake named by its key, never the whole text.
MINIMAL = """
[[entries]]
id = "track_order"
questions = ["Where is my order?", "查物流"]
answer = "Under My Account → Orders."
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_minimal_file_takes_the_defaults(tmp_path: Path) -> None:
    bot = FaqBot.load(_write(tmp_path, MINIMAL))
    assert (bot.config.threshold, bot.max_misses) == (0.55, 2)
    assert bot.config.handoff_phrases == [
        "转人工",
        "人工客服",
        "人工",
        "human",
        "agent",
        "talk to a person",
    ]
    miss = bot.answer("what's the weather")
    assert miss.text is not None and "did not understand" in miss.text and "没有理解" in miss.text
    assert len(bot.version) == 12


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("threshold = 1.5\n" + MINIMAL, ["threshold:", "less than 1", "(got 1.5)"]),
        ("max_misses = 0\n" + MINIMAL, ["max_misses:", "greater than or equal to 1"]),
        ("threshhold = 0.5\n" + MINIMAL, ["threshhold: unknown key"]),
        ("handoff_phrases = ['']\n" + MINIMAL, ["handoff_phrases.0:"]),
        ("entries = []\n", ["entries:", "at least 1"]),
        (MINIMAL.replace('"track_order"', '"Track Order"'), ["entries.0.id:", "should match"]),
        (MINIMAL + "handoff = 'sometimes'\n", ["entries.0.handoff:", "valid boolean"]),
        (MINIMAL + "skill_group = 'After Sales'\n", ["entries.0.skill_group:"]),
        (MINIMAL + "colour = 'red'\n", ["entries.0.colour: unknown key"]),
        (
            MINIMAL.replace('answer = "Under My Account → Orders."', 'answer = " "'),
            ["entries.0.answer: must not be blank"],
        ),
        (
            MINIMAL + f"quick_replies = ['{'x' * 41}']\n",
            ["entries.0.quick_replies.0:", "at most 40"],
        ),
        (
            MINIMAL + "quick_replies = " + str(["Where is my order?"] * 7) + "\n",
            ["entries.0.quick_replies:", "at most 6"],
        ),
        (MINIMAL + MINIMAL, ["entries.1.id: duplicate id 'track_order' (entries.0 has it)"]),
        (
            MINIMAL + MINIMAL.replace('"track_order"', '"parcel"'),
            ["entries.1.questions.0: 'Where is my order?' is also a question of entry 'track_"],
        ),
        (
            MINIMAL.replace('"查物流"', '"查物流, 转人工"'),
            ["entries.0.questions.1:", "holds the hand-off phrase '转人工'"],
        ),
        (
            MINIMAL + "quick_replies = ['Do you sell bicycles?']\n",
            ["entries.0.quick_replies.0: the bot does not understand 'Do you sell bicycles?'"],
        ),
        ("[[entries]\n", ["invalid bot file", "bot.toml"]),
        (
            MINIMAL.replace("Under My Account → Orders.", "Orders " * 300),
            ["entries.0.answer:", "at most 2000 characters", "(got 'Orders Orders", "…)"],
        ),
    ],
)
def test_a_mistake_in_the_file_is_refused_naming_its_key(
    tmp_path: Path, text: str, said: list[str]
) -> None:
    with pytest.raises(BotError) as refused:
        FaqBot.load(_write(tmp_path, text))
    message = str(refused.value)
    for words in said:
        assert words in message, message
    assert "Under My Account" not in message and len(message) < 600  # the mistake, not the file


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BotError, match=r"bot file not found: .*nope\.toml"):
        FaqBot.load(tmp_path / "nope.toml")


def test_a_quick_reply_that_is_the_handoff_or_an_entry_question_passes(tmp_path: Path) -> None:
    path = _write(
        tmp_path, MINIMAL + "quick_replies = ['Talk to a person 转人工', 'Where is my order?']\n"
    )
    assert FaqBot.load(path).answer("查物流").quick_replies == (
        "Talk to a person 转人工",
        "Where is my order?",
    )


# The reload: a changed file applies; a broken edit keeps the last good bot and says why.


def _touch_later(path: Path) -> None:
    """Make sure the file's stamp changes even on coarse-grained file systems."""
    stamp = time.time() + 2
    os.utime(path, (stamp, stamp))


def test_a_changed_file_applies_and_a_broken_edit_keeps_the_last_good_bot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path, MINIMAL)
    source = BotSource(path)
    first = source.current()
    assert first.answer("查物流").entry_id == "track_order"
    assert source.current() is first  # not read again while the file stays

    _write(tmp_path, MINIMAL.replace('"track_order"', '"parcel_status"'))
    _touch_later(path)
    second = source.current()
    assert second.answer("查物流").entry_id == "parcel_status"
    assert second.version != first.version and source.last_error is None

    caplog.set_level(logging.INFO, logger="switchboard.bot")
    _write(tmp_path, MINIMAL + "quick_replies = ['Do you sell bicycles?']\n")
    _touch_later(path)
    for _ in range(3):  # looked at on every question: said once per edit
        assert source.current() is second
    assert source.last_error is not None
    assert "entries.0.quick_replies.0" in source.last_error
    [refused] = [record for record in caplog.records if record.name == "switchboard.bot"]
    assert refused.levelname == "WARNING" and "\n" not in refused.getMessage()
    assert "entries.0.quick_replies.0" in refused.getMessage()
    with pytest.raises(BotError):
        source.reload()  # asked for by an admin: refused and said again
    assert source.current() is second

    _write(tmp_path, MINIMAL)
    _touch_later(path)
    assert source.current().answer("查物流").entry_id == "track_order"
    assert source.last_error is None


def test_a_bad_file_at_start_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BotError):
        BotSource(_write(tmp_path, "entries = []\n"))
