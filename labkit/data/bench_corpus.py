"""Benchmark corpora with real instruction-data lengths (Chinese, English), generated deterministically, not downloaded.

The character length of instruction + input + output follows the quantiles measured on LLaMA-Factory's
`alpaca_zh_demo.json` / `alpaca_en_demo.json` (`TARGETS`): each record's total is read off a quantile function
that runs piecewise linearly in log-length through the measured points, at evenly spaced ranks, so the corpus
has those quantiles by construction. The text is made of common words in the language (filler, not meaning):
it exercises tokenization and sequence lengths, not knowledge. `python -m labkit.data.bench_corpus` (or
`python -m labkit.data.bundled`) rewrites `data/bench/bench_{zh,en}.json`, committed and registered as `bench_zh`
/ `bench_en`.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

# measured: (p10, p50, p90, max) characters of instruction+input+output; min is our choice (a short record)
TARGETS = {
    "zh": {"min": 12, "p10": 48, "p50": 187, "p90": 421, "max": 1229, "records": 1000},
    "en": {"min": 40, "p10": 125, "p50": 585, "p90": 1796, "max": 2921, "records": 999},
}
SEED = 20240613

ZH_CHARS = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产"
            "种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从"
            "业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又"
            "么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位"
            "入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放"
            "决西被干做必战先回则任取据处理府研质信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越"
            "织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克")
ZH_INSTRUCTIONS = ("请解释", "写一段关于", "总结下面的内容", "把下面的句子翻译成英文", "给出三个例子说明", "分析",
                   "回答这个问题", "列出", "用简单的话描述", "比较")
EN_WORDS = ("the of and to in is that for it as with was on be by this are from at or an have not which but "
            "they one you all were can there their more has been if will would when so what about into some them "
            "other time than its only new could also people two first may then these any like use way many make "
            "most over did just such where well after work because does good much must water long day even how "
            "life part through world back between state system right small number group data model train learn "
            "answer question write explain example list short story simple language city history science energy "
            "market health water river plant animal school student teacher family friend travel food music art "
            "computer network process result method value change increase important different possible general").split()
EN_INSTRUCTIONS = ("Explain", "Write a short paragraph about", "Summarize the following text",
                   "Translate the sentence below into Chinese", "Give three examples of", "Analyze",
                   "Answer the question", "List", "Describe in simple words", "Compare")


def quantile_length(u: float, t: dict) -> int:
    """The total length at rank u in [0, 1]: log-linear between the measured points of `t`."""
    points = [(0.0, t["min"]), (0.1, t["p10"]), (0.5, t["p50"]), (0.9, t["p90"]), (1.0, t["max"])]
    for (u0, a), (u1, b) in zip(points, points[1:]):
        if u <= u1:
            w = (u - u0) / (u1 - u0)
            return int(round(math.exp(math.log(a) + w * (math.log(b) - math.log(a)))))
    return t["max"]


def _zh_text(rng: random.Random, n: int) -> str:
    """Exactly n characters of Chinese filler ending in a full stop."""
    out: list[str] = []
    while len(out) < n:
        out.extend(rng.choice(ZH_CHARS) for _ in range(rng.randint(2, 9)))
        out.append(rng.choice("，，，。。、"))
    return "".join(out[: n - 1]) + "。" if n > 1 else "是"


def _en_text(rng: random.Random, n: int) -> str:
    """Exactly n characters of English filler sentences."""
    parts, size = [], 0
    while size < n:
        sentence = [rng.choice(EN_WORDS) for _ in range(rng.randint(5, 16))]
        s = " ".join(sentence).capitalize() + "."
        parts.append(s)
        size += len(s) + 1
    text = " ".join(parts)[:n]
    return text[:-1] + "." if text.endswith(" ") else text


def _record(lang: str, total: int, rng: random.Random) -> dict:
    """One alpaca record whose instruction + input + output is exactly `total` characters long."""
    zh = lang == "zh"
    text = _zh_text if zh else _en_text
    head = rng.choice(ZH_INSTRUCTIONS if zh else EN_INSTRUCTIONS)
    topic = text(rng, rng.randint(4, 12) if zh else rng.randint(12, 40)).rstrip("。.")
    instruction = (head + ("" if zh else " ") + topic + ("。" if zh else "."))[: max(2, total // 3)]
    inp = ""
    left = total - len(instruction)
    if rng.random() < 0.35 and left > 30:
        inp = text(rng, rng.randint(10, left // 2))
    output = text(rng, total - len(instruction) - len(inp))
    return {"instruction": instruction, "input": inp, "output": output}


def generate(lang: str, n: int | None = None, seed: int = SEED) -> list[dict]:
    """The `lang` ("zh" | "en") corpus: n records (default: as many as the measured source)."""
    t = TARGETS[lang]
    n = n or t["records"]
    rng = random.Random(f"{seed}-{lang}")
    totals = [quantile_length(i / (n - 1) if n > 1 else 0.5, t) for i in range(n)]
    rng.shuffle(totals)
    return [_record(lang, total, rng) for total in totals]


def lengths(records: list[dict]) -> list[int]:
    """instruction + input + output characters of each record (the measure of TARGETS)."""
    return [len(r["instruction"]) + len(r.get("input", "")) + len(r["output"]) for r in records]


def files() -> dict[str, str]:
    """The corpus files: name relative to data/ -> text (a JSON array, one record per line)."""
    return {f"bench/bench_{lang}.json": "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in generate(lang))
            + "\n]\n" for lang in TARGETS}


def write(folder: str | Path) -> list[Path]:
    """Write bench/bench_zh.json and bench/bench_en.json under `folder` (data/); returns the paths."""
    paths = []
    for name, text in files().items():
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        paths.append(path)
    return paths


if __name__ == "__main__":
    from labkit.paths import data_dir

    for p in write(data_dir()):
        print(p)
