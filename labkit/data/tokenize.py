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


EOS_SLOT, BOS_SLOT = -1, -2  # placeholders in a plan, resolved when the ids are known


class _Plan:
    """Every sample as a flat list of parts: a text slot (or BOS/EOS), whether it is trained, its sample."""

    def __init__(self):
        self.table = _Table()
        self.slots: list[int] = []
        self.flags: list[bool] = []
        self.rows: list[int] = []


def _plan(examples, template: Template, split_pieces: bool, bos: bool) -> _Plan:
    """Parts of all samples. split_pieces: the template's constant text and each message content are separate
    texts (constant runs merged); otherwise whole segments (LLaMA-Factory's scheme). EOS after each answer."""
    plan = _Plan()
    add, slots, flags, rows = plan.table.add, plan.slots, plan.flags, plan.rows
    for k, ex in enumerate(examples):
        if bos:
            slots.append(BOS_SLOT)
            flags.append(False)
            rows.append(k)
        if split_pieces:
            pieces = template.render_pieces(ex["messages"])
        else:
            pieces = [(t, tr, False) for t, tr in template.render_segments(ex["messages"])]
        run, run_tr, run_const = "", None, False
        for text, trainable, const in pieces + [("", None, False)]:  # sentinel flushes the last run
            if run_tr is not None and (trainable != run_tr or not (const and run_const) or not split_pieces):
                slots.append(add(run))
                flags.append(run_tr)
                rows.append(k)
                if run_tr and trainable is not True:
                    slots.append(EOS_SLOT)
                    flags.append(True)
                    rows.append(k)
                run, run_tr = "", None
            if trainable is None:
                break
            run_const = const if run_tr is None else (run_const and const)
            run, run_tr = run + text, trainable
    return plan


def _assemble(plan: _Plan, ids: list[list[int]], bos: int | None, eos: int):
    """(values, trained, tok_row) flat over all tokens of all samples: a vectorised gather of the slots' ids."""
    from itertools import chain

    import numpy as np

    ids = list(ids) + [[eos], [bos] if bos is not None else []]
    ulen = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    ustart = np.zeros(len(ids), dtype=np.int64)
    np.cumsum(ulen[:-1], out=ustart[1:])
    uvals = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(ulen.sum()))
    s = np.array(plan.slots, dtype=np.int64)
    s = np.where(s == EOS_SLOT, len(ids) - 2, np.where(s == BOS_SLOT, len(ids) - 1, s))
    plen = ulen[s]  # (P,) tokens per part
    total = int(plen.sum())
    pstart = np.zeros(len(s), dtype=np.int64)
    np.cumsum(plen[:-1], out=pstart[1:])
    idx = np.arange(total, dtype=np.int64) + np.repeat(ustart[s] - pstart, plen)  # (N,)
    values = uvals[idx]  # (N,)
    trained = np.repeat(np.array(plan.flags, dtype=bool), plen)  # (N,)
    tok_row = np.repeat(np.array(plan.rows, dtype=np.int64), plen)  # (N,)
    return values, trained, tok_row


VERIFY = 64  # examples on which piecewise encoding must equal whole-segment encoding before it is used


