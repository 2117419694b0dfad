"""Benchmark corpora: the length quantiles of real instruction data, deterministic, committed and registered."""

import numpy as np

from labkit.data import bench_corpus
from labkit.data.registry import load_datasets
from labkit.paths import data_dir

MEASURED = {"zh": (48, 187, 421, 1229), "en": (125, 585, 1796, 2921)}  # p10, p50, p90, max characters


def test_length_quantiles_match_the_measured_data():
    for lang, (p10, p50, p90, top) in MEASURED.items():
        lengths = np.array(bench_corpus.lengths(bench_corpus.generate(lang)))
        q = np.percentile(lengths, [10, 50, 90])
        for got, want in zip(q, (p10, p50, p90)):
            assert abs(got - want) <= 0.03 * want, (lang, got, want)
        assert lengths.max() == top


def test_committed_files_are_the_generated_ones():
    for name, text in bench_corpus.files().items():
        assert (data_dir() / name).read_text(encoding="utf-8") == text, name


def test_registered_and_loadable():
    for lang, (_, p50, _, _) in MEASURED.items():
        examples, _ = load_datasets(f"bench_{lang}", seed=0)
        assert len(examples) == bench_corpus.TARGETS[lang]["records"]
        text = [sum(len(m["content"]) for m in ex["messages"]) for ex in examples]
        assert abs(np.percentile(text, 50) - p50) <= 0.05 * p50 + 2  # + the line break joining input
        assert any("\u4e00" <= c <= "\u9fff" for c in examples[0]["messages"][-1]["content"]) == (lang == "zh")
