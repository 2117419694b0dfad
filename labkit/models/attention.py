"""Document attention for packed rows: each sample attends only within itself, no (T, T) mask ("labkit_docs").

Registered with transformers' `AttentionInterface` and `AttentionMaskInterface` under `IMPLEMENTATION`, so
LlamaForCausalLM and labkit's native Baichuan (which dispatches through `ALL_ATTENTION_FUNCTIONS`) both use
it when `config._attn_implementation == "labkit_docs"`. A packed row carries its documents as
`cu_seq_lens_q` (cumulative lengths, the flash-attention convention of transformers'
DataCollatorWithFlattening) or as `position_ids` restarting at 0. Each document runs causal SDPA on its own
slice (the fused CPU/GPU kernels skip the upper triangle); the blocks between documents are never computed.
On CUDA the varlen flash kernel (`torch.nn.attention.varlen`) and compiled flex_attention with a document
BlockMask are candidates too; the fastest that agrees with the per-document loop is chosen by measurement
(`choose_backend`, once per device/dtype/head shape). On CPU the loop is used (measured fastest there).
Without documents (a 2-D padding mask, a KV cache, generation) it is plain SDPA.
"""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

IMPLEMENTATION = "labkit_docs"
BACKENDS = ("loop", "varlen", "flex")  # measured on CUDA; CPU uses "loop"
_chosen: dict[tuple, str] = {}


def doc_bounds(position_ids: torch.Tensor | None = None, cu_seq_lens: torch.Tensor | None = None,
               batch: int = 1) -> list[list[int]] | None:
    """Per row, the cumulative document lengths [0, n1, n1+n2, ..., T] of packed rows, or None if no row is packed.

    `cu_seq_lens` (flash-attention convention) describes one flattened row; `position_ids` (B, T) restart at 0
    at every document start.
    """
    if cu_seq_lens is not None and batch == 1:
        return [[int(x) for x in cu_seq_lens.tolist()]]
    if position_ids is None or position_ids.dim() != 2:
        return None
    pos = position_ids.expand(batch, -1) if position_ids.shape[0] != batch else position_ids  # (B, T)
    starts = pos == 0  # (B, T)
    if not bool(starts[:, 0].all()) or int(starts.sum()) == batch:
        return None  # positions continue a cache, or one document per row: plain causal attention
    T = int(pos.shape[1])
    return [torch.nonzero(row).flatten().tolist() + [T] for row in starts]


def _loop(query, key, value, bounds: list[int], scaling, dropout: float) -> torch.Tensor:
    """Per-document causal SDPA over slices of one row (1, H, T, hd); returns (1, T, H, hd)."""
    gqa = key.shape[1] != query.shape[1]
    sizes = [e - s for s, e in zip(bounds, bounds[1:])]
    # split, not slices: its backward is one cat per tensor (a slice's is a zero-filled (1, H, T, hd) each)
    outs = [F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, dropout_p=dropout,
                                           enable_gqa=gqa).transpose(1, 2)  # (1, n, H, hd)
            for q, k, v in zip(query.split(sizes, 2), key.split(sizes, 2), value.split(sizes, 2))]
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # (1, T, H, hd), contiguous


def _varlen(query, key, value, bounds: list[int], scaling, dropout: float) -> torch.Tensor:
    """torch's flash varlen kernel (CUDA): (1, H, T, hd) -> (1, T, H, hd)."""
    from torch.nn.attention.varlen import varlen_attn

    cu = torch.tensor(bounds, dtype=torch.int32, device=query.device)
    longest = max(b - a for a, b in zip(bounds, bounds[1:]))
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # (T, H, hd)
    out = varlen_attn(q, k, v, cu, cu, longest, longest, scale=scaling, window_size=(-1, 0),
                      enable_gqa=key.shape[1] != query.shape[1])  # (T, H, hd)
    return out.unsqueeze(0)


_flex_cache: dict = {}


