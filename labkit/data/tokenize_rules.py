"""The tools' tokenization rules on turns of pieces: alpaca-lora (whole text), LET (per turn), LLaMA-Factory."""

from __future__ import annotations

from labkit.data.templates.base import BOS, EOS, TOKEN, Piece
from labkit.log import notice

IGNORE_INDEX = -100
BATCH_TEXTS = 8192  # texts per call on the batched path


def encode_unique(texts: list[str], tokenizer, mode: str, special: bool = False) -> list[list[int]]:
    """Token ids of each text. mode: "fast" (the Rust backend's encode_batch_fast, no offsets), "call" (batched
    tokenizer(...) calls) or "single" (one tokenizer.encode per text). `special`: with the tokenizer's special
    tokens (BOS), as tokenizer(text) adds them."""
    if mode == "single":
        return [tokenizer.encode(t, add_special_tokens=special) if (t or special) else [] for t in texts]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None) if mode == "fast" else None
    out: list[list[int]] = []
    for i in range(0, len(texts), BATCH_TEXTS):
        chunk = texts[i:i + BATCH_TEXTS]
        if fast is not None:
            out += [e.ids for e in fast(chunk, add_special_tokens=special)]
        else:
            out += tokenizer(chunk, add_special_tokens=special)["input_ids"] if chunk else []
    return out


class _Texts:
    """Texts collected first, each unique one encoded once (batched calls or one call per text)."""

    def __init__(self, tokenizer, batched: bool):
        self.tokenizer, self.mode = tokenizer, "call" if batched else "single"
        self.slots: dict[tuple[str, bool], int] = {}
        self.ids: list[list[int]] = []

    def add(self, text: str, special: bool = False) -> int:
        return self.slots.setdefault((text, special), len(self.slots))

    def encode(self) -> None:
        keys = list(self.slots)
        self.ids = [[] for _ in keys]
        for special in (False, True):
            todo = [(self.slots[k], k[0]) for k in keys if k[1] == special]
            for (slot, _), ids in zip(todo, encode_unique([t for _, t in todo], self.tokenizer, self.mode, special)):
                self.ids[slot] = list(ids)


class _Specials:
    """Ids of BOS/EOS/named-token pieces for one tokenizer and template (LLaMA-Factory's conversions)."""

    def __init__(self, tokenizer, template):
        self.tokenizer, self.template = tokenizer, template
        self.eos = tokenizer.eos_token_id
        self.vocab = None
        self.told: set[str] = set()  # tokens already reported missing (one notice each)
        if getattr(template, "replace_eos", False) and template.eos_token != tokenizer.eos_token:
            eos = self.token(template.eos_token)
            if eos is None:
                notice(f"template {template.qualified_name}: its EOS {template.eos_token!r} is not a token of this "
                       f"tokenizer; {tokenizer.eos_token!r} is used (LLaMA-Factory would add it as a new token)")
            else:
                self.eos = eos

    def token(self, name: str) -> int | None:
        if self.vocab is None:
            self.vocab = self.tokenizer.get_vocab()
        return self.vocab.get(name)

    def piece(self, p: Piece, texts: _Texts) -> int | tuple[int] | None:
        """An id, a text slot (1-tuple) or None (nothing, e.g. a BOS the tokenizer lacks)."""
        if p.kind == EOS:
            return self.eos
        if p.kind == BOS:
            return self.tokenizer.bos_token_id
        if p.kind == TOKEN:
            tid = self.token(p.value)
            if tid is not None:
                return tid
            if p.value not in self.told:
                self.told.add(p.value)
                notice(f"template {self.template.qualified_name}: {p.value!r} is not a token of this tokenizer; it "
                       "is encoded as text")
        return (texts.add(p.value),) if p.value else None


def _ids(parts: list, texts: _Texts) -> list[int]:
    out: list[int] = []
    for part in parts:
        if isinstance(part, tuple):
            out += texts.ids[part[0]]
        elif part is not None:
            out.append(part)
    return out


def _truncate(ids: list[int], cutoff: int, shape: tuple[int, int]) -> list[int]:
    """tokenizer(text, truncation=True, max_length=cutoff): the text's tokens cut, its special tokens kept."""
    if len(ids) <= cutoff:
        return ids
    pre, suf = shape
    body = ids[pre:len(ids) - suf] if suf else ids[pre:]
    return ids[:pre] + body[:max(0, cutoff - pre - suf)] + (ids[len(ids) - suf:] if suf else [])


