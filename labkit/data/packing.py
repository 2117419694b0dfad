"""Sample packing: documents flattened into rows (DocumentCollator), pre-packed rows with a 4-D mask, padding."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

import torch

from labkit.errors import LabkitError

IGNORE_INDEX = -100


def _bins(lengths: list[int], max_len: int) -> list[list[int]]:
    """Best-fit-decreasing: indices grouped so each group's total length <= max_len; groups keep sample order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    caps: list[tuple[int, int]] = []  # (remaining capacity, bin id), sorted
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(caps, (n, -1))
        if k < len(caps):
            cap, b = caps.pop(k)
        else:
            cap, b = max_len, len(bins)
            bins.append([])
        bins[b].append(i)
        if cap - n > 0:
            bisect.insort(caps, (cap - n, b))
    for b in bins:
        b.sort()
    bins.sort(key=lambda b: b[0])
    return bins


def pack_dataset(ds, max_len: int):
    """Pack tokenized samples into rows of at most `max_len` tokens.

    Returns a Dataset with input_ids, labels, position_ids (restart at 0 for every sample) and seq_lens.
    The first label of every sample is -100 (it would otherwise be predicted from the previous sample).
    Samples longer than max_len are cut to max_len. Use PackedCollator to build the block-diagonal mask.
    """
    import datasets

    if max_len <= 0:
        raise LabkitError(f"max_len must be positive, got {max_len}")
    input_ids = [list(x)[:max_len] for x in ds["input_ids"]]
    labels = [list(x)[:max_len] for x in ds["labels"]]
    cols: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []}
    for group in _bins([len(x) for x in input_ids], max_len):
        ids, lab, pos, lens = [], [], [], []
        for i in group:
            n = len(input_ids[i])
            ids += input_ids[i]
            lab += [IGNORE_INDEX] + labels[i][1:]
            pos += range(n)
            lens.append(n)
        cols["input_ids"].append(ids)
        cols["labels"].append(lab)
        cols["position_ids"].append(pos)
        cols["seq_lens"].append(lens)
    features = datasets.Features({k: datasets.Sequence(datasets.Value("int64")) for k in cols})
    return datasets.Dataset.from_dict(cols, features=features)


