"""How training rows are formed: packed rows with a block-diagonal mask, or padded samples; the collator."""

from __future__ import annotations

from labkit.train.config import TrainConfig


def batching(cfg: TrainConfig, tokenizer, train_ds, eval_ds):
    """Packed rows + block-diagonal mask collator, or padding to the longest."""
    from labkit.data import packing

    if cfg.packing:
        train_ds = packing.pack_dataset(train_ds, cfg.cutoff_len)
        if eval_ds is not None:
            eval_ds = packing.pack_dataset(eval_ds, cfg.cutoff_len)
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision, torch.float32)
        if dtype == torch.float16 and not torch.cuda.is_available():
            dtype = torch.float32
        return train_ds, eval_ds, packing.PackedCollator(tokenizer, dtype=dtype)
    return train_ds, eval_ds, packing.PaddingCollator(tokenizer)
