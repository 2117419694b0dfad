"""Attention weights out of a model through the eager path: chosen layers, heads and token span, within a memory budget."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from labkit.attention.hand import base_model, decoder_layers
from labkit.errors import LabkitError

GIB = 1024 ** 3


# ----------------------------------------------------------------------------------------------------
# memory


@dataclass
class MemoryEstimate:
    """Bytes an extraction needs, computed before running anything."""

    n_tokens: int
    n_layers: int  # layers kept
    n_heads: int  # heads kept
    span_tokens: int  # queries (= keys) kept per head
    retained_bytes: int  # what the result holds: layers x heads x span² x 4 (fp32)
    transient_bytes: int  # one layer's eager scores + fp32 softmax + the causal mask, freed layer by layer
    full_bytes: int  # what output_attentions=True would hold for every layer and head in the model dtype
    budget_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.retained_bytes + self.transient_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    def describe(self) -> str:
        return (f"{self.n_layers} layers x {self.n_heads} heads x {self.span_tokens}² tokens kept = "
                f"{self.retained_bytes / GIB:.3f} GiB, plus {self.transient_bytes / GIB:.3f} GiB per layer while it "
                f"runs ({self.n_tokens} tokens): {self.total_bytes / GIB:.3f} GiB of a {self.budget_bytes / GIB:.2f} GiB "
                f"budget (all layers and heads via output_attentions would be {self.full_bytes / GIB:.3f} GiB)")


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def estimate_memory(config, n_tokens: int, layers=None, heads=None, span=None, *, batch: int = 1,
                    dtype: torch.dtype = torch.float32, budget_gib: float = 2.0) -> MemoryEstimate:
    """Estimate the attention-map memory of an extraction from the model config alone.

    For Baichuan-7B / LLaMA-7B (32 layers x 32 heads) at 1024 tokens in fp16, output_attentions would hold
    32 * 32 * 1024² * 2 B = 2 GiB per sample; keeping everything in fp32 is 4 GiB.
    """
    n_layers_model, n_heads_model = config.num_hidden_layers, config.num_attention_heads
    n_layers = n_layers_model if layers is None else len(layers)
    n_heads = n_heads_model if heads is None else len(heads)
    start, stop = (0, n_tokens) if span is None else span
    span_tokens = max(0, min(stop, n_tokens) - start)
    item = _dtype_bytes(dtype)
    retained = batch * n_layers * n_heads * span_tokens ** 2 * 4
    # eager: scores in the model dtype, softmax in fp32, cast back; plus a (B, 1, T, T) additive mask
    transient = batch * n_heads_model * n_tokens ** 2 * (2 * item + 4) + batch * n_tokens ** 2 * item
    full = batch * n_layers_model * n_heads_model * n_tokens ** 2 * item
    return MemoryEstimate(n_tokens, n_layers, n_heads, span_tokens, retained, transient, full, int(budget_gib * GIB))


def check_budget(estimate: MemoryEstimate) -> None:
    """Raise a LabkitError naming the numbers and the ways out when the estimate exceeds the budget."""
    if not estimate.fits:
        raise LabkitError(
            "attention extraction refused: " + estimate.describe() + ". Choose fewer layers or heads, a shorter "
            "token span (max_tokens), or raise the budget (memory_budget_gib) if the machine has the memory."
        )


# ----------------------------------------------------------------------------------------------------
# hooks


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Temporarily switch the model to the eager attention path (sdpa returns no weights)."""
    base = base_model(model)
    before = getattr(base.config, "_attn_implementation", None)
    if before == "eager":
        yield
        return
    try:
        base.set_attn_implementation("eager")
    except Exception as exc:  # noqa: BLE001 - report what the model said
        raise LabkitError(f"{type(base).__name__} cannot switch to eager attention ({exc}); load it with "
                          f"attn_implementation='eager'") from exc
    try:
        yield
    finally:
        base.set_attn_implementation(before)


@contextlib.contextmanager
def adapter_state(model: nn.Module, adapter: bool | None):
    """adapter=None: as the model is; False: PEFT adapter disabled inside the block; True: require an adapter."""
    is_peft = hasattr(model, "disable_adapter")
    if adapter is True and not is_peft:
        raise LabkitError("adapter=True but the model has no PEFT adapter attached (load one first)")
    if adapter is False and is_peft:
        with model.disable_adapter():
            yield
    else:
        yield


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@dataclass
class Capture:
    """Per chosen layer: its input hidden states, attention weights and outputs (full, fp32, CPU)."""

    layer_in: dict[int, torch.Tensor] = field(default_factory=dict)  # (B, T, d)
    attn_weights: dict[int, torch.Tensor] = field(default_factory=dict)  # (B, H, T, T)
    attn_out: dict[int, torch.Tensor] = field(default_factory=dict)  # (B, T, d)
    layer_out: dict[int, torch.Tensor] = field(default_factory=dict)  # (B, T, d)
    logits: torch.Tensor | None = None


