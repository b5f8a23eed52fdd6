"""The built-in FAQ bot (config/bot.toml): a visitor's question → an entry's answer, a miss, or
a hand-off to a person (转人工).

Pure: no database, no Temporal, no I/O but reading its file. Matching works for Chinese and
English alike: Chinese is cut into words by its dictionary (rjieba, the Rust port of jieba) and
a word's characters count too, English words are stemmed (Snowball), and a Latin word the file
does not know is read as the closest one it does (rapidfuzz's edit distance: typos). Okapi BM25
ranks the entries, each one document of its example questions (and, weighing less, its
answer); the confidence (0..1) is the share of the question's words, by how rare they are in
the file, that the first entry holds. A whole-question similarity (rapidfuzz) lifts a question
that differs from an example by a few characters, where words cannot (a Chinese typo cuts other
words).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import rjieba
import snowballstemmer
from pydantic import Field, PrivateAttr, field_validator, model_validator
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from domain.ops_files import OpsFileError, OpsFileSource, StrictModel, read_model
from domain.policy import NAME_PATTERN, folded

log = logging.getLogger("switchboard.bot")

QUICK_REPLY_LENGTH = 40
DEFAULT_HANDOFF_PHRASES = ("转人工", "人工客服", "人工", "human", "agent", "talk to a person")
DEFAULT_HANDOFF_QUICK_REPLY = "Talk to a person 转人工"
DEFAULT_NOT_UNDERSTOOD = (
    "Sorry, I did not understand that. Could you ask in other words, or talk to a person?\n"
    "抱歉，我没有理解您的问题。您可以换个说法，或者转人工客服。"
)
# A longer message is matched by its beginning (a hand-off phrase is looked for in all of it).
LONGEST_QUESTION = 500

QuickReply = Annotated[str, Field(min_length=1, max_length=QUICK_REPLY_LENGTH)]
Question = Annotated[str, Field(min_length=1, max_length=200)]


class FaqEntry(StrictModel):
    id: str = Field(pattern=NAME_PATTERN)
    questions: list[Question] = Field(min_length=1, max_length=50)
    answer: str = Field(min_length=1, max_length=2000)
    # Buttons the widget shows under the answer: pressing one asks it.
    quick_replies: list[QuickReply] = Field(default=[], max_length=6)
    # The bot answers, then hands the conversation to a person.
    handoff: bool = False
    # Where a hand-off from this entry goes (one of the policy's skill groups).
    skill_group: str | None = Field(default=None, pattern=NAME_PATTERN)

    @field_validator("questions", "answer", "quick_replies")
    @classmethod
    def _not_blank(cls, value: str | list[str]) -> str | list[str]:
        for text in [value] if isinstance(value, str) else value:
            if not text.strip():
                raise ValueError("must not be blank")
        return value


class BotFile(StrictModel):
    """config/bot.toml, validated: errors name the key."""

    # Below this confidence a question is not understood (a miss).
    threshold: float = Field(default=0.55, gt=0, lt=1)
    handoff_phrases: list[QuickReply] = Field(default=list(DEFAULT_HANDOFF_PHRASES), max_length=50)
    # The button that reaches a person (offered with a miss): pressing it hands off.
    handoff_quick_reply: QuickReply = DEFAULT_HANDOFF_QUICK_REPLY
    # Misses in a row before the conversation goes to a person (the workflow counts them).
    max_misses: int = Field(default=2, ge=1, le=20)
    not_understood: str = Field(default=DEFAULT_NOT_UNDERSTOOD, min_length=1, max_length=2000)
    entries: list[FaqEntry] = Field(min_length=1, max_length=1000)
    _index: FaqIndex = PrivateAttr()
    _handoff: HandoffPhrases = PrivateAttr()

    @property
    def index(self) -> FaqIndex:
        """The entries' index, built once when the file is validated."""
        return self._index

    @property
    def handoff_finder(self) -> HandoffPhrases:
        return self._handoff

    @model_validator(mode="after")
    def _entries_consistent(self) -> BotFile:
        self._handoff = HandoffPhrases(self.handoff_phrases, self.handoff_quick_reply)
        ids: dict[str, int] = {}
        asked: dict[str, str] = {}
        for index, entry in enumerate(self.entries):
            if entry.id in ids:
                first = ids[entry.id]
                raise ValueError(
                    f"entries.{index}.id: duplicate id {entry.id!r} (entries.{first} has it)"
                )
            ids[entry.id] = index
            for number, question in enumerate(entry.questions):
                key = f"entries.{index}.questions.{number}"
                if (phrase := self._handoff.found_in(question)) is not None:
                    raise ValueError(
                        f"{key}: {question!r} holds the hand-off phrase {phrase!r}: "
                        "it hands off before any entry is looked at"
                    )
                same = _comparable(question)
                if same in asked and asked[same] != entry.id:
                    raise ValueError(
                        f"{key}: {question!r} is also a question of entry {asked[same]!r}"
                    )
                asked[same] = entry.id
        self._index = FaqIndex(self.entries)
        self._quick_replies_answered()
        return self

    def _quick_replies_answered(self) -> None:
        """A button the bot would not understand is a dead end for the visitor."""
        for index, entry in enumerate(self.entries):
            for number, reply in enumerate(entry.quick_replies):
                if self._handoff.found_in(reply) is not None:
                    continue
                match = self._index.best(reply)
                if match.score < self.threshold:
                    raise ValueError(
                        f"entries.{index}.quick_replies.{number}: the bot does not understand "
                        f"{reply!r} (confidence {match.score:.2f} < threshold "
                        f"{self.threshold}): make it a question of an entry, or the hand-off "
                        f"{self.handoff_quick_reply!r}"
                    )


