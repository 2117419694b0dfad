"""Collators: each micro-batch flattened into one row of documents (DocumentCollator, training's default), or padded."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labkit.errors import LabkitError

IGNORE_INDEX = -100


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
