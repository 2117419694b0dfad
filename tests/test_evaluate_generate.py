"""labkit.evaluate.generate: template prompts, batched left-padded generation, sampling, base vs adapter, k-bit."""

from __future__ import annotations

import pytest
import torch

from evaluate_helpers import STOP, ChatTemplate, attach, build_model, build_tokenizer, example
from labkit.errors import LabkitError
from labkit.evaluate import generate as G

PROMPTS = ["倒序：abcd", "你好，世界！", "Hello world, how are you today?", "教我制造危险品"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    # larger init: peaked logits, so greedy choices are not decided by float noise
    return build_model(tok, std=0.3)


def _one_by_one(model, tok, prompts, **kw):
    return [G.generate(model, tok, [p], ChatTemplate(), batch_size=1, **kw)[0] for p in prompts]


def test_render_prompts_uses_template_and_drops_reference():
    ex = example("倒序：abcd", "dcba")
    texts = G.render_prompts(["倒序：abcd", ex, ex["messages"]], ChatTemplate())
    assert texts == ["用户：倒序：abcd\n助手："] * 3
    assert G.render_prompts(["raw text"], None) == ["raw text"]
    with pytest.raises(LabkitError, match="no user turn"):
        G.prompt_messages([{"role": "assistant", "content": "x"}])


def test_batched_left_padding_equals_one_at_a_time(model, tok):
    stats: dict = {}
    batched = G.generate(model, tok, PROMPTS, ChatTemplate(), batch_size=4, max_new_tokens=8, stats=stats)
    single = _one_by_one(model, tok, PROMPTS, max_new_tokens=8)
    assert batched == single
    assert tok.padding_side == "left"
    assert 0 < stats["new_tokens"] <= 8 * len(PROMPTS) and stats["prompts"] == len(PROMPTS)


def test_kv_cache_gives_same_greedy_tokens_as_full_recompute(model, tok):
    enc = tok([ChatTemplate().render_prompt([{"role": "user", "content": PROMPTS[0]}])], return_tensors="pt")
    ids = enc["input_ids"]
    for _ in range(6):  # greedy without cache: full forward each step
        with torch.no_grad():
            nxt = model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    out = model.generate(**enc, max_new_tokens=6, do_sample=False, use_cache=True, min_new_tokens=6,
                         pad_token_id=tok.pad_token_id)
    assert out.tolist() == ids.tolist()


def test_stop_at_eos(tok):
    m = build_model(tok, seed=1)
    with torch.no_grad():  # make EOS the argmax everywhere: the answer is empty
        m.lm_head.bias = None
        m.lm_head.weight.zero_()
        m.model.norm.weight.fill_(1.0)
        m.lm_head.weight[tok.eos_token_id] = 1.0
    stats: dict = {}
    out = G.generate(m, tok, PROMPTS[:2], ChatTemplate(), max_new_tokens=10, stats=stats)
    assert out == ["", ""] and stats["new_tokens"] == 0


def test_max_new_tokens_and_min_new_tokens(model, tok):
    stats: dict = {}
    G.generate(model, tok, PROMPTS, ChatTemplate(), max_new_tokens=5, min_new_tokens=5, stats=stats)
    assert stats["new_tokens"] == 5 * len(PROMPTS)


def test_sampling_seeded_reproducible_and_differs_from_greedy(model, tok):
    kw = dict(do_sample=True, temperature=1.5, top_p=0.95, top_k=0, max_new_tokens=12, min_new_tokens=12)
    a = G.generate(model, tok, PROMPTS, ChatTemplate(), seed=7, **kw)
    b = G.generate(model, tok, PROMPTS, ChatTemplate(), seed=7, **kw)
    c = G.generate(model, tok, PROMPTS, ChatTemplate(), seed=8, **kw)
    greedy = G.generate(model, tok, PROMPTS, ChatTemplate(), max_new_tokens=12, min_new_tokens=12)
    assert a == b
    assert a != c and a != greedy


def test_top_k_1_is_greedy_and_repetition_penalty_changes_output(model, tok):
    greedy = G.generate(model, tok, PROMPTS, ChatTemplate(), max_new_tokens=10, min_new_tokens=10)
    topk1 = G.generate(model, tok, PROMPTS, ChatTemplate(), do_sample=True, top_k=1, seed=3,
                       max_new_tokens=10, min_new_tokens=10)
    assert topk1 == greedy
    penal = G.generate(model, tok, PROMPTS, ChatTemplate(), repetition_penalty=5.0, max_new_tokens=10,
                       min_new_tokens=10)
    assert penal != greedy


@pytest.mark.parametrize("bad", [dict(temperature=0.0, do_sample=True), dict(top_p=0.0), dict(top_k=-1),
                                 dict(max_new_tokens=0), dict(repetition_penalty=0.0)])
def test_sampling_config_rejects_bad_values(bad):
    with pytest.raises(LabkitError):
        G.sampling_config(**bad)


def test_sampling_config_rejects_unknown_key_with_hint():
    with pytest.raises(LabkitError, match="did you mean 'temperature'"):
        G.sampling_config(temprature=0.7)


def test_base_and_adapter_from_one_model(tok):
    base = build_model(tok, std=0.3)
    expected_base = G.generate(base, tok, PROMPTS, ChatTemplate(), max_new_tokens=8)
    n_before = sum(p.numel() for p in base.parameters())
    torch.manual_seed(1)
    pm = attach(base, r=8, init=False)  # random A and B: the adapter changes the output
    for mod in pm.modules():
        if hasattr(mod, "lora_B"):
            for lin in mod.lora_B.values():
                torch.nn.init.normal_(lin.weight, std=0.5)
    pair = G.generate_pair(pm, tok, PROMPTS, ChatTemplate(), max_new_tokens=8)
    assert pair["base"] == expected_base
    assert pair["adapter"] != pair["base"]
    # one copy of the base weights: only the LoRA matrices were added
    n_lora = sum(p.numel() for n, p in pm.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in pm.parameters()) == n_before + n_lora
    with G.adapter_disabled(pm):
        assert G.generate(pm, tok, PROMPTS, ChatTemplate(), max_new_tokens=8) == expected_base
    assert G.generate(pm, tok, PROMPTS, ChatTemplate(), max_new_tokens=8) == pair["adapter"]
    with pytest.raises(LabkitError, match="PeftModel"):
        G.generate_pair(build_model(tok), tok, PROMPTS, ChatTemplate())


def test_text_generation_pipeline_matches_generate(model, tok):
    pipe = G.text_generation_pipeline(model, tok)
    text = G.render_prompts(PROMPTS[:1], ChatTemplate())[0]
    got = pipe(text, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    ours = G.generate(model, tok, PROMPTS[:1], ChatTemplate(), max_new_tokens=6)[0]
    assert G._cut(got, STOP) == ours


@pytest.mark.parametrize("quant", ["int8", "nf4"])
def test_kbit_base_with_adapter(tmp_path, tok, quant):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    build_model(tok, std=0.3).save_pretrained(tmp_path)
    qc = (BitsAndBytesConfig(load_in_8bit=True) if quant == "int8" else
          BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    qm = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=qc, dtype=torch.float32).eval()
    cls = "Linear8bitLt" if quant == "int8" else "Linear4bit"
    assert any(type(m).__name__ == cls for m in qm.modules())
    pm = attach(qm, r=4, init=False)
    pair = G.generate_pair(pm, tok, PROMPTS, ChatTemplate(), max_new_tokens=6, min_new_tokens=6)
    assert len(pair["base"]) == len(pair["adapter"]) == len(PROMPTS)
    assert all(isinstance(x, str) for x in pair["base"] + pair["adapter"])


def test_stop_strings_come_from_the_template():
    from labkit.data.templates import get_template

    assert G._stop_strings(get_template("alpaca-lora/alpaca")) == ["### Instruction:"]
    assert G._stop_strings(get_template("let/baichuan")) == ["<reserved_102>"]
    assert G._stop_strings(ChatTemplate()) == STOP
    assert G._cut("p n b\n### Instruction:\nmore", ["### Instruction:"]) == "p n b"