@dataclass(frozen=True)
class BotReply:
    kind: Literal["answer", "miss", "handoff"]
    entry_id: str | None  # the matched entry (answer, or handoff by an entry)
    text: str | None  # what the bot says (None for a handoff by phrase)
    quick_replies: tuple[str, ...]
    skill_group: str | None  # for a handoff by an entry
    score: float  # the best match's confidence, 0..1
    reason: Literal["phrase", "entry"] | None  # why a handoff


class BotError(OpsFileError):
    """The bot file is unreadable or invalid; the message names the key."""


class FaqBot:
    """Answers from one version of the file (its index built once, when it was loaded)."""

    def __init__(self, config: BotFile, *, version: str = "builtin") -> None:
        self.config = config
        self.version = version

    @classmethod
    def load(cls, path: Path) -> FaqBot:
        config, version = read_model(path, BotFile, what="bot", error=BotError)
        return cls(config, version=version)

    @property
    def max_misses(self) -> int:
        return self.config.max_misses

    def entry(self, entry_id: str) -> FaqEntry | None:
        return next((entry for entry in self.config.entries if entry.id == entry_id), None)

    def answer(self, question: str) -> BotReply:
        config = self.config
        if config.handoff_finder.found_in(question) is not None:
            return BotReply("handoff", None, None, (), None, 1.0, "phrase")
        match = config.index.best(question[:LONGEST_QUESTION])
        if match.entry is None or match.score < config.threshold:
            return BotReply(
                kind="miss",
                entry_id=None,
                text=config.not_understood,
                quick_replies=(config.handoff_quick_reply,),
                skill_group=None,
                score=match.score,
                reason=None,
            )
        entry = match.entry
        return BotReply(
            kind="handoff" if entry.handoff else "answer",
            entry_id=entry.id,
            text=entry.answer,
            quick_replies=tuple(entry.quick_replies),
            skill_group=entry.skill_group,
            score=match.score,
            reason="entry" if entry.handoff else None,
        )


class BotSource(OpsFileSource[FaqBot]):
    """The current bot, re-read when its file changes; a bad edit keeps the last good bot and
    says why in `last_error`."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, load=FaqBot.load, error=BotError, log=log, what="bot")


def _comparable(text: str) -> str:
    """Folded, with runs of spaces as one: how a question equals another."""
    return " ".join(folded(text).split())


class HandoffPhrases:
    """转人工: a phrase anywhere in the question (an English one as whole words), or the
    hand-off button's text."""

    def __init__(self, phrases: Iterable[str], quick_reply: str) -> None:
        self._button = _comparable(quick_reply)
        self._button_text = quick_reply
        self._phrases = {_comparable(phrase): phrase for phrase in phrases}
        alternatives = [
            # Latin letters at an edge must not continue a word: "agent" is not in "agents".
            ("(?<![a-z0-9])" if phrase[0].isascii() else "")
            + re.escape(phrase)
            + ("(?![a-z0-9])" if phrase[-1].isascii() else "")
            for phrase in sorted(self._phrases, key=len, reverse=True)
        ]
        self._pattern = re.compile("|".join(alternatives)) if alternatives else None

    def found_in(self, question: str) -> str | None:
        """The phrase (as the file writes it) the question holds, or None."""
        text = _comparable(question)
        if text == self._button:
            return self._button_text
        if self._pattern is not None and (found := self._pattern.search(text)):
            return self._phrases[found.group()]
        return None


