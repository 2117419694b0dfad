"""labkit.attention.extract: eager extraction of chosen layers/heads/span, memory estimate and refusal, PEFT, int8/nf4."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from labkit.attention import extract
from labkit.attention.stats import entropy, head_table, mean_distance
from labkit.errors import LabkitError

GIB = 1024 ** 3


def tiny_llama(seed=0, attn="eager"):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      initializer_range=0.1, attn_implementation=attn)
    return LlamaForCausalLM(cfg).eval()


class CharTokenizer:
    """ids -> one Chinese character each; enough for labels."""

    chars = "注意力机制是模型的核心，你好世界。"

    def __call__(self, text, return_tensors=None):
        return {"input_ids": torch.tensor([[self.chars.index(c) for c in text]])}

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def convert_ids_to_tokens(self, i):
        return self.chars[i]


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


IDS = torch.randint(0, 100, (1, 20), generator=torch.Generator().manual_seed(0))


def test_estimate_for_a_7b_model_at_1024_tokens():
    cfg = LlamaConfig(num_hidden_layers=32, num_attention_heads=32, hidden_size=4096)
    est = extract.estimate_memory(cfg, 1024, dtype=torch.float16, budget_gib=2.0)
    assert est.full_bytes == 2 * GIB  # 32 layers x 32 heads x 1024² x 2 bytes per sample
    assert est.retained_bytes == 4 * GIB  # kept as fp32
    assert not est.fits
    with pytest.raises(LabkitError) as err:
        extract.check_budget(est)
    msg = str(err.value)
    assert "refused" in msg and "4.000 GiB" in msg and "2.00 GiB budget" in msg and "max_tokens" in msg
    # a few layers and heads over a 256-token span fit comfortably
    small = extract.estimate_memory(cfg, 256, layers=[0, 31], heads=[0, 1, 2, 3], dtype=torch.float16)
    assert small.fits and small.retained_bytes == 2 * 4 * 256 ** 2 * 4
    assert small.transient_bytes == 32 * 256 ** 2 * (2 * 2 + 4) + 256 ** 2 * 2


def test_extract_refuses_past_budget_before_running(llama):
    with pytest.raises(LabkitError, match="budget"):
        extract.extract_attention(llama, input_ids=IDS, budget_gib=1e-7)


def test_extract_chosen_layers_heads_span(llama):
    full = extract.extract_attention(llama, input_ids=IDS)
    assert tuple(full.weights.shape) == (3, 4, 20, 20)
    torch.testing.assert_close(full.weights.sum(-1), torch.ones(3, 4, 20))  # rows are distributions
    assert torch.all(torch.triu(full.weights, 1) == 0)  # causal
    part = extract.extract_attention(llama, input_ids=IDS, layers=[2, 0], heads=[3, 1], span=(5, 15))
    assert part.layers == [2, 0] and part.heads == [3, 1] and part.span == (5, 15)
    assert tuple(part.weights.shape) == (2, 2, 10, 10) and part.truncated
    torch.testing.assert_close(part.head(2, 1), full.weights[2, 1, 5:15, 5:15])
    torch.testing.assert_close(part.head(0, 3), full.weights[0, 3, 5:15, 5:15])
    # the same numbers as transformers' own output_attentions
    with torch.no_grad():
        ref = llama(input_ids=IDS, output_attentions=True).attentions
    torch.testing.assert_close(full.weights[1], ref[1][0])


def test_max_tokens_truncates_and_bad_choices_are_named(llama):
    m = extract.extract_attention(llama, input_ids=IDS, max_tokens=8, layers=[1])
    assert m.weights.shape[-1] == 8 and m.truncated
    with pytest.raises(LabkitError, match=r"layer \[7\] out of range"):
        extract.extract_attention(llama, input_ids=IDS, layers=[7])
    with pytest.raises(LabkitError, match="empty"):
        extract.extract_attention(llama, input_ids=IDS, span=(30, 40))


def test_sdpa_model_is_switched_to_eager_and_back():
    model = tiny_llama(attn="sdpa")
    m = extract.extract_attention(model, input_ids=IDS, layers=[0])
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(m.weights[0].sum(-1), torch.ones(4, 20))


def test_token_labels_and_text_input(llama):
    tok = CharTokenizer()
    m = extract.extract_attention(llama, tok, "注意力机制是模型的核心", layers=[0], heads=[0])
    assert m.tokens == list("注意力机制是模型的核心") and m.token_ids == list(range(11))


def test_adapter_enabled_and_disabled(llama):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(seed=1), LoraConfig(r=4, target_modules=["q_proj", "k_proj"],
                                                          init_lora_weights=False)).eval()
    on = extract.extract_attention(model, input_ids=IDS, adapter=True)
    off = extract.extract_attention(model, input_ids=IDS, adapter=False)
    with model.disable_adapter():
        plain = extract.extract_attention(model, input_ids=IDS)
    torch.testing.assert_close(off.weights, plain.weights)
    assert (on.weights - off.weights).abs().max() > 1e-2
    assert not model.base_model.model.model.layers[0].self_attn.q_proj.disable_adapters  # re-enabled after
    with pytest.raises(LabkitError, match="no PEFT adapter"):
        extract.extract_attention(llama, input_ids=IDS, adapter=True)


@pytest.mark.parametrize("precision", ["int8", "nf4"])
def test_quantized_bases(tmp_path, precision):
    from transformers import BitsAndBytesConfig

    model = tiny_llama(seed=2)
    model.save_pretrained(tmp_path)
    ref = extract.extract_attention(model, input_ids=IDS, layers=[0, 2])
    q = (BitsAndBytesConfig(load_in_8bit=True) if precision == "int8"
         else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    qmodel = LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=q, attn_implementation="eager",
                                              device_map="cpu").eval()
    m = extract.extract_attention(qmodel, input_ids=IDS, layers=[0, 2])
    assert tuple(m.weights.shape) == (2, 4, 20, 20)
    torch.testing.assert_close(m.weights.sum(-1), torch.ones(2, 4, 20), atol=1e-3, rtol=0)
    diff = (m.weights - ref.weights).abs().max().item()
    assert 0 < diff < 0.5, diff  # quantization changes the maps a little, not beyond recognition


def test_stats_on_known_maps():
    n = 6
    diag = torch.eye(n)[None, None]  # every query on itself
    first = torch.zeros(1, 1, n, n)
    first[..., 0] = 1.0  # every query on token 0
    uniform = (torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None])[None, None]
    assert entropy(diag).item() == pytest.approx(0.0, abs=1e-6)
    assert mean_distance(diag).item() == 0.0
    assert mean_distance(first).item() == pytest.approx(sum(range(n)) / n)
    expected_h = sum(torch.log(torch.tensor(float(k))).item() for k in range(1, n + 1)) / n
    assert entropy(uniform).item() == pytest.approx(expected_h, rel=1e-5)


def test_head_table(llama):
    m = extract.extract_attention(llama, input_ids=IDS, layers=[0, 1], heads=[0, 2])
    t = head_table(m)
    assert list(t.columns) == ["layer", "head", "entropy", "mean_distance", "first_token"]
    assert len(t) == 4 and t["entropy"].between(0, torch.log(torch.tensor(20.0)).item()).all()
    assert t["mean_distance"].between(0, 19).all()


class ByteTokenizer:
    """ids are UTF-8 bytes: a Chinese character is three tokens, as with byte-level BPE on rare characters."""

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")

    def convert_ids_to_tokens(self, i):
        return f"<0x{i:02X}>"


def test_token_labels_group_byte_tokens():
    ids = list("注意 a\n".encode()) + list("解".encode())[:2]
    labels = extract.token_labels(ByteTokenizer(), ids)
    assert labels == ["注·1", "注·2", "注·3", "意·1", "意·2", "意·3", "▁", "a", "\\n", "<0xE8>", "<0xA7>"]
    assert len(labels) == len(ids)
