"""How fast the FAQ bot answers (`python -m bench.bot_faq`): the shipped config/bot.toml grown
to 200 entries (product questions in both languages added to it), its load (the index is built
then) and one question's answer, Chinese, English, typos and off-topic ones alike.

    python -m bench.bot_faq                  # 200 entries
    python -m bench.bot_faq --entries 1000   # the most a file may hold

The target: a question answered in well under 5 ms. Printed, never asserted in a test.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from domain.bot import BotFile, FaqBot
from settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "config" / "bot.toml"
PRODUCTS = [
    ("sneakers", "运动鞋"),
    ("down jacket", "羽绒服"),
    ("backpack", "双肩包"),
    ("t-shirt", "T恤"),
    ("jeans", "牛仔裤"),
    ("wool scarf", "羊毛围巾"),
    ("rice cooker", "电饭煲"),
    ("headphones", "耳机"),
    ("phone case", "手机壳"),
    ("water bottle", "水杯"),
    ("lamp", "台灯"),
    ("yoga mat", "瑜伽垫"),
    ("suitcase", "行李箱"),
    ("umbrella", "雨伞"),
    ("watch", "手表"),
    ("kettle", "电水壶"),
    ("blender", "搅拌机"),
    ("pillow", "枕头"),
    ("duvet", "被子"),
    ("towel", "毛巾"),
    ("sunglasses", "太阳镜"),
    ("wallet", "钱包"),
    ("belt", "皮带"),
    ("keyboard", "键盘"),
    ("mouse", "鼠标"),
    ("charger", "充电器"),
    ("power bank", "充电宝"),
    ("tent", "帐篷"),
    ("bicycle helmet", "自行车头盔"),
    ("coffee machine", "咖啡机"),
    ("frying pan", "平底锅"),
    ("vacuum cleaner", "吸尘器"),
    ("hair dryer", "吹风机"),
    ("toothbrush", "牙刷"),
    ("perfume", "香水"),
    ("lipstick", "口红"),
    ("sweater", "毛衣"),
    ("dress", "连衣裙"),
    ("socks", "袜子"),
    ("gloves", "手套"),
    ("hat", "帽子"),
    ("desk chair", "办公椅"),
    ("bookshelf", "书架"),
    ("curtains", "窗帘"),
    ("rug", "地毯"),
    ("mattress", "床垫"),
    ("baby stroller", "婴儿车"),
]
TOPICS = [
    (
        "care",
        ["How do I clean the {en}?", "Can the {en} be washed?", "{en} care instructions"],
        ["{zh}怎么清洗", "{zh}可以水洗吗"],
    ),
    (
        "size",
        ["What size of {en} should I choose?", "{en} size chart", "Is the {en} true to size?"],
        ["{zh}尺码怎么选", "{zh}偏大还是偏小"],
    ),
    (
        "warranty",
        ["Is there a warranty on the {en}?", "My {en} stopped working", "{en} repair"],
        ["{zh}保修多久", "{zh}坏了怎么保修"],
    ),
    (
        "stock",
        ["When is the {en} back in stock?", "Is the {en} sold out?", "Restock of the {en}"],
        ["{zh}什么时候补货", "{zh}还有货吗"],
    ),
]
QUESTIONS = [
    "where's my parcel",
    "I put in a wrong delivery address",
    "how do I get my money back",
    "wher is my oder",
    "chnage my adress",
    "我的包裹到哪儿了",
    "收货地址写错了怎么办",
    "钱怎么还没退回来",
    "refund什么时候到账",
    "how do I wash my new down jacket",
    "羽绒服可以机洗吗",
    "the headphones stopped working after a week",
    "充电宝坏了能修吗",
    "is the yoga mat available again soon",
    "what size sneakers do I need",
    "what's the weather like today",
    "你好吗",
    "tell me a joke",
    "转人工",
    "I need a receipt for my purchase, and the invoice should name my company please",
]


def grown_file(entries: int) -> dict[str, Any]:
    """The shipped file with product entries added up to `entries`."""
    content = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    products = itertools.cycle(itertools.product(range(len(PRODUCTS)), range(len(TOPICS))))
    while len(content["entries"]) < entries:
        product, topic = next(products)
        (en, zh), (name, english, chinese) = PRODUCTS[product], TOPICS[topic]
        round_ = len(content["entries"]) // (len(PRODUCTS) * len(TOPICS))
        suffix = f" ({round_ + 1})" if round_ else ""
        content["entries"].append(
            {
                "id": f"{name}_{product}_{round_}",
                "questions": [q.format(en=en, zh=zh) + suffix for q in english + chinese],
                "answer": f"About the {en} ({zh}): see the product page, section {name}.",
            }
        )
    return content


def _measure(bot: FaqBot, rounds: int) -> list[float]:
    took = []
    for _ in range(rounds):
        for question in QUESTIONS:
            started = time.perf_counter()
            bot.answer(question)
            took.append(time.perf_counter() - started)
    return took


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args(argv)
    content = grown_file(args.entries)
    examples = sum(len(entry["questions"]) for entry in content["entries"])
    started = time.perf_counter()
    config = BotFile.model_validate(content)
    loaded = time.perf_counter() - started
    bot = FaqBot(config)
    with tempfile.TemporaryDirectory() as folder:  # the same, read from a file
        path = Path(folder) / "bot.toml"
        path.write_text(SHIPPED.read_text(encoding="utf-8"), encoding="utf-8")
        FaqBot.load(path)
    _measure(bot, 1)  # warm: the stemmer's cache, the allocator
    took = sorted(_measure(bot, args.rounds))
    ms = [seconds * 1000 for seconds in took]
    print(f"{len(content['entries'])} entries, {examples} example questions")
    print(f"load (validation and index): {loaded * 1000:.1f} ms")
    print(
        f"answer, {len(ms)} questions: median {statistics.median(ms):.3f} ms, "
        f"p99 {ms[int(len(ms) * 0.99) - 1]:.3f} ms, max {ms[-1]:.3f} ms"
    )
    for question in QUESTIONS:
        reply = bot.answer(question)
        print(f"  {reply.kind:8} {reply.entry_id or '-':22} {reply.score:.2f}  {question}")


if __name__ == "__main__":
    main()
