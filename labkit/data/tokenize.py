"""Tokenization for SFT: template segments -> input_ids/labels (-100 on prompts), EOS per assistant turn, cutoff report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from labkit.data.templates import Template, get_template
from labkit.errors import LabkitError

IGNORE_INDEX = -100
BATCH_TEXTS = 8192  # texts per call on the batched fast path


@dataclass
class TokenizeReport:
    """What tokenization did: counts, truncation (samples and tokens cut) and the untruncated lengths."""

    cutoff_len: int
    samples: int = 0
    kept: int = 0
    truncated: int = 0
    tokens_cut: int = 0
    dropped_no_target: int = 0  # the prompt alone filled cutoff_len: nothing left to train on
    total_tokens: int = 0
    trainable_tokens: int = 0
    max_len: int = 0
    path: str = ""  # "batched" (fast tokenizer) or "per-text" (slow, e.g. sentencepiece)
    lengths: list[int] = field(default_factory=list, repr=False)  # untruncated, per sample
    kept_indices: list[int] = field(default_factory=list, repr=False)  # example index of each dataset row

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("lengths")
        d.pop("kept_indices")
        return d

    def summary(self) -> str:
        return (f"{self.kept}/{self.samples} samples, {self.total_tokens} tokens ({self.trainable_tokens} trained); "
                f"{self.truncated} truncated at {self.cutoff_len} ({self.tokens_cut} tokens cut), "
                f"{self.dropped_no_target} dropped (no response left)")


def special_ids(tokenizer) -> tuple[int | None, int]:
    """(bos id if the tokenizer adds one by default, eos id)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LabkitError("the tokenizer has no eos_token; set one (e.g. tokenizer.eos_token = '</s>')")
    bos = tokenizer.bos_token_id
    if bos is not None:
        with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
        if not with_special or with_special[0] != bos:
            bos = None
    return bos, eos


def _encode_all(texts: list[str], tokenizer, batched: bool) -> list[list[int]]:
    if batched:
        out: list[list[int]] = []
        for i in range(0, len(texts), BATCH_TEXTS):
            out += tokenizer(texts[i:i + BATCH_TEXTS], add_special_tokens=False)["input_ids"]
        return out
    cache: dict[str, list[int]] = {}  # prompts repeat a lot (same instruction); slow tokenizers are slow
    res = []
    for t in texts:
        ids = cache.get(t)
        if ids is None:
            ids = tokenizer.encode(t, add_special_tokens=False) if t else []
            if len(t) < 2048:
                cache[t] = ids
        res.append(ids)
    return res


def encode_examples(examples, tokenizer, template: str | Template, cutoff_len: int, train_on_inputs: bool = False,
                    batched: bool | None = None) -> tuple[dict[str, list], TokenizeReport]:
    """Columns {input_ids, labels, attention_mask} as Python lists, plus the report. See tokenize_examples."""
    if cutoff_len <= 0:
        raise LabkitError(f"cutoff_len must be positive, got {cutoff_len}")
    template = get_template(template)
    batched = bool(getattr(tokenizer, "is_fast", False)) if batched is None else batched
    bos, eos = special_ids(tokenizer)
    report = TokenizeReport(cutoff_len=cutoff_len, path="batched" if batched else "per-text")
    texts: list[str] = []
    flags: list[bool] = []
    bounds: list[int] = [0]
    for ex in examples:
        for text, trainable in template.render_segments(ex["messages"]):
            texts.append(text)
            flags.append(trainable)
        bounds.append(len(texts))
    ids = _encode_all(texts, tokenizer, batched)
    cols: dict[str, list] = {"input_ids": [], "labels": [], "attention_mask": []}
    for k in range(len(bounds) - 1):
        inp: list[int] = [bos] if bos is not None else []
        lab: list[int] = list(inp) if train_on_inputs else [IGNORE_INDEX] * len(inp)
        for j in range(bounds[k], bounds[k + 1]):
            seg = ids[j]
            inp += seg
            if flags[j]:
                inp.append(eos)
                lab += seg
                lab.append(eos)
            else:
                lab += seg if train_on_inputs else [IGNORE_INDEX] * len(seg)
        report.samples += 1
        report.lengths.append(len(inp))
        if len(inp) > cutoff_len:
            report.truncated += 1
            report.tokens_cut += len(inp) - cutoff_len
            inp, lab = inp[:cutoff_len], lab[:cutoff_len]
        trained = sum(1 for x in lab if x != IGNORE_INDEX)
        if not trained:
            report.dropped_no_target += 1
            continue
        cols["input_ids"].append(inp)
        cols["labels"].append(lab)
        cols["attention_mask"].append([1] * len(inp))
        report.kept_indices.append(k)
        report.kept += 1
        report.total_tokens += len(inp)
        report.trainable_tokens += trained
        report.max_len = max(report.max_len, len(inp))
    return cols, report


def tokenize_examples(examples, tokenizer, template: str | Template, cutoff_len: int, train_on_inputs: bool = False,
                      batched: bool | None = None):
    """Examples -> (datasets.Dataset with input_ids/labels/attention_mask, TokenizeReport).

    Each template segment is encoded on its own (no special tokens), BOS first when the tokenizer adds one,
    EOS after every assistant turn; labels are -100 on everything but assistant turns (+EOS) unless
    `train_on_inputs`. Samples longer than `cutoff_len` are cut at the end and counted. `batched` (default:
    the tokenizer is fast) encodes all segments in a few batched calls; otherwise one call per text.
    """
    import datasets

    cols, report = encode_examples(examples, tokenizer, template, cutoff_len, train_on_inputs, batched)
    features = datasets.Features({k: datasets.Sequence(datasets.Value("int64")) for k in cols})
    return datasets.Dataset.from_dict(cols, features=features), report


def quick_bpe_tokenizer(texts, vocab_size: int = 1000):
    """A small byte-level BPE PreTrainedTokenizerFast trained on `texts` (tests and benchmarks; not the tiny model's).

    Special tokens: <pad>=0, <s>=1, </s>=2, <unk>=3; no BOS added by default.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
