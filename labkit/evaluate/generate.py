"""Generation with the training template: batched (left padding, KV cache), greedy or sampled, base vs adapter."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Iterable, Iterator, Sequence

import torch

from labkit.config import from_dict
from labkit.errors import LabkitError


@dataclasses.dataclass
class SamplingConfig:
    """Decoding settings; `do_sample=False` is greedy (temperature/top_p/top_k are then ignored)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    num_beams: int = 1
    min_new_tokens: int = 0  # > 0 forces length (benchmarks); 0 = stop at EOS
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise LabkitError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise LabkitError(f"temperature must be > 0 when sampling, got {self.temperature} (use do_sample=False for greedy)")
        if not 0 < self.top_p <= 1:
            raise LabkitError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise LabkitError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise LabkitError(f"repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise LabkitError(f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")
        if self.num_beams < 1:
            raise LabkitError(f"num_beams must be >= 1, got {self.num_beams}")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate` (sampling knobs only when sampling, so no warnings)."""
        kw: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                  repetition_penalty=self.repetition_penalty, num_beams=self.num_beams)
        if self.min_new_tokens:
            kw["min_new_tokens"] = self.min_new_tokens
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # neutralise sampling fields a checkpoint's generation_config may carry
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw


def sampling_config(sampling: SamplingConfig | dict | None = None, **overrides: Any) -> SamplingConfig:
    """A SamplingConfig from a config, a dict and/or keyword overrides (unknown keys fail with a hint)."""
    if isinstance(sampling, SamplingConfig):
        base = dataclasses.asdict(sampling)
    else:
        base = dict(sampling or {})
    base.update(overrides)
    return from_dict(SamplingConfig, base, source="sampling settings")


# ---------------------------------------------------------------- prompts

def resolve_template(template: Any, dialect: str | None = None) -> Any:
    """A template object from a name (`labkit.data.templates.get_template`: qualified `source/name`, or
    unqualified resolved by `dialect`), an object, or None (raw text)."""
    if template is None or not isinstance(template, str):
        return template
    from labkit.data.templates import get_template

    return get_template(template, dialect)


def prompt_messages(prompt: Any) -> list[dict]:
    """Messages ending with a user turn from a str, a list of messages, or an example dict (answer dropped)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, dict) and "messages" in prompt:
        prompt = prompt["messages"]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
        msgs = list(prompt)
        while msgs and msgs[-1].get("role") == "assistant":
            msgs = msgs[:-1]
        if not msgs or msgs[-1].get("role") != "user":
            raise LabkitError(f"prompt has no user turn to answer: {prompt!r:.200}")
        return msgs
    raise LabkitError(f"a prompt must be a str, a list of messages or an example dict, got {type(prompt).__name__}")


def render_prompts(prompts: Iterable[Any], template: Any = None) -> list[str]:
    """The texts the model continues: each prompt rendered with the (training) template; None = raw text."""
    template = resolve_template(template)
    texts = []
    for prompt in prompts:
        if template is None:
            if not isinstance(prompt, str):
                msgs = prompt_messages(prompt)
                prompt = msgs[-1]["content"]
            texts.append(prompt)
        else:
            texts.append(template.render_prompt(prompt_messages(prompt)))
    return texts


def _stop_strings(template: Any) -> list[str]:
    """Strings at which an answer is cut: the template's stop words, else the start of its next user turn
    (e.g. "### Instruction:"), so a model that has not learned EOS does not ramble into a new turn."""
    for attr in ("stop_words", "stop_strings", "stop"):
        value = getattr(template, attr, None)
        if value:
            return [value] if isinstance(value, str) else [s for s in value if s]
    user = getattr(template, "user", None)
    if isinstance(user, str) and "{content}" in user:
        marker = user.split("{content}")[0].strip()
        if len(marker) >= 2:
            return [marker]
    return []


def _cut(text: str, stops: Sequence[str]) -> str:
    for stop in stops:
        pos = text.find(stop)
        if pos >= 0:
            text = text[:pos]
    return text.strip()


# ---------------------------------------------------------------- models

def has_adapter(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def adapter_disabled(model: Any) -> Iterator[Any]:
    """Inside: the base model's behaviour, from the same loaded weights (PeftModel.disable_adapter)."""
    if has_adapter(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


def _model_device(model: Any) -> torch.device:
    try:
        return next(p.device for p in model.parameters() if p.device.type != "meta")
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding for generation; a pad token (EOS) when the tokenizer has none."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, prompts: Sequence[Any], template: Any = None, *,
             batch_size: int = 8, sampling: SamplingConfig | dict | None = None,
             add_special_tokens: bool = True, stats: dict | None = None, **overrides: Any) -> list[str]:
    """Answers for `prompts` (str, messages or examples) rendered with `template`; only the new text.

    Batched with left padding and the KV cache; stops at EOS (and at the template's stop strings).
    Sampling knobs (`max_new_tokens, do_sample, temperature, top_p, top_k, repetition_penalty, seed`) come
    as keyword arguments or a `SamplingConfig`. Pass a dict as `stats` to receive new-token counts and time.
    """
    cfg = sampling_config(sampling, **overrides)
    tmpl = resolve_template(template)
    texts = render_prompts(prompts, tmpl)
    stops = _stop_strings(tmpl)
    prepare_tokenizer(tokenizer)
    was_training = model.training
    model.eval()
    device = _model_device(model)
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    eos = tokenizer.eos_token_id
    new_tokens, t0 = 0, time.perf_counter()
    # longest first: batches of similar length waste less on padding; restore the order afterwards
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    by_index: dict[int, str] = {}
    for start in range(0, len(order), max(1, batch_size)):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=add_special_tokens)
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        out = model.generate(**enc, **cfg.generate_kwargs(), use_cache=True,
                             eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        gen = out[:, enc["input_ids"].shape[1]:]  # (B, new) - left padding keeps prompts aligned at the end
        for row, i in zip(gen, idx):
            ids = row.tolist()
            if eos is not None and eos in ids:
                ids = ids[:ids.index(eos)]
            ids = [t for t in ids if t != tokenizer.pad_token_id]
            new_tokens += len(ids)
            by_index[i] = _cut(tokenizer.decode(ids, skip_special_tokens=True), stops)
    answers = [by_index[i] for i in range(len(texts))]
    if was_training:
        model.train()
    if stats is not None:
        stats.update(new_tokens=new_tokens, seconds=time.perf_counter() - t0, prompts=len(texts))
    return answers


def generate_pair(model: Any, tokenizer: Any, prompts: Sequence[Any], template: Any = None,
                  **kwargs: Any) -> dict[str, list[str]]:
    """{"base": [...], "adapter": [...]} from ONE loaded model: the adapter switched off, then on."""
    if not has_adapter(model):
        raise LabkitError("generate_pair needs a PeftModel (a base with a LoRA adapter loaded)")
    seed = kwargs.get("seed")
    with adapter_disabled(model):
        base = generate(model, tokenizer, prompts, template, **kwargs)
    if seed is not None:
        kwargs["seed"] = seed  # same random stream for both when sampling
    adapter = generate(model, tokenizer, prompts, template, **kwargs)
    return {"base": base, "adapter": adapter}


def text_generation_pipeline(model: Any, tokenizer: Any, **kwargs: Any) -> Any:
    """A transformers `pipeline("text-generation")` over the (adapter-wrapped) model; left padding set.

    Use with rendered prompts: `pipe(render_prompts(prompts, template), return_full_text=False, ...)`.
    """
    from transformers import pipeline

    prepare_tokenizer(tokenizer)
    return pipeline("text-generation", model=model, tokenizer=tokenizer, **kwargs)
