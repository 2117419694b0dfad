"""Collators: flattened micro-batches with document attention equal separate runs (fp32, 1e-5); padding."""

import datasets
import pytest
import torch

from labkit.data.packing import IGNORE_INDEX, DocumentCollator, PaddingCollator

VOCAB = 97


def _samples(seed=0, n=7):
    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "labels": [], "attention_mask": []}
    for _ in range(n):
        length = int(torch.randint(5, 30, (1,), generator=g))
        ids = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        prompt = int(torch.randint(1, length - 1, (1,), generator=g))
        rows["input_ids"].append(ids)
        rows["labels"].append([IGNORE_INDEX] * prompt + ids[prompt:])
        rows["attention_mask"].append([1] * length)
    return datasets.Dataset.from_dict(rows)


def _llama(attn):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      attn_implementation=attn)
    return LlamaForCausalLM(cfg).eval()


def _baichuan(attn):
    from labkit.models import BaiChuanConfig, BaiChuanForCausalLM

    torch.manual_seed(0)
    cfg = BaiChuanConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256)
    cfg._attn_implementation = attn
    model = BaiChuanForCausalLM(cfg).eval()
    with torch.no_grad():  # larger attention weights: with init std 0.02 attention across samples changes outputs too little to see
        for name, p in model.named_parameters():
            if "W_pack" in name:
                p.normal_(0, 0.5)
    return model


def _reference(model, ds):
    """Each sample alone, no padding: (per-sample logits, summed loss, trained-token count)."""
    logits, total, count = [], 0.0, 0
    for ids, lab in zip(ds["input_ids"], ds["labels"]):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]))
        lg = out.logits[0]  # (T, V)
        logits.append(lg)
        tgt = torch.tensor(lab[1:])
        keep = tgt != IGNORE_INDEX
        total += torch.nn.functional.cross_entropy(lg[:-1][keep], tgt[keep], reduction="sum").item()
        count += int(keep.sum())
    return logits, total / count


def test_without_document_attention_samples_leak():
    """The control: a flattened row with restarted position_ids but the model's own attention lets one sample
    see the one before it on CPU (measured: they leak); labkit's document attention is what keeps them apart."""
    model = _llama("sdpa")
    ds = _samples()
    ref_logits, _ = _reference(model, ds)
    batch = DocumentCollator()([ds[i] for i in range(2)])
    with torch.no_grad():
        lg = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
    n0 = len(ds["input_ids"][0])
    assert (lg[n0:] - ref_logits[1]).abs().max() > 1e-3
    torch.testing.assert_close(lg[:n0], ref_logits[0], atol=1e-5, rtol=0)  # the first sample sees nothing else


def test_padding_collator():
    feats = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    b = PaddingCollator(pad_token_id=0, pad_to_multiple_of=4)(feats)
    assert b["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]

    class Tok:
        pad_token_id, eos_token_id = 7, 2

    assert PaddingCollator(Tok()).pad_token_id == 7
    left = PaddingCollator(pad_token_id=0, padding_side="left")(feats)
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]


def test_document_collator_flattens_without_padding():
    ds = _samples(n=5)
    feats = [ds[i] for i in range(len(ds))]
    batch = DocumentCollator()(feats)
    lengths = [len(f["input_ids"]) for f in feats]
    T = sum(lengths)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (1, T)
    assert "attention_mask" not in batch  # no (T, T) mask: documents come from cu_seq_lens / position_ids
    assert batch["cu_seq_lens_q"].tolist() == [0] + torch.tensor(lengths).cumsum(0).tolist()
    assert batch["cu_seq_lens_q"].dtype == torch.int32 and batch["max_length_q"] == max(lengths)
    start = 0
    for f, n in zip(feats, lengths):
        assert batch["input_ids"][0, start:start + n].tolist() == f["input_ids"]
        assert batch["position_ids"][0, start:start + n].tolist() == list(range(n))
        assert batch["labels"][0, start].item() == IGNORE_INDEX  # never predicted from the previous sample
        assert batch["labels"][0, start + 1:start + n].tolist() == f["labels"][1:]
        start += n


def test_document_collator_equals_separate_runs():
    """Flattened rows with labkit's document attention: every sample's logits equal running it alone."""
    from labkit.models.attention import use_docs_attention

    for model in (_llama("sdpa"), _baichuan("sdpa")):
        ds = _samples()
        ref_logits, ref_loss = _reference(model, ds)
        use_docs_attention(model)
        batch = DocumentCollator()([ds[i] for i in range(len(ds))])
        with torch.no_grad():
            out = model(**batch)
        assert abs(out.loss.item() - ref_loss) < 1e-5
        bounds = batch["cu_seq_lens_q"].tolist()
        for k, (s, e) in enumerate(zip(bounds, bounds[1:])):
            torch.testing.assert_close(out.logits[0, s:e], ref_logits[k], atol=1e-5, rtol=0)