def block_diagonal_mask(position_ids: torch.Tensor, valid: torch.Tensor | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask (B, 1, T, T): 0 where token i may attend to j (same sample, j <= i), finfo.min elsewhere.

    Samples are delimited by position_ids restarting at 0. Padding (valid == 0) attends only to padding.
    """
    position_ids = torch.as_tensor(position_ids)  # (B, T)
    B, T = position_ids.shape
    seg = torch.cumsum((position_ids == 0).long(), dim=1)  # (B, T) sample number, from 1
    if valid is not None:
        seg = torch.where(torch.as_tensor(valid).bool(), seg, torch.zeros_like(seg))
    same = seg[:, :, None] == seg[:, None, :]  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
    allowed = same & causal
    mask = torch.zeros(B, 1, T, T, dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return mask  # (B, 1, T, T)


def _pad_id(value) -> int:
    """An int pad id; a tokenizer passed instead gives its pad id (else eos, else 0)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(value, attr, None)
        if isinstance(v, int):
            return v
    if value is None:
        return 0
    raise LabkitError(f"pad_token_id must be an int (or a tokenizer), got {type(value).__name__}")


def _pad(rows: list[list[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([list(r) + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def _target_len(n: int, multiple: int | None) -> int:
    return n if not multiple else ((n + multiple - 1) // multiple) * multiple


@dataclass
class PackedCollator:
    """Batch packed rows: right-pad, labels -100 on padding, 4-D additive float mask (B, 1, T, T).

    A float mask (not bool) is required for eager attention. `dtype` should match the model's compute dtype.
    Samples are found from position_ids (so Trainer may drop the seq_lens column).
    """

    pad_token_id: int = 0  # or a tokenizer (its pad id, else eos id)
    dtype: torch.dtype = torch.float32
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        self.pad_token_id = _pad_id(self.pad_token_id)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        T = _target_len(max(len(f["input_ids"]) for f in features), self.pad_to_multiple_of)
        input_ids = _pad([f["input_ids"] for f in features], self.pad_token_id, T)  # (B, T)
        labels = _pad([f["labels"] for f in features], IGNORE_INDEX, T)  # (B, T)
        position_ids = _pad([f["position_ids"] for f in features], 0, T)  # (B, T)
        valid = _pad([[1] * len(f["input_ids"]) for f in features], 0, T)  # (B, T)
        mask = block_diagonal_mask(position_ids, valid, self.dtype)  # (B, 1, T, T)
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": mask}


@dataclass
class DocumentCollator:
    """Flatten a micro-batch of samples into one row (1, sum of lengths), no padding, no mask.

    Outputs input_ids, labels (the first label of every sample is -100: it would be predicted from the previous
    sample), position_ids restarting at 0 per sample, and the flash-attention convention `cu_seq_lens_q/k`
    (int32, (n+1,)) and `max_length_q/k` (as transformers' DataCollatorWithFlattening). With
    `labkit.models.attention` ("labkit_docs") each sample attends only within itself, computed per document;
    with "sdpa" transformers builds the block mask from position_ids (right, but dense). The samples of a
    micro-batch are those the sampler gave: packing here never changes what an optimizer step contains.
    """

    pad_token_id: int = 0  # unused (no padding); kept so it is a drop-in for the other collators

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        import numpy as np

        lengths = np.fromiter((len(f["input_ids"]) for f in features), dtype=np.int64, count=len(features))  # (n,)
        cu = np.zeros(len(features) + 1, dtype=np.int64)
        np.cumsum(lengths, out=cu[1:])
        total = int(cu[-1])
        ids = np.concatenate([np.asarray(f["input_ids"], dtype=np.int64) for f in features])  # (T,)
        if "labels" in features[0]:
            labels = np.concatenate([np.asarray(f["labels"], dtype=np.int64) for f in features])  # (T,)
        else:
            labels = ids.copy()
        labels[cu[:-1]] = IGNORE_INDEX
        position_ids = np.arange(total, dtype=np.int64) - np.repeat(cu[:-1], lengths)  # (T,)
        cu_t = torch.from_numpy(cu.astype(np.int32))
        longest = int(lengths.max()) if len(lengths) else 0
        return {"input_ids": torch.from_numpy(ids)[None], "labels": torch.from_numpy(labels)[None],  # (1, T)
                "position_ids": torch.from_numpy(position_ids)[None],  # (1, T)
                "cu_seq_lens_q": cu_t, "cu_seq_lens_k": cu_t, "max_length_q": longest, "max_length_k": longest}


@dataclass
class PaddingCollator:
    """Batch unpacked samples: right-pad to the longest (or a multiple), labels -100 and attention_mask 0 on padding."""

    pad_token_id: int = 0  # or a tokenizer (its pad id, else eos id)
    pad_to_multiple_of: int | None = None
    padding_side: str = "right"

    def __post_init__(self):
        self.pad_token_id = _pad_id(self.pad_token_id)
        if self.padding_side not in ("right", "left"):
            raise LabkitError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        T = _target_len(max(len(f["input_ids"]) for f in features), self.pad_to_multiple_of)

        def pad(rows, value):
            if self.padding_side == "left":
                return torch.tensor([[value] * (T - len(r)) + list(r) for r in rows], dtype=torch.long)
            return _pad(rows, value, T)

        out = {
            "input_ids": pad([f["input_ids"] for f in features], self.pad_token_id),  # (B, T)
            "attention_mask": pad([[1] * len(f["input_ids"]) for f in features], 0),  # (B, T)
        }
        if "labels" in features[0]:
            out["labels"] = pad([f["labels"] for f in features], IGNORE_INDEX)  # (B, T)
        return out


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int = 42, mega: int = 50) -> list[list[int]]:
    """Batches of similar length (less padding), the alternative to packing; as HF's group_by_length.

    Shuffle, cut into mega-batches of batch_size*mega, sort each by length, split into batches; the batch with
    the longest sample comes first (an out-of-memory error shows at step 1, not hours later).
    """
    if batch_size <= 0:
        raise LabkitError(f"batch_size must be positive, got {batch_size}")
    idx = list(range(len(lengths)))
    random.Random(seed).shuffle(idx)
    size = batch_size * mega
    batches = []
    for m in range(0, len(idx), size):
        chunk = sorted(idx[m:m + size], key=lambda i: -lengths[i])
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """A batch sampler over length-grouped batches; reshuffled per epoch (`set_epoch`). With HF Trainer use
    `group_by_length=True` instead."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 42):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        yield from length_grouped_batches(self.lengths, self.batch_size, self.seed + self.epoch)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size if self.lengths else 0