def _encode_flat(examples, tokenizer, template: Template, batched: bool, bos: int | None, eos: int,
                 path: str | None = None):
    """(values, trained, tok_row, path) over all tokens of all samples.

    Fast path: encode the template's constant text and the message contents separately, each unique text
    once, in batched calls. It is used only when it gives exactly the whole-segment encoding on a sample
    of examples (true for pre-tokenizers that split at the template's line breaks and punctuation);
    otherwise each whole segment is encoded (LLaMA-Factory's scheme). `path` skips the decision.
    """
    import numpy as np

    has_bos = bos is not None
    if path is None:
        path = "batched-segments" if batched else "per-text"
        if batched and examples:
            n = len(examples)
            probe = [examples[i] for i in sorted(set(range(min(VERIFY // 2, n))) |
                                                 set(range(0, n, max(1, n // (VERIFY // 2)))))]
            pp, pw = _plan(probe, template, True, has_bos), _plan(probe, template, False, has_bos)
            a = _assemble(pp, _encode_unique(pp.table.texts, tokenizer, "fast"), bos, eos)
            b = _assemble(pw, _encode_unique(pw.table.texts, tokenizer, "call"), bos, eos)
            if all(np.array_equal(x, y) for x, y in zip(a, b)):
                path = "batched"
    plan = _plan(examples, template, path == "batched", has_bos)
    mode = {"batched": "fast", "batched-segments": "call", "per-text": "single"}[path]
    return (*_assemble(plan, _encode_unique(plan.table.texts, tokenizer, mode), bos, eos), path)


CHUNK_EXAMPLES = 8192  # examples assembled at a time (bounds the temporary arrays)


def _encode_arrays(examples, tokenizer, template: str | Template, cutoff_len: int, train_on_inputs: bool,
                   batched: bool | None):
    """Flat numpy arrays: (input_ids, labels, offsets) of the kept samples, and the report (vectorised assembly)."""
    import numpy as np

    if cutoff_len <= 0:
        raise LabkitError(f"cutoff_len must be positive, got {cutoff_len}")
    template = get_template(template)
    batched = bool(getattr(tokenizer, "is_fast", False)) if batched is None else batched
    bos, eos = special_ids(tokenizer)
    examples = list(examples)
    path = None
    ids_parts, lab_parts, len_parts, kept_parts = [], [], [], []
    stats = {"lengths": [], "trained": [], "ok": []}
    for c0 in range(0, max(len(examples), 1), CHUNK_EXAMPLES):
        chunk = examples[c0:c0 + CHUNK_EXAMPLES]
        values, trained, tok_row, path = _encode_flat(chunk, tokenizer, template, batched, bos, eos, path)
        n = len(chunk)
        lengths = np.bincount(tok_row, minlength=n).astype(np.int64)  # (n,) untruncated
        starts = np.zeros(n, dtype=np.int64)
        if n > 1:
            np.cumsum(lengths[:-1], out=starts[1:])
        keep = (np.arange(len(values), dtype=np.int64) - starts[tok_row]) < cutoff_len  # position < cutoff
        n_trained = np.bincount(tok_row[keep & trained], minlength=n)  # (n,) answer tokens left after the cut
        ok = n_trained > 0 if not train_on_inputs else lengths > 0
        keep &= ok[tok_row]
        ids_parts.append(values[keep])
        lab_parts.append((values if train_on_inputs else np.where(trained, values, IGNORE_INDEX))[keep])
        del values, trained, tok_row, keep
        len_parts.append(np.minimum(lengths, cutoff_len)[ok])
        kept_parts.append(np.flatnonzero(ok) + c0)
        stats["lengths"].append(lengths)
        stats["trained"].append(n_trained[ok])
        stats["ok"].append(ok)
    lengths = np.concatenate(stats["lengths"]) if examples else np.zeros(0, dtype=np.int64)
    ok = np.concatenate(stats["ok"]) if examples else np.zeros(0, dtype=bool)
    kept_len = np.concatenate(len_parts) if examples else np.zeros(0, dtype=np.int64)
    report = TokenizeReport(cutoff_len=cutoff_len, path=path)
    over = lengths > cutoff_len
    report.samples = len(examples)
    report.lengths = lengths.tolist()
    report.truncated = int(over.sum())
    report.tokens_cut = int((lengths - cutoff_len)[over].sum())
    report.dropped_no_target = int((~ok).sum())
    report.kept_indices = np.concatenate(kept_parts).tolist() if examples else []
    report.kept = len(report.kept_indices)
    report.total_tokens = int(kept_len.sum())
    report.trainable_tokens = (report.total_tokens if train_on_inputs else
                               int(sum(int(t.sum()) for t in stats["trained"])))
    report.max_len = int(kept_len.max()) if report.kept else 0
    input_ids = np.concatenate(ids_parts) if examples else np.zeros(0, dtype=np.int64)
    labels = np.concatenate(lab_parts) if examples else np.zeros(0, dtype=np.int64)
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