@torch.no_grad()
def run_with_hooks(model: nn.Module, input_ids: torch.Tensor, layers, *, keep=None) -> Capture:
    """One eager forward pass; hooks on the chosen decoder layers record inputs, attention and outputs.

    `keep(layer, weights (B, H, T, T)) -> tensor` reduces the weights as they appear (heads, span), so only
    the kept part stays in memory.
    """
    blocks = decoder_layers(model)
    cap = Capture()
    handles = []

    def pre(i):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            cap.layer_in[i] = hidden.detach().float().cpu()
        return hook

    def post(i):
        def hook(module, args, kwargs, output):
            cap.layer_out[i] = _first(output).detach().float().cpu()
        return hook

    def attn(i):
        def hook(module, args, output):
            out, weights = output[0], output[1] if len(output) > 1 else None
            if weights is None:
                raise LabkitError(f"layer {i}: {type(module).__name__} returned no attention weights; the eager "
                                  f"path is needed (load with attn_implementation='eager')")
            cap.attn_out[i] = out.detach().float().cpu()
            w = weights.detach()
            cap.attn_weights[i] = (keep(i, w) if keep else w).float().cpu()
        return hook

    try:
        for i in layers:
            block = blocks[i]
            handles.append(block.register_forward_pre_hook(pre(i), with_kwargs=True))
            handles.append(block.register_forward_hook(post(i), with_kwargs=True))
            handles.append(block.self_attn.register_forward_hook(attn(i)))
        device = next(base_model(model).parameters()).device
        with eager_attention(model):
            out = model(input_ids=input_ids.to(device), use_cache=False)
        cap.logits = out.logits.detach().float().cpu()
    finally:
        for h in handles:
            h.remove()
    return cap


# ----------------------------------------------------------------------------------------------------
# extraction


@dataclass
class AttentionMaps:
    """Attention weights of chosen layers and heads over a token span (model layout: query rows, key columns)."""

    weights: torch.Tensor  # (L, H, S, S) fp32, S = span length
    layers: list[int]
    heads: list[int]
    token_ids: list[int]  # the span's ids
    tokens: list[str]  # readable labels for the span
    span: tuple[int, int]  # [start, stop) positions in the (possibly truncated) input
    adapter: bool | None
    estimate: MemoryEstimate
    truncated: bool = False

    def head(self, layer: int, head: int) -> torch.Tensor:
        """(S, S) weights of one layer and head, addressed by model layer/head numbers."""
        return self.weights[self.layers.index(layer), self.heads.index(head)]


def _readable(text: str) -> str:
    return text.replace("\n", "\\n").replace(" ", "▁") or "∅"


def token_labels(tokenizer, ids) -> list[str]:
    """One readable label per token. A character split over several byte tokens labels each part
    "解·1", "解·2", "解·3"; spaces show as ▁ and newlines as \\n (glyphs the CJK font has)."""
    ids = [int(i) for i in ids]
    labels: list[str] = []
    group: list[int] = []
    for i in ids:
        group.append(i)
        text = tokenizer.decode(group)
        if "\ufffd" in text and len(group) < 4:  # an incomplete UTF-8 sequence: wait for the next byte
            continue
        if len(group) == 1:
            labels.append(_readable(text))
        else:
            labels.extend(f"{_readable(text)}·{k + 1}" for k in range(len(group)))
        group = []
    if group:  # trailing partial character
        labels.extend(_readable(tokenizer.convert_ids_to_tokens(i)) for i in group)
    return labels


def _normalise(choice, n: int, what: str) -> list[int]:
    if choice is None:
        return list(range(n))
    items = [choice] if isinstance(choice, int) else list(choice)
    bad = [c for c in items if not 0 <= c < n]
    if bad:
        raise LabkitError(f"{what} {bad} out of range: the model has {n} {what}s (0..{n - 1})")
    return items


def extract_attention(model: nn.Module, tokenizer=None, text: str | None = None, *, input_ids=None,
                      layers=None, heads=None, span=None, max_tokens: int = 256, budget_gib: float = 2.0,
                      adapter: bool | None = None) -> AttentionMaps:
    """Attention weights for `layers` x `heads` over the token `span` [start, stop) of `text` (or `input_ids`).

    The input is cut to `max_tokens` and, since attention is causal, to the span's end. The memory need is
    estimated first and the call refused past `budget_gib`. Works on fp32/bf16 and 8-bit/4-bit bases, with a
    PEFT adapter as loaded (adapter=None), disabled (False) or required (True).
    """
    if input_ids is None:
        if tokenizer is None or text is None:
            raise LabkitError("extract_attention needs a tokenizer and text, or input_ids")
        input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
    input_ids = torch.as_tensor(input_ids).reshape(1, -1)
    config = base_model(model).config
    n_total = input_ids.shape[1]
    start, stop = (0, n_total) if span is None else (int(span[0]), int(span[1]))
    stop = min(stop, n_total, max_tokens)
    if not 0 <= start < stop:
        raise LabkitError(f"token span [{start}, {stop}) is empty (input has {n_total} tokens, max_tokens={max_tokens})")
    truncated = stop < n_total
    input_ids = input_ids[:, :stop]
    layers = _normalise(layers, config.num_hidden_layers, "layer")
    heads = _normalise(heads, config.num_attention_heads, "head")
    dtype = next(p.dtype for p in base_model(model).parameters() if p.is_floating_point())
    est = estimate_memory(config, stop, layers, heads, (start, stop), dtype=dtype, budget_gib=budget_gib)
    check_budget(est)
    head_idx = torch.tensor(heads)

    def keep(i, w):  # (B, H, T, T) -> (B, h, S, S)
        return w[:, head_idx.to(w.device)][:, :, start:stop, start:stop]

    with adapter_state(model, adapter):
        cap = run_with_hooks(model, input_ids, layers, keep=keep)
    weights = torch.stack([cap.attn_weights[i][0] for i in layers])  # (L, h, S, S)
    ids = input_ids[0, start:stop].tolist()
    tokens = token_labels(tokenizer, ids) if tokenizer is not None else [str(i) for i in ids]
    return AttentionMaps(weights=weights, layers=layers, heads=heads, token_ids=ids, tokens=tokens,
                         span=(start, stop), adapter=adapter, estimate=est, truncated=truncated)