def _special_shape(tokenizer) -> tuple[int, int]:
    """How many special tokens tokenizer(text) puts before and after the text's own tokens."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return i, len(full) - i - len(plain)
    return 0, 0


# ------------------------------------------------------------------------------------------------ the rules
def _whole_rows(turns, texts, tokenizer, eos, cutoff, train_on_inputs, add_eos_token, report, drop_cut_prompts=True):
    """alpaca-lora's finetune.py: tokenize(full) with EOS when it fits; labels masked over the prompt's length."""
    keys = [(texts.add(t[0].source[0].value + t[0].target[0].value, True), texts.add(t[0].source[0].value, True))
            for t in turns]
    texts.encode()
    shape = _special_shape(tokenizer)
    for full_slot, user_slot in keys:
        full, user = texts.ids[full_slot], texts.ids[user_slot]
        ids = _truncate(full, cutoff, shape)
        if ids and ids[-1] != eos and len(ids) < cutoff:
            ids = ids + [eos]
        labels = list(ids)
        if not train_on_inputs:
            u = _truncate(user, cutoff, shape)
            if add_eos_token and u and u[-1] != eos and len(u) < cutoff:
                u = u + [eos]
            n = len(u) - (1 if add_eos_token else 0)
            labels = ([IGNORE_INDEX] * n + labels[n:])[:len(ids)]
        untrunc = len(full) + (0 if full and full[-1] == eos else 1)
        yield ids, labels, untrunc, len(user), drop_cut_prompts and len(user) >= cutoff


def _let_rows(turns, texts, eos, cutoff, train_on_inputs, max_source, max_target, report):
    """LLaMA-Efficient-Tuning's preprocess_supervised_dataset: per turn source/target cuts, + EOS, BOS first."""
    keys = [[(texts.add(t.source[0].value, k == 0), texts.add(t.target[0].value)) for k, t in enumerate(ts)]
            for ts in turns]
    texts.encode()
    max_length = min(max_source + max_target, cutoff)
    for sample in keys:
        ids, labels, untrunc = [], [], 0
        first_len = len(texts.ids[sample[0][0]])
        for s_slot, t_slot in sample:
            s, t = texts.ids[s_slot], texts.ids[t_slot]
            untrunc += len(s) + len(t) + 1
            s, t = s[:max_source], t[:max(max_target - 1, 0)]
            if len(ids) + len(s) + len(t) + 1 > max_length:
                break
            ids += s + t + [eos]
            labels += (s if train_on_inputs else [IGNORE_INDEX] * len(s)) + t + [eos]
        yield ids, labels, untrunc, first_len, min(first_len, max_source) + 1 > max_length


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's infer_seqlen: the lengths a turn keeps in the room left (the source gives way first)."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def _lf_rows(turns, texts, specials, cutoff, train_on_inputs, template, report):
    """LLaMA-Factory's SupervisedDatasetProcessor._encode_data_example (mask_history off)."""
    eos, eff = specials.eos, template.efficient_eos
    keys = [[([specials.piece(p, texts) for p in t.source], [specials.piece(p, texts) for p in t.target]) for t in ts]
            for ts in turns]
    texts.encode()
    for sample in keys:
        pairs = [(_ids(s, texts), _ids(t, texts)) for s, t in sample]
        ids, labels = [], []
        total = 1 if eff else 0
        for k, (s, t) in enumerate(pairs):
            if total >= cutoff:
                break
            sl, tl = infer_seqlen(len(s), len(t), cutoff - total)
            s, t = s[:sl], t[:tl]
            total += sl + tl
            if train_on_inputs:
                src_label = s
            elif eff and k != 0 and sl:
                src_label = [eos] + [IGNORE_INDEX] * (sl - 1)
            else:
                src_label = [IGNORE_INDEX] * sl
            ids += s + t
            labels += src_label + t
        if eff:
            ids, labels = ids + [eos], labels + [eos]
        untrunc = sum(len(s) + len(t) for s, t in pairs) + (1 if eff else 0)
        yield ids, labels, untrunc, len(pairs[0][0]), False


def encode_rows(examples, tokenizer, template, cutoff_len: int, train_on_inputs: bool, batched: bool, report, *,
                max_source_length: int, max_target_length: int, add_eos_token: bool) -> list:
    """Per sample (input_ids, labels), or (None, None) when dropped; fills the report's lengths and counts."""
    from labkit.errors import LabkitError

    if template.efficient_eos and train_on_inputs:
        raise LabkitError(f"template {template.qualified_name}: train_on_inputs (LLaMA-Factory's train_on_prompt) "
                          "cannot be used with an efficient_eos template")
    turns = [template.turns(ex["messages"]) for ex in examples]
    texts = _Texts(tokenizer, batched)
    eos = tokenizer.eos_token_id
    if template.scheme == "whole":
        # alpaca-lora with train_on_inputs (its default) trains a cut prompt as it is: kept (and counted as
        # truncated) so a step holds the samples the tool's would; elsewhere a prompt that fills the cutoff is dropped
        keep_cut = train_on_inputs and template.source == "alpaca-lora"
        rows = _whole_rows(turns, texts, tokenizer, eos, cutoff_len, train_on_inputs, add_eos_token, report,
                           drop_cut_prompts=not keep_cut)
    elif template.scheme == "let":
        rows = _let_rows(turns, texts, eos, cutoff_len, train_on_inputs, max_source_length, max_target_length,
                         report)
    elif template.scheme == "llamafactory":
        rows = _lf_rows(turns, texts, _Specials(tokenizer, template), cutoff_len, train_on_inputs, template, report)
    else:
        raise LabkitError(f"template {template.qualified_name}: unknown tokenization scheme {template.scheme!r}")
    out = []
    for ids, labels, untrunc, prompt_len, prompt_too_long in rows:
        report.lengths.append(untrunc)
        report.prompt_lengths.append(prompt_len)
        trained = any(x != IGNORE_INDEX for x in labels)
        if prompt_too_long or not ids or not trained:
            report.dropped_no_target += 1
            report.dropped_prompt += int(prompt_too_long)
            out.append((None, None))
            continue
        if len(ids) < untrunc:
            report.truncated += 1
            report.tokens_cut += untrunc - len(ids)
        out.append((ids, labels))
    return out
