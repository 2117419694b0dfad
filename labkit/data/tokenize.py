"""Tokenization for SFT by each template source's rule: turns -> input_ids/labels (-100 on prompts), cutoff report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from labkit.data.templates import Template, check_examples, get_template
from labkit.data.tokenize_rules import IGNORE_INDEX, encode_rows, encode_unique
from labkit.errors import LabkitError
from labkit.log import warn

LOUD_SHARE = 0.05  # more than this share of samples cut or dropped -> a warning
LET_DEFAULT_LENGTH = 512  # LLaMA-Efficient-Tuning's default max_source_length / max_target_length


@dataclass
class TokenizeReport:
    """What tokenization did: counts, truncation (samples and tokens cut), drops and the untruncated lengths."""

    cutoff_len: int
    samples: int = 0
    kept: int = 0
    truncated: int = 0  # kept samples that were cut
    tokens_cut: int = 0  # tokens removed from kept samples
    dropped_no_target: int = 0  # all dropped samples: nothing left to train after the cut
    dropped_prompt: int = 0  # of which: the prompt alone does not fit in cutoff_len
    total_tokens: int = 0
    trainable_tokens: int = 0
    max_len: int = 0
    scheme: str = ""  # the template source's tokenization rule
    path: str = ""  # "batched" (fast tokenizer), "batched-segments" (fallback) or "per-text" (slow tokenizers)
    lengths: list[int] = field(default_factory=list, repr=False)  # untruncated, per sample
    prompt_lengths: list[int] = field(default_factory=list, repr=False)  # first prompt (with BOS), per sample
    kept_indices: list[int] = field(default_factory=list, repr=False)  # example index of each dataset row

    @property
    def dropped(self) -> int:
        return self.dropped_no_target

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("lengths", "prompt_lengths", "kept_indices"):
            d.pop(key)
        return d

    def summary(self) -> str:
        return (f"{self.kept}/{self.samples} samples, {self.total_tokens} tokens ({self.trainable_tokens} trained); "
                f"{self.truncated} truncated at {self.cutoff_len} ({self.tokens_cut} tokens cut), "
                f"{self.dropped_no_target} dropped (no response left; {self.dropped_prompt} of them: prompt longer "
                "than cutoff_len)")

    def check(self) -> None:
        """Warn when more than 5% of the samples were cut or dropped; raise when nothing is left to train."""
        if not self.samples:
            return
        if not self.kept:
            p = self.prompt_lengths or [0]
            raise LabkitError(f"cutoff_len {self.cutoff_len}: no sample has room for its response ({self.samples} "
                              f"dropped); the prompts are {min(p)} to {max(p)} tokens (longest prompt {max(p)}): "
                              f"raise cutoff_len above {max(p)}")
        bad = self.truncated + self.dropped_no_target
        if bad > LOUD_SHARE * self.samples:
            warn(f"cutoff_len {self.cutoff_len}: {bad} of {self.samples} samples ({100 * bad / self.samples:.0f}%) "
                 f"cut or dropped: {self.truncated} truncated ({self.tokens_cut} tokens cut), "
                 f"{self.dropped_no_target} dropped ({self.dropped_prompt} with a prompt longer than cutoff_len); "
                 f"the longest sample has {max(self.lengths)} tokens: raise cutoff_len to keep them")


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


# ============================================================================================ labkit's own rule
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


def _plan(examples, template, split_pieces: bool, bos: bool) -> _Plan:
    """Parts of all samples. split_pieces: the template's constant text and each message content are separate
    texts (constant runs merged); otherwise whole segments. EOS after each answer."""
    plan = _Plan()
    add, slots, flags, rows = plan.table.add, plan.slots, plan.flags, plan.rows
    for k, ex in enumerate(examples):
        if bos:
            slots.append(BOS_SLOT)
            flags.append(False)
            rows.append(k)
        pieces = template.render_pieces(ex["messages"])
        if not split_pieces:
            pieces = _merge_pieces(pieces)
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


def _merge_pieces(pieces: list[tuple[str, bool, bool]]) -> list[tuple[str, bool, bool]]:
    """Consecutive pieces with the same `trainable` joined: the segments."""
    out: list[tuple[str, bool, bool]] = []
    for text, tr, _ in pieces:
        if out and out[-1][1] == tr:
            out[-1] = (out[-1][0] + text, tr, False)
        else:
            out.append((text, tr, False))
    return [p for p in out if p[0] or p[1]]


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


def _encode_flat(examples, tokenizer, template, batched: bool, bos: int | None, eos: int, path: str | None = None):
    """(values, trained, tok_row, path) over all tokens of all samples.

    Fast path: encode the template's constant text and the message contents separately, each unique text
    once, in batched calls. It is used only when it gives exactly the whole-segment encoding on a sample
    of examples (true for pre-tokenizers that split at the template's line breaks and punctuation);
    otherwise each whole segment is encoded. `path` skips the decision.
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
            a = _assemble(pp, encode_unique(pp.table.texts, tokenizer, "fast"), bos, eos)
            b = _assemble(pw, encode_unique(pw.table.texts, tokenizer, "call"), bos, eos)
            if all(np.array_equal(x, y) for x, y in zip(a, b)):
                path = "batched"
    plan = _plan(examples, template, path == "batched", has_bos)
    mode = {"batched": "fast", "batched-segments": "call", "per-text": "single"}[path]
    return (*_assemble(plan, encode_unique(plan.table.texts, tokenizer, mode), bos, eos), path)


CHUNK_EXAMPLES = 8192  # examples assembled at a time (bounds the temporary arrays)


def _labkit_arrays(examples, tokenizer, template, cutoff_len: int, train_on_inputs: bool, batched: bool):
    """labkit's rule, vectorised: flat (input_ids, labels, offsets) of the kept samples and the report."""
    import numpy as np

    bos, eos = special_ids(tokenizer)
    path = None
    ids_parts, lab_parts, len_parts, kept_parts = [], [], [], []
    stats = {"lengths": [], "prompt": [], "trained": [], "ok": []}
    for c0 in range(0, max(len(examples), 1), CHUNK_EXAMPLES):
        chunk = examples[c0:c0 + CHUNK_EXAMPLES]
        values, trained, tok_row, path = _encode_flat(chunk, tokenizer, template, batched, bos, eos, path)
        n = len(chunk)
        lengths = np.bincount(tok_row, minlength=n).astype(np.int64)  # (n,) untruncated
        starts = np.zeros(n, dtype=np.int64)
        if n > 1:
            np.cumsum(lengths[:-1], out=starts[1:])
        pos = np.arange(len(values), dtype=np.int64) - starts[tok_row]  # (N,) position in its sample
        first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)  # (n,) position of the first trained token
        np.minimum.at(first, tok_row[trained], pos[trained])
        keep = pos < cutoff_len
        n_trained = np.bincount(tok_row[keep & trained], minlength=n)  # (n,) answer tokens left after the cut
        ok = first < cutoff_len  # the prompt fits with at least one answer token
        keep &= ok[tok_row]
        ids_parts.append(values[keep])
        lab_parts.append((values if train_on_inputs else np.where(trained, values, IGNORE_INDEX))[keep])
        del values, trained, tok_row, keep, pos
        len_parts.append(np.minimum(lengths, cutoff_len)[ok])
        kept_parts.append(np.flatnonzero(ok) + c0)
        stats["lengths"].append(lengths)
        stats["prompt"].append(np.minimum(first, lengths))
        stats["trained"].append(n_trained[ok])
        stats["ok"].append(ok)
    cat = (lambda key: np.concatenate(stats[key])) if examples else (lambda key: np.zeros(0, dtype=np.int64))
    lengths, ok = cat("lengths"), cat("ok").astype(bool)
    kept_len = np.concatenate(len_parts) if examples else np.zeros(0, dtype=np.int64)
    report = TokenizeReport(cutoff_len=cutoff_len, path=path, scheme="labkit", samples=len(examples))
    report.lengths, report.prompt_lengths = lengths.tolist(), cat("prompt").tolist()
    report.kept_indices = np.concatenate(kept_parts).tolist() if examples else []
    report.kept = len(report.kept_indices)
    report.truncated = int((lengths[ok] > cutoff_len).sum())
    report.tokens_cut = int((lengths[ok] - kept_len).sum())
    report.dropped_no_target = report.dropped_prompt = int((~ok).sum())
    report.total_tokens = int(kept_len.sum())
    report.trainable_tokens = (report.total_tokens if train_on_inputs else
                               int(sum(int(t.sum()) for t in stats["trained"])))
    report.max_len = int(kept_len.max()) if report.kept else 0
    input_ids = np.concatenate(ids_parts) if examples else np.zeros(0, dtype=np.int64)
    labels = np.concatenate(lab_parts) if examples else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(report.kept + 1, dtype=np.int64)
    np.cumsum(kept_len, out=offsets[1:])
    return input_ids, labels, offsets, report