# Words that say nothing about what is asked. Question words (how, when, where) stay: they tell
# "when will it arrive" from "where is it"; BM25 weighs them down as they are frequent.
_STOPWORDS = frozenset(
    """a an the i me my mine you your we our us he him his she her it its this that these those
    them they their is are was were be been am do does did have has had to of in on at for by
    from with and or but so just please can could would will shall should may might there here
    any some want like need about after again already also before still then too very yet really
    hi hello hey thanks thank ok okay
    的 了 吗 呢 吧 啊 呀 哦 嘛 么 哈 我 我的 你 你们 您 是 在 请 请问 麻烦 一下 想 要 能 可以
    谢谢 好的 这个 那个 一直 大概 还 就 都 也 又""".split()
)
_APOSTROPHE = "['\u2019]"
_IRREGULAR_NEGATIONS = re.compile(rf"\b(?:(ca)|(wo))n{_APOSTROPHE}t\b")
_CONTRACTIONS = re.compile(rf"n{_APOSTROPHE}t\b|{_APOSTROPHE}(?:s|re|ll|ve|m|d)\b")
_STEMMER = snowballstemmer.stemmer("english")
_STEMMER_LOCK = threading.Lock()
# A Chinese word's characters are terms too, at this weight: 退货 still shares 退 with 退款 and
# 怎么退 (word boundaries differ between ways of asking, characters do not).
_CHARACTER_WEIGHT = 0.5
# A word only an entry's answer holds counts this much (a question's are worth 1): answers
# hold words visitors use (Alipay, weekend) without being questions.
_ANSWER_WEIGHT = 0.5
# A Latin word the file does not know is read as the closest word the file writes, from this
# similarity on (1 less the edits, a swap of two letters being one, per letter): one edit in
# four letters, "delivary" → "delivery", "chnage" → "change", not "weather" → "water".
# Shorter words are left alone.
_TYPO_SIMILARITY = 0.75
_TYPO_MIN_LENGTH = 4
# Okapi BM25's usual constants: term-frequency saturation and length normalisation.
_K1 = 1.2
_B = 0.75
# Whole-question similarity (rapidfuzz ratio, 0..100) below this adds nothing; from it up to
# 100 it maps linearly onto 0..1.
_SIMILAR_FROM = 60.0


@lru_cache(maxsize=8192)
def _stem(word: str) -> str:
    if not word.isascii():
        return word
    with _STEMMER_LOCK:  # a Snowball stemmer keeps the word it works on: one at a time
        return _STEMMER.stemWord(word)


@dataclass(frozen=True)
class Term:
    text: str  # as indexed: an English word's stem, a Chinese word or character
    written: str  # the word as the text has it (folded): what a typo is compared with
    weight: float


def terms(text: str) -> list[Term]:
    """The words of a text that say what is asked: folded, cut (Chinese by its dictionary, in
    search mode: a long word's parts too), English stemmed, stop words out."""
    text = _IRREGULAR_NEGATIONS.sub(lambda m: "can not" if m.group(1) else "will not", folded(text))
    text = _CONTRACTIONS.sub(lambda m: " not" if m.group()[0] == "n" else "", text)
    found = []
    # Without the HMM a word the dictionary lacks is cut the same way in every text.
    for word in rjieba.cut_for_search(text, False):
        if word in _STOPWORDS or not any(ch.isalnum() for ch in word):
            continue
        stemmed = _stem(word)
        if stemmed in _STOPWORDS:
            continue
        found.append(Term(stemmed, word, 1.0))
        if len(word) > 1 and not word.isascii():
            found.extend(Term(ch, ch, _CHARACTER_WEIGHT) for ch in word if ch.isalnum())
    return found


def _letters(text: str) -> str:
    """A text as characters to compare: folded, punctuation and spaces out."""
    return "".join(ch for ch in folded(text) if ch.isalnum())


@dataclass(frozen=True)
class Match:
    entry: FaqEntry | None
    score: float


