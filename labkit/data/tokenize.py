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
    path: str = ""  # "batched" (fast tokenizer), "batched-segments" (fallback) or "per-text" (slow tokenizers)
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


def _encode_unique(texts: list[str], tokenizer, mode: str) -> list[list[int]]:
    """Token ids of each text, no special tokens. mode: "fast" (the Rust backend's encode_batch_fast, no
    offsets), "call" (batched tokenizer(...) calls) or "single" (one tokenizer.encode per text)."""
    if mode == "single":
        return [tokenizer.encode(t, add_special_tokens=False) if t else [] for t in texts]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None) if mode == "fast" else None
    out: list[list[int]] = []
    for i in range(0, len(texts), BATCH_TEXTS):
        chunk = texts[i:i + BATCH_TEXTS]
        if fast is not None:
            out += [e.ids for e in fast(chunk, add_special_tokens=False)]
        else:
            out += tokenizer(chunk, add_special_tokens=False)["input_ids"] if chunk else []
    return out


class _Table:
    """Unique texts -> slot; encoded once (templates repeat, instructions often do)."""

    def __init__(self):
        self.slot: dict[str, int] = {}
        self.texts: list[str] = []

    def add(self, text: str) -> int:
        k = self.slot.get(text)
        if k is None:
            k = self.slot[text] = len(self.texts)
            self.texts.append(text)
        return k


def _plan(examples, template: Template, split_pieces: bool):
    """Per example: [(slots, trainable)] per segment, and the text table. With split_pieces, the template's
    constant text and each message content are separate entries (constant runs merged), else whole segments."""
    table = _Table()
    plans = []
    for ex in examples:
        segs: list[tuple[list[int], bool]] = []
        if split_pieces:
            run, run_const, run_tr = "", False, None
            for text, trainable, const in template.render_pieces(ex["messages"]):
                if run_tr is not None and (trainable != run_tr or not (const and run_const)):
                    _put(segs, table, run, run_tr)
                    run = ""
                if not run:
                    run_const = const
                run, run_tr = run + text, trainable
                run_const = run_const and const
            if run_tr is not None:
                _put(segs, table, run, run_tr)
        else:
            for text, trainable in template.render_segments(ex["messages"]):
                segs.append(([table.add(text)], trainable))
        plans.append(segs)
    return plans, table


def _put(segs, table: _Table, text: str, trainable: bool) -> None:
    if segs and segs[-1][1] == trainable:
        segs[-1][0].append(table.add(text))
    else:
        segs.append(([table.add(text)], trainable))


def _segment_ids(plans, ids) -> list[list[tuple[list[int], bool]]]:
    out = []
    for segs in plans:
        row = []
        for slots, trainable in segs:
            if len(slots) == 1:
                row.append((ids[slots[0]], trainable))
            else:
                seg: list[int] = []
                for k in slots:
                    seg += ids[k]
                row.append((seg, trainable))
        out.append(row)
    return out


VERIFY = 64  # examples on which piecewise encoding must equal whole-segment encoding before it is used