# ============================================================================================ the tools' rules
def _rows_to_arrays(rows, report: TokenizeReport, train_on_inputs: bool):
    """Per-sample (ids, labels) rows -> flat arrays and offsets; fills the report's kept counts."""
    import numpy as np

    kept = [(k, ids, lab) for k, (ids, lab) in enumerate(rows) if ids is not None]
    report.kept_indices = [k for k, _, _ in kept]
    report.kept = len(kept)
    lens = np.array([len(ids) for _, ids, _ in kept], dtype=np.int64)
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    input_ids = np.fromiter((t for _, ids, _ in kept for t in ids), dtype=np.int64, count=int(lens.sum()))
    labels = np.fromiter((t for _, _, lab in kept for t in lab), dtype=np.int64, count=int(lens.sum()))
    report.total_tokens = int(lens.sum())
    report.trainable_tokens = int((labels != IGNORE_INDEX).sum())
    report.max_len = int(lens.max()) if len(kept) else 0
    return input_ids, labels, offsets, report


def _encode_arrays(examples, tokenizer, template: str | Template, cutoff_len: int, train_on_inputs: bool,
                   batched: bool | None, max_source_length: int = 0, max_target_length: int = 0,
                   add_eos_token: bool = True):
    """Flat numpy arrays (input_ids, labels, offsets) of the kept samples, and the report, by the source's rule."""
    if cutoff_len <= 0:
        raise LabkitError(f"cutoff_len must be positive, got {cutoff_len}")
    template = get_template(template)
    special_ids(tokenizer)  # the tokenizer has an EOS
    examples = list(examples)
    check_examples(examples, template)
    batched = bool(getattr(tokenizer, "is_fast", False)) if batched is None else batched
    if template.scheme == "labkit":
        return _labkit_arrays(examples, tokenizer, template, cutoff_len, train_on_inputs, batched)
    kw = dict(max_source_length=max_source_length or LET_DEFAULT_LENGTH,
              max_target_length=max_target_length or LET_DEFAULT_LENGTH, add_eos_token=add_eos_token)
    if template.scheme == "whole" and batched and _whole_fast_ok(examples, tokenizer, template, cutoff_len,
                                                                 train_on_inputs, kw):
        out = _labkit_arrays(examples, tokenizer, template, cutoff_len, train_on_inputs, batched)
        out[3].scheme = "whole"
        return out
    return _exact_arrays(examples, tokenizer, template, cutoff_len, train_on_inputs, batched, kw)