class FaqIndex:
    """The entries indexed once per file load. Each entry is one BM25 document (its example
    questions and, weighing less, its answer), so a question may take its words from several
    examples of the entry; the confidence is the share of the question's words (by idf) that
    the entry holds."""

    def __init__(self, entries: Sequence[FaqEntry]) -> None:
        self._entries = list(entries)
        self._frequencies: list[dict[str, float]] = []
        self._typo_targets: dict[str, str] = {}  # a written Latin word → its term
        for entry in entries:
            frequencies: dict[str, float] = {}
            for question in entry.questions:
                for term in terms(question):
                    frequencies[term.text] = frequencies.get(term.text, 0.0) + 1.0
                    self._note_written(term)
            for term in {term.text: term for term in terms(entry.answer)}.values():
                frequencies[term.text] = frequencies.get(term.text, 0.0) + _ANSWER_WEIGHT
                self._note_written(term)
            self._frequencies.append(frequencies)
        self._lengths = [sum(frequencies.values()) for frequencies in self._frequencies]
        self._average_length = max(1.0, sum(self._lengths) / len(self._lengths))
        holding: Counter[str] = Counter()
        for frequencies in self._frequencies:
            holding.update(frequencies.keys())
        count = len(self._entries)
        self._idf = {term: _idf(count, n) for term, n in holding.items()}
        # A word no entry holds weighs as one that a single entry holds: a question of known
        # words and one other still reads as what its known words say.
        self._unknown_idf = _idf(count, 1)
        # A question weighs at least one such word: "how" or "order" alone, words most entries
        # hold, is too little to go on.
        self._least_weight = self._unknown_idf
        self._postings: dict[str, list[int]] = {}
        for number, frequencies in enumerate(self._frequencies):
            for term in frequencies:
                self._postings.setdefault(term, []).append(number)
        self._typo_choices: dict[str, list[str]] = {}  # by first letter
        for word in sorted(self._typo_targets):
            self._typo_choices.setdefault(word[0], []).append(word)
        # The whole-question comparison: every example's characters, and whose it is.
        self._letters = [_letters(question) for entry in entries for question in entry.questions]
        self._letters_entry = [entry for entry in entries for _question in entry.questions]

    def _note_written(self, term: Term) -> None:
        word = term.written
        if word.isascii() and word.isalpha() and len(word) >= _TYPO_MIN_LENGTH:
            self._typo_targets.setdefault(word, term.text)

    def _known(self, term: Term) -> tuple[str, float] | None:
        """The indexed term `term` stands for and how sure that is (1: itself; less: a typo)."""
        if term.text in self._idf:
            return term.text, 1.0
        word = term.written
        if not (word.isascii() and word.isalpha() and len(word) >= _TYPO_MIN_LENGTH):
            return None
        # A typo seldom hits the first letter; another word often does ("weather", "sweater").
        found = process.extractOne(
            word,
            self._typo_choices.get(word[0], ()),
            scorer=OSA.normalized_similarity,
            score_cutoff=_TYPO_SIMILARITY,
        )
        return (self._typo_targets[found[0]], found[1]) if found else None

    def best(self, question: str) -> Match:
        by_words = self._best_by_words(question)
        by_letters = self._best_by_letters(question)
        # A question written as an example (or nearly) is that example's, whatever BM25 says.
        return by_letters if by_letters.score >= by_words.score else by_words

    def _best_by_words(self, question: str) -> Match:
        asked: dict[str, float] = {}  # indexed term → its weight in the question, times how sure
        total = 0.0  # the question's terms' idf times weight, added up
        for term in {term.text: term for term in terms(question)}.values():
            known = self._known(term)
            if known is None:
                total += self._unknown_idf * term.weight
                continue
            indexed, sureness = known
            if indexed not in asked:
                total += self._idf[indexed] * term.weight
            asked[indexed] = max(asked.get(indexed, 0.0), term.weight * sureness)
        ranks: dict[int, float] = {}  # entry → BM25
        covered: dict[int, float] = {}  # entry → idf times weight of the question's terms held
        for indexed, weight in asked.items():
            idf = self._idf[indexed]
            for number in self._postings[indexed]:
                frequency = self._frequencies[number][indexed]
                length = _K1 * (1 - _B + _B * self._lengths[number] / self._average_length)
                ranks[number] = ranks.get(number, 0.0) + (
                    idf * weight * frequency * (_K1 + 1) / (frequency + length)
                )
                covered[number] = covered.get(number, 0.0) + idf * weight * min(1.0, frequency)
        if not ranks:
            return Match(entry=None, score=0.0)
        # BM25 ranks the entries; the confidence is how much of the question the first holds.
        number = max(ranks, key=ranks.__getitem__)
        score = min(1.0, covered[number] / max(total, self._least_weight))
        return Match(entry=self._entries[number], score=score)

    def _best_by_letters(self, question: str) -> Match:
        letters = _letters(question)
        found = letters and process.extractOne(
            letters, self._letters, scorer=fuzz.ratio, score_cutoff=_SIMILAR_FROM
        )
        if not found:
            return Match(entry=None, score=0.0)
        _text, similarity, number = found
        score = (similarity - _SIMILAR_FROM) / (100 - _SIMILAR_FROM)
        return Match(entry=self._letters_entry[number], score=score)


def _idf(documents: int, holding: int) -> float:
    """BM25's inverse document frequency (never negative, as Lucene has it)."""
    return math.log(1 + (documents - holding + 0.5) / (holding + 0.5))