def _flex(query, key, value, bounds: list[int], scaling, dropout: float) -> torch.Tensor:
    """flex_attention (compiled) with a document-causal BlockMask; (1, H, T, hd) -> (1, T, H, hd)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if "fn" not in _flex_cache:
        _flex_cache["fn"] = torch.compile(flex_attention, dynamic=True)
    key_ = (query.device, tuple(bounds))
    if _flex_cache.get("key") != key_:  # one mask per row, shared by all layers
        lengths = torch.tensor([b - a for a, b in zip(bounds, bounds[1:])], device=query.device)
        doc = torch.repeat_interleave(torch.arange(len(lengths), device=query.device), lengths)  # (T,)

        def mask_mod(b, h, q_idx, kv_idx):
            return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

        T = bounds[-1]
        _flex_cache["key"] = key_
        _flex_cache["mask"] = create_block_mask(mask_mod, 1, None, T, T, device=query.device)
    out = _flex_cache["fn"](query, key, value, block_mask=_flex_cache["mask"], scale=scaling,
                            enable_gqa=key.shape[1] != query.shape[1])  # (1, H, T, hd)
    return out.transpose(1, 2)


def run_backend(name: str, query, key, value, bounds, scaling=None, dropout: float = 0.0) -> torch.Tensor:
    """Document attention by backend `name` ("loop" | "varlen" | "flex"): (1, H, T, hd) x3 -> (1, T, H, hd)."""
    if name != "loop" and dropout:
        name = "loop"  # the varlen and flex kernels have no dropout
    fn = {"loop": _loop, "varlen": _varlen, "flex": _flex}[name]
    return fn(query, key, value, bounds, scaling, dropout)


def _time(fn, reps: int = 3) -> float:
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def choose_backend(query: torch.Tensor, bounds: list[int]) -> str:
    """The fastest backend that agrees with "loop" for this device/dtype/head size, measured once (fwd + bwd)."""
    key = (query.device.type, query.dtype, query.shape[1], query.shape[-1])
    if key in _chosen:
        return _chosen[key]
    if query.device.type != "cuda":
        _chosen[key] = "loop"  # measured on CPU: one fused causal kernel per document; no varlen kernel there
        return "loop"
    times = {}
    q = torch.randn_like(query, requires_grad=True)
    k, v = torch.randn_like(q, requires_grad=True), torch.randn_like(q, requires_grad=True)
    ref = run_backend("loop", q, k, v, bounds)
    for name in BACKENDS:
        try:
            out = run_backend(name, q, k, v, bounds)
            if not torch.allclose(out.float(), ref.float(), atol=2e-2, rtol=0):
                continue
            times[name] = _time(lambda n=name: run_backend(n, q, k, v, bounds).sum().backward())
        except Exception:  # noqa: BLE001 - a backend this GPU/torch cannot run is simply not a candidate
            continue
    _chosen[key] = min(times, key=times.get) if times else "loop"
    return _chosen[key]


def prepare_backend(model, bounds: list[int], device) -> str:
    """Choose the backend for `model`'s attention shape outside any forward pass (a measurement inside one could
    meet gradient-checkpointing hooks); the compute dtype is autocast's when it is on."""
    device = torch.device(device)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    if torch.is_autocast_enabled(device.type):
        dtype = torch.get_autocast_dtype(device.type)
    else:
        dtype = next(p.dtype for p in base.parameters() if p.is_floating_point())
    return choose_backend(torch.zeros(1, heads, bounds[-1], head_dim, device=device, dtype=dtype), bounds)


def docs_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           **kwargs):
    """The AttentionInterface function: (B, H, T, hd) q/k/v -> ((B, T, H, hd), None)."""
    rows = None
    if attention_mask is None and query.shape[2] == key.shape[2] and query.shape[2] > 1:
        rows = doc_bounds(kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q"), batch=query.shape[0])
    if rows is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    backend = choose_backend(query[:1], rows[0])
    outs = [run_backend(backend, query[b:b + 1], key[b:b + 1], value[b:b + 1], bounds, scaling, dropout)
            for b, bounds in enumerate(rows)]  # each (1, T, H, hd)
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)).contiguous(), None


def docs_mask(*args, attention_mask: torch.Tensor | None = None, q_length: int | None = None,
              kv_length: int | None = None, q_offset=0, kv_offset=0, **kwargs):
    """The AttentionMaskInterface function: no mask for unpadded training rows (documents come from position_ids
    or cu_seq_lens in the attention call), SDPA's mask otherwise (padding, caches, generation)."""
    from transformers.masking_utils import sdpa_mask

    plain = attention_mask is None and q_length == kv_length and not q_offset and not kv_offset
    if plain and isinstance(q_offset, int) and isinstance(kv_offset, int):
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, q_length=q_length, kv_length=kv_length,
                     q_offset=q_offset, kv_offset=kv_offset, **kwargs)


def register() -> str:
    """Register IMPLEMENTATION with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, docs_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, docs_mask)
    return IMPLEMENTATION


def set_attention(model, implementation: str) -> str:
    """Set the attention implementation of `model` (a PEFT wrapper's base too); returns the previous one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    if before != implementation:
        base.set_attn_implementation(implementation)
    return before


def use_docs_attention(model) -> str:
    """Switch `model` to document attention (registering it first); returns the previous implementation."""
    return set_attention(model, register())