def _encode_segments(examples, tokenizer, template: Template, batched: bool):
    """(plans, ids, path): per example [(text slots, trainable)] per segment, token ids per slot, the path used.

    Fast path: encode the template's constant text and the message contents separately, each unique text
    once, in batched calls. It is used only when it gives exactly the whole-segment encoding on a sample
    of examples (true for pre-tokenizers that split at the template's line breaks and punctuation);
    otherwise each whole segment is encoded (LLaMA-Factory's scheme).
    """
    if batched and examples:
        n = len(examples)
        probe_idx = sorted(set(range(min(VERIFY // 2, n))) | set(range(0, n, max(1, n // (VERIFY // 2)))))
        probe = [examples[i] for i in probe_idx]
        plans_p, table_p = _plan(probe, template, True)
        plans_w, table_w = _plan(probe, template, False)
        pieces = _segment_ids(plans_p, _encode_unique(table_p.texts, tokenizer, "fast"))
        whole = _segment_ids(plans_w, _encode_unique(table_w.texts, tokenizer, "call"))
        if pieces == whole:
            plans, table = _plan(examples, template, True)
            return plans, _encode_unique(table.texts, tokenizer, "fast"), "batched"
    plans, table = _plan(examples, template, False)
    return plans, _encode_unique(table.texts, tokenizer, "call" if batched else "single"), (
        "batched-segments" if batched else "per-text")


def _encode_arrays(examples, tokenizer, template: str | Template, cutoff_len: int, train_on_inputs: bool,
                   batched: bool | None):
    """Flat numpy arrays: (input_ids, labels, offsets) of the kept samples, and the report (vectorised assembly)."""
    from itertools import chain

    import numpy as np

    if cutoff_len <= 0:
        raise LabkitError(f"cutoff_len must be positive, got {cutoff_len}")
    template = get_template(template)
    batched = bool(getattr(tokenizer, "is_fast", False)) if batched is None else batched
    bos, eos = special_ids(tokenizer)
    examples = list(examples)
    plans, ids, path = _encode_segments(examples, tokenizer, template, batched)
    report = TokenizeReport(cutoff_len=cutoff_len, path=path)
    head, tail = ([bos] if bos is not None else []), [eos]
    parts: list[list[int]] = []  # every piece of every sample, in order: BOS, segments, EOS after answers
    flags: list[bool] = []
    part_rows: list[int] = []
    for k, segs in enumerate(plans):
        if head:
            parts.append(head)
            flags.append(train_on_inputs)
            part_rows.append(k)
        for slots, trainable in segs:
            flag = trainable or train_on_inputs
            for sl in slots:
                parts.append(ids[sl])
                flags.append(flag)
                part_rows.append(k)
            if trainable:
                parts.append(tail)
                flags.append(True)
                part_rows.append(k)
    n = len(plans)
    part_len = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    total = int(part_len.sum())
    values = np.fromiter(chain.from_iterable(parts), dtype=np.int64, count=total)  # (N,)
    trained = np.repeat(np.array(flags, dtype=bool), part_len)  # (N,)
    tok_row = np.repeat(np.array(part_rows, dtype=np.int64), part_len)  # (N,) sample of each token
    lengths = np.bincount(tok_row, minlength=n).astype(np.int64)  # (n,) untruncated
    starts = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    pos = np.arange(total, dtype=np.int64) - starts[tok_row]  # (N,) position within its sample
    keep = pos < cutoff_len
    n_trained = np.bincount(tok_row[keep & trained], minlength=n)  # (n,)
    ok = n_trained > 0
    keep &= ok[tok_row]
    kept_len = np.minimum(lengths, cutoff_len)[ok]
    over = lengths > cutoff_len
    report.samples = n
    report.lengths = lengths.tolist()
    report.truncated = int(over.sum())
    report.tokens_cut = int((lengths - cutoff_len)[over].sum())
    report.dropped_no_target = int((~ok).sum())
    report.kept_indices = np.flatnonzero(ok).tolist()
    report.kept = len(report.kept_indices)
    report.total_tokens = int(kept_len.sum())
    report.trainable_tokens = int(n_trained[ok].sum())
    report.max_len = int(kept_len.max()) if report.kept else 0
    input_ids = values[keep]
    labels = np.where(trained, values, IGNORE_INDEX)[keep]
    offsets = np.zeros(report.kept + 1, dtype=np.int64)
    np.cumsum(kept_len, out=offsets[1:])
    return input_ids, labels, offsets, report


def encode_examples(examples, tokenizer, template: str | Template, cutoff_len: int, train_on_inputs: bool = False,
                    batched: bool | None = None) -> tuple[dict[str, list], TokenizeReport]:
    """Columns {input_ids, labels, attention_mask} as Python lists, plus the report. See tokenize_examples."""
    import numpy as np

    input_ids, labels, offsets, report = _encode_arrays(examples, tokenizer, template, cutoff_len, train_on_inputs,
                                                        batched)
    cuts = offsets[1:-1]
    ids = [a.tolist() for a in np.split(input_ids, cuts)] if report.kept else []
    labs = [a.tolist() for a in np.split(labels, cuts)] if report.kept else []
    return {"input_ids": ids, "labels": labs, "attention_mask": [[1] * len(x) for x in ids]}, report


def _list_column(values, offsets):
    """A list<int64> Arrow column from flat values and row offsets (no per-row Python work)."""
    import pyarrow as pa

    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)).cast(pa.list_(pa.int64()))


def tokenize_examples(examples, tokenizer, template: str | Template, cutoff_len: int, train_on_inputs: bool = False,
                      batched: bool | None = None):
    """Examples -> (datasets.Dataset with input_ids/labels/attention_mask, TokenizeReport).

    Each template segment is encoded on its own (no special tokens), BOS first when the tokenizer adds one,
    EOS after every assistant turn; labels are -100 on everything but assistant turns (+EOS) unless
    `train_on_inputs`. Samples longer than `cutoff_len` are cut at the end and counted. `batched` (default:
    the tokenizer is fast) encodes all segments in a few batched calls; otherwise one call per text.
    """
    import datasets

    import numpy as np
    import pyarrow as pa

    input_ids, labels, offsets, report = _encode_arrays(examples, tokenizer, template, cutoff_len, train_on_inputs,
                                                        batched)
    table = pa.table({"input_ids": _list_column(input_ids, offsets), "labels": _list_column(labels, offsets),
                      "attention_mask": _list_column(np.ones_like(input_ids), offsets)})
    from datasets.fingerprint import generate_random_fingerprint

    # a random fingerprint: hashing the whole table would cost as much as building it
    return datasets.Dataset(datasets.table.InMemoryTable(table), fingerprint=generate_random_fingerprint()), report


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
