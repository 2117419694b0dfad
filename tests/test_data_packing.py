"""Packing: packed loss and logits equal unpacked runs (fp32, 1e-5) with sdpa and eager; collators; length grouping."""

import datasets
import pytest
import torch

from labkit.data.packing import (
    IGNORE_INDEX,
    LengthGroupedBatchSampler,
    PackedCollator,
    PaddingCollator,
    block_diagonal_mask,
    length_grouped_batches,
    pack_dataset,
)

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
    models = pytest.importorskip("labkit.models")
    cls = getattr(models, "BaiChuanForCausalLM", None)
    cfg_cls = getattr(models, "BaiChuanConfig", None)
    if cls is None or cfg_cls is None:
        pytest.skip("labkit.models has no BaiChuanForCausalLM yet")
    torch.manual_seed(0)
    cfg = cfg_cls(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256)
    cfg._attn_implementation = attn
    model = cls(cfg).eval()
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


@pytest.mark.parametrize("arch", ["llama", "baichuan"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_unpacked(arch, attn):
    model = _llama(attn) if arch == "llama" else _baichuan(attn)
    ds = _samples()
    ref_logits, ref_loss = _reference(model, ds)
    packed = pack_dataset(ds, max_len=64)
    assert len(packed) < len(ds)  # really packed
    batch = PackedCollator(pad_token_id=0)([packed[i] for i in range(len(packed))])
    assert batch["attention_mask"].shape == (len(packed), 1, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    with torch.no_grad():
        out = model(**batch)
    assert abs(out.loss.item() - ref_loss) < 1e-5
    for r, lens in enumerate(packed["seq_lens"]):
        start = 0
        for n in lens:
            # which sample is it? match by tokens
            ids = batch["input_ids"][r, start:start + n].tolist()
            k = ds["input_ids"].index(ids)
            torch.testing.assert_close(out.logits[r, start:start + n], ref_logits[k], atol=1e-5, rtol=0)
            start += n


def test_without_mask_samples_leak():
    """The control: restarted position_ids alone do not separate samples on CPU (measured: they leak)."""
    model = _llama("sdpa")
    ds = _samples()
    ref_logits, _ = _reference(model, ds)
    packed = pack_dataset(ds, max_len=64)
    row = next(r for r in range(len(packed)) if len(packed[r]["seq_lens"]) > 1)
    ids = torch.tensor([packed[row]["input_ids"]])
    pos = torch.tensor([packed[row]["position_ids"]])
    with torch.no_grad():
        lg = model(input_ids=ids, position_ids=pos).logits[0]
    n0 = packed[row]["seq_lens"][0]
    second = packed[row]["input_ids"][n0:n0 + packed[row]["seq_lens"][1]]
    k = ds["input_ids"].index(second)
    assert (lg[n0:n0 + len(second)] - ref_logits[k]).abs().max() > 1e-3


def test_pack_dataset_columns_and_fit():
    ds = _samples(n=20)
    packed = pack_dataset(ds, max_len=40)
    assert set(packed.column_names) == {"input_ids", "labels", "position_ids", "seq_lens"}
    total = 0
    for row in packed:
        assert len(row["input_ids"]) <= 40 and sum(row["seq_lens"]) == len(row["input_ids"])
        start = 0
        for n in row["seq_lens"]:
            assert row["position_ids"][start:start + n] == list(range(n))
            assert row["labels"][start] == IGNORE_INDEX
            start += n
        total += sum(row["seq_lens"])
    assert total == sum(len(x) for x in ds["input_ids"])
    assert len(packed) <= len(ds)


def test_mask_values_and_padding():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0]])
    valid = torch.tensor([[1, 1, 1, 1, 1, 0]])
    m = block_diagonal_mask(pos, valid)
    assert m.shape == (1, 1, 6, 6) and m.dtype == torch.float32
    allowed = (m[0, 0] == 0)
    assert allowed[2, :3].all() and not allowed[2, 3:].any()
    assert allowed[4, 3:5].all() and not allowed[4, :3].any() and not allowed[3, 4]
    assert allowed[5].tolist() == [False] * 5 + [True]
    assert (m[0, 0][~allowed] == torch.finfo(torch.float32).min).all()
    assert block_diagonal_mask(pos, valid, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_padding_collator():
    feats = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    b = PaddingCollator(pad_token_id=0, pad_to_multiple_of=4)(feats)
    assert b["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    class Tok:
        pad_token_id, eos_token_id = 7, 2

    assert PaddingCollator(Tok()).pad_token_id == 7 and PackedCollator(Tok()).pad_token_id == 7
    left = PaddingCollator(pad_token_id=0, padding_side="left")(feats)
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]


def test_length_grouped_batches():
    lengths = [((i * 37) % 101) + 1 for i in range(500)]
    batches = length_grouped_batches(lengths, batch_size=8, seed=1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    assert max(lengths[i] for i in batches[0]) == max(lengths)
    pad_grouped = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    random_batches = [list(range(k, min(k + 8, 500))) for k in range(0, 500, 8)]
    pad_random = sum(max(lengths[i] for i in b) * len(b) for b in random_batches)
    assert pad_grouped < 0.8 * pad_random
    assert batches == length_grouped_batches(lengths, batch_size=8, seed=1)
    sampler = LengthGroupedBatchSampler(lengths, 8, seed=1)
    assert len(list(sampler)) == len(sampler) == 63


def test_document_collator_flattens_without_padding():
    from labkit.data.packing import DocumentCollator

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
    from labkit.data.packing import DocumentCollator
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