def _exact_arrays(examples, tokenizer, template, cutoff_len, train_on_inputs, batched, kw):
    """The source's rule run as the tool runs it (per sample, texts encoded in batched calls)."""
    report = TokenizeReport(cutoff_len=cutoff_len, path="batched-segments" if batched else "per-text",
                            scheme=template.scheme, samples=len(examples))
    rows = encode_rows(examples, tokenizer, template, cutoff_len, train_on_inputs, batched, report, **kw)
    return _rows_to_arrays(rows, report, train_on_inputs)


def _whole_fast_ok(examples, tokenizer, template, cutoff_len, train_on_inputs, kw) -> bool:
    """alpaca-lora's whole-text rule equals labkit's vectorised pieces path (prompt and output encoded apart, BOS
    when the tokenizer adds it, EOS after the output, cut at the end, the prompt masked) when the tokenizer adds
    nothing after the text, no answer holds the EOS string, and both give identical ids and labels on a sample."""
    import numpy as np

    from labkit.data.tokenize_rules import _special_shape

    if _special_shape(tokenizer)[1] or not examples or not hasattr(template, "render_pieces"):
        return False
    eos = tokenizer.eos_token
    if any(eos in ex["messages"][-1]["content"] for ex in examples):
        return False
    n = len(examples)
    probe = [examples[i] for i in sorted(set(range(min(VERIFY // 2, n))) |
                                         set(range(0, n, max(1, n // (VERIFY // 2)))))]
    fast = _labkit_arrays(probe, tokenizer, template, cutoff_len, train_on_inputs, True)
    exact = _exact_arrays(probe, tokenizer, template, cutoff_len, train_on_inputs, True, kw)
    return (all(np.array_equal(a, b) for a, b in zip(fast[:3], exact[:3])) and
            fast[3].kept_indices == exact[3].kept_indices)


def encode_examples(examples, tokenizer, template: str | Template, cutoff_len: int, train_on_inputs: bool = False,
                    batched: bool | None = None, *, max_source_length: int = 0, max_target_length: int = 0,
                    add_eos_token: bool = True) -> tuple[dict[str, list], TokenizeReport]:
    """Columns {input_ids, labels, attention_mask} as Python lists, plus the report. See tokenize_examples."""
    import numpy as np

    input_ids, labels, offsets, report = _encode_arrays(examples, tokenizer, template, cutoff_len, train_on_inputs,
                                                        batched, max_source_length, max_target_length, add_eos_token)
    report.check()
    cuts = offsets[1:-1]
    ids = [a.tolist() for a in np.split(input_ids, cuts)] if report.kept else []
    labs = [a.tolist() for a in np.split(labels, cuts)] if report.kept else []
    return {"input_ids": ids, "labels": labs, "attention_mask": [[1] * len(x) for x in ids]}, report


def _list_column(values, offsets):
    """A list<int64> Arrow column from flat values and row offsets (no per-row Python work)."""
    import pyarrow as pa

    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)).cast(pa.list_(pa.int64()))


def tokenize_examples(examples, tokenizer, template: str | Template, cutoff_len: int, train_on_inputs: bool = False,
                      batched: bool | None = None, *, max_source_length: int = 0, max_target_length: int = 0,
                      add_eos_token: bool = True):
    """Examples -> (datasets.Dataset with input_ids/labels/attention_mask, TokenizeReport).

    The template's source decides the rule (`template.scheme`; tokenization knows only turns of pieces):
    - "labkit": the segments, BOS when the tokenizer adds one, EOS after each answer, samples cut at the end.
    - "whole" (alpaca-lora): tokenizer(prompt + output) truncated at cutoff_len, EOS appended when it fits,
      labels masked over the length of tokenizer(prompt) (minus one with add_eos_token), as finetune.py does.
    - "let" (LLaMA-Efficient-Tuning): per turn tokenizer.encode(source) (special tokens on the first) cut at
      max_source_length, encode(target) cut at max_target_length - 1, + EOS; a turn that no longer fits in
      min(max_source_length + max_target_length, cutoff_len) ends the sample.
    - "llamafactory": per message, every piece encoded on its own; infer_seqlen cuts each turn to the room
      left in cutoff_len; efficient_eos; train_on_inputs is its train_on_prompt.
    Samples with nothing left to train are dropped and counted; for the labkit and alpaca-lora rules also
    samples whose prompt alone fills cutoff_len. Labels are -100 on prompts unless
    `train_on_inputs`; `max_source_length`/`max_target_length` (LET; 0 = its default 512) and `add_eos_token`
    (alpaca-lora) apply to those sources only. Records the template cannot represent raise (nothing dropped
    silently); samples with nothing to train are dropped and counted; >5% cut or dropped warns; none left raises.
    `batched` (default: the tokenizer is fast) encodes the texts in a few batched calls.
    """
    import datasets
    import numpy as np
    import pyarrow as pa

    input_ids, labels, offsets, report = _encode_arrays(examples, tokenizer, template, cutoff_len, train_on_inputs,
                                                        batched, max_source_length, max_target_length, add_eos_token)
    report.check()
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
