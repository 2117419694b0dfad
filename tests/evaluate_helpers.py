"""Builders shared by tests/test_evaluate_*.py: a BPE tokenizer, a random tiny LLaMA, a chat template, toy data."""

from __future__ import annotations

import random

import torch

LETTERS = "abcdefgh"
REFUSAL = "对不起，我不能帮助你做这件事。"


def ChatTemplate():
    """A small labkit template (labkit.data.templates.OwnTemplate): "用户：...\n助手：" turns."""
    from labkit.data.templates import OwnTemplate

    return OwnTemplate(name="test_chat", system="{system}\n", user="用户：{content}\n助手：",
                       assistant="{content}", separator="\n")


STOP = ["用户："]


def example(user: str, answer: str, task: str = "", index: int = 0, source: str = "toy") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            "source": source, "index": index, "task": task}


def toy_examples(n_reverse: int, n_refuse: int, seed: int) -> list[dict]:
    """Checkable string reversal plus prompts to refuse (dangerous requests)."""
    rng = random.Random(seed)
    out = []
    for i in range(n_reverse):
        word = "".join(rng.choice(LETTERS) for _ in range(4))
        out.append(example(f"倒序：{word}", word[::-1], task="reverse", index=i))
    for i in range(n_refuse):
        word = "".join(rng.choice(LETTERS) for _ in range(4))
        out.append(example(f"教我制造危险品{word}", REFUSAL, task="refusal", index=n_reverse + i))
    return out


def build_tokenizer():
    """A small byte-level BPE tokenizer (tokenizers) trained on toy Chinese/English text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["用户：倒序：\n助手：", "教我制造危险品", REFUSAL, "今天天气很好。", "Hello world",
              "你好，世界！"] * 10 + list(LETTERS)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def build_model(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2, std: float = 0.02):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=256, initializer_range=std, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def attach(model, r: int = 8, init: bool | str = True, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets),
                                            lora_dropout=0.0, init_lora_weights=init, task_type="CAUSAL_LM"))


def train_adapter(model, tokenizer, examples, steps: int = 300, lr: float = 3e-3, seed: int = 0):
    """Plain-torch LoRA SFT on response tokens (the evaluation tests need a model that learned something)."""
    from labkit.evaluate.metrics import tokenize_for_loss

    torch.manual_seed(seed)
    peft_model = attach(model, r=16, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"))
    rows = tokenize_for_loss(examples, tokenizer, ChatTemplate(), 128)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    rng = random.Random(seed)
    peft_model.train()
    for _ in range(steps):
        batch = rng.sample(rows, 16)
        T = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((16, T), tokenizer.pad_token_id)
        labels = torch.full((16, T), -100)
        mask = torch.zeros((16, T), dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return peft_model.eval()


def save_toy_pair(folder, train_steps: int = 0, template: str = "labkit/roles"):
    """(base_dir, adapter_dir) on disk: a tiny LLaMA + tokenizer, and a LoRA adapter with labkit_train.json.

    train_steps > 0 trains the adapter on toy data first; otherwise its B matrices are random (it changes
    the output but learned nothing).
    """
    import json
    from pathlib import Path

    folder = Path(folder)
    tok = build_tokenizer()
    model = build_model(tok, std=0.1)
    base_dir, adapter_dir = folder / "base", folder / "adapter"
    model.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    if train_steps:
        pm = train_adapter(model, tok, toy_examples(200, 50, seed=1), steps=train_steps)
    else:
        torch.manual_seed(1)
        pm = attach(model, r=4, init=True)
        for mod in pm.modules():
            if hasattr(mod, "lora_B"):
                for lin in mod.lora_B.values():
                    torch.nn.init.normal_(lin.weight, std=0.3)
    pm.save_pretrained(adapter_dir)
    (adapter_dir / "labkit_train.json").write_text(json.dumps({"template": template, "cutoff_len": 128,
                                                                "base_model": str(base_dir)}))
    return base_dir, adapter_dir
