"""Memory estimate of LoRA training: weights by precision, LoRA + AdamW, activations, logits, loading peak, overhead.

The numbers follow what the code paths labkit uses actually hold (transformers 5 LlamaForCausalLM / labkit's
BaiChuanForCausalLM, peft LoRA, bitsandbytes int8 / nf4, the HF Trainer with AdamW), measured on small shapes by
tests/test_models_memory.py and at 7B width by bench/rehearsal_7b_width.py:

- weights: fp32 4 B, bf16/fp16 2 B per parameter. int8 (LLM.int8): decoder linears 1 B per weight + one fp32
  scale per output row; nf4: 0.5 B per weight + per 64-block absmax (1 B with double quantization, + one fp32 per
  256 blocks; 4 B without). lm_head, embeddings and norms stay unquantized and peft's
  `prepare_model_for_kbit_training` turns them to fp32.
- LoRA: r * (in + out) fp32 parameters per adapted linear; + gradients + AdamW's two moments = 16 B each.
- activations saved for backward, per layer and token, in elements of the compute dtype (derived from the tensors
  the eager / sdpa forward saves, see `layer_saved_elements`); with gradient checkpointing only each layer's input
  is kept, plus one layer recomputed during backward. bitsandbytes' int8 training matmul keeps its input on the
  autograd context, outside checkpointing's reach: 3*hidden + intermediate more per layer and token.
- logits: the loss upcasts to fp32 and keeps log_softmax's output; backward adds two more (B, T, V) fp32 tensors.
- loading (CPU): transformers maps the weight files (their pages count in RSS until loading ends) while it builds
  the parameters; k-bit loading also holds unquantized temporaries (see `load_peak_bytes`).
- overhead: CPU RSS of the imported stack (python, torch, transformers, peft, datasets) and the Trainer; on a GPU
  `max_memory_allocated` has no such term but the CUDA context (~0.5 GiB) comes on top of it in nvidia-smi.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit.errors import LabkitError

GIB = 2**30
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# measured (bench/rehearsal_7b_width.py, tests/test_models_memory.py); see the module docstring
CPU_IMPORTS_GIB = 0.47  # RSS after importing torch, transformers, peft, datasets and labkit.train
CPU_TRAINER_GIB = 0.07  # Trainer, accelerate, tokenized data, autograd engine on top of the imports
NF4_BLOCK, NF4_BLOCK2 = 64, 256


@dataclass(frozen=True)
class Shape:
    """What memory depends on in a LLaMA / Baichuan model."""

    arch: str  # llama | baichuan
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int = 0  # 0 = num_attention_heads
    tie_word_embeddings: bool = False

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear in one decoder layer, by module name."""
        h, i = self.hidden_size, self.intermediate_size
        kv = self.kv_heads * (h // self.num_attention_heads)
        attn = {"W_pack": (h, 3 * h)} if self.arch == "baichuan" else \
            {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv)}
        return {**attn, "o_proj": (h, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        """Parameters of the decoder linears (the ones bitsandbytes quantizes)."""
        return self.num_hidden_layers * sum(a * b for a, b in self.linears().values())

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head (unless tied) and RMSNorm weights: never quantized."""
        h = self.hidden_size
        heads = 1 if self.tie_word_embeddings else 2
        return heads * self.vocab_size * h + (2 * self.num_hidden_layers + 1) * h

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params


PRESETS = {
    "linly-7b": Shape("llama", 32000, 4096, 11008, 32, 32, 32),
    "baichuan-7b": Shape("baichuan", 64000, 4096, 11008, 32, 32, 32),
}
DEFAULT_TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "baichuan": ["W_pack"]}


def shape_of(model) -> Shape:
    """Shape from a preset name ("linly-7b", "baichuan-7b"), a model folder, a config, a model or a Shape."""
    if isinstance(model, Shape):
        return model
    if isinstance(model, str) and model in PRESETS:
        return PRESETS[model]
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not (path / "config.json").is_file():
            raise LabkitError(f"{path}: not a model folder (no config.json) and not one of {', '.join(PRESETS)}")
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    else:
        cfg = getattr(model, "config", model)
        raw = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    mt = str(raw.get("model_type", "llama")).lower()
    return Shape("baichuan" if mt == "baichuan" else "llama", int(raw["vocab_size"]), int(raw["hidden_size"]),
                 int(raw["intermediate_size"]), int(raw["num_hidden_layers"]), int(raw["num_attention_heads"]),
                 int(raw.get("num_key_value_heads") or raw["num_attention_heads"]),
                 bool(raw.get("tie_word_embeddings", False)))


def weight_files_bytes(folder) -> int:
    """Bytes of the weight files a loader reads from `folder` (safetensors preferred over pickle, as labkit does)."""
    folder = Path(folder)
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        files = list(folder.glob(pattern))
        if files:
            return sum(f.stat().st_size for f in files)
    return 0


# ---------------------------------------------------------------------------------------------- parts


def quantized_linear_bytes(in_f: int, out_f: int, precision: str, double_quant: bool = True) -> int:
    """Bytes of one decoder linear's weight at `precision` (bitsandbytes storage incl. its scales / block state)."""
    n = in_f * out_f
    if precision == "int8":
        return n + 4 * out_f  # int8 weight + fp32 row scale (SCB)
    if precision == "nf4":
        blocks = -(-n // NF4_BLOCK)
        state = blocks + 4 * -(-blocks // NF4_BLOCK2) + 4 * 256 if double_quant else 4 * blocks
        return n // 2 + state  # two 4-bit codes per byte + absmax per block
    return n * BYTES[precision]


def weights_bytes(shape: Shape, precision: str, *, load_dtype: str = "fp32", double_quant: bool = True) -> dict:
    """{"linears", "other"}: bytes of the base model's weights once loaded (and k-bit-prepared).

    load_dtype: the dtype of everything bitsandbytes does not quantize, before peft's prepare turns it fp32
    (so it only matters for fp32/bf16/fp16 precision, where it is the precision itself).
    """
    if precision in ("int8", "nf4"):
        lin = shape.num_hidden_layers * sum(quantized_linear_bytes(a, b, precision, double_quant)
                                            for a, b in shape.linears().values())
        return {"linears": lin, "other": 4 * shape.other_params}
    b = BYTES[precision]
    return {"linears": b * shape.linear_params, "other": b * shape.other_params}


def lora_params(shape: Shape, targets, r: int) -> int:
    """Trainable LoRA parameters: r * (in + out) per targeted linear per layer."""
    lin = shape.linears()
    bad = [t for t in targets if t not in lin]
    if bad:
        raise LabkitError(f"LoRA target(s) {', '.join(bad)} are not linears of a {shape.arch} layer "
                          f"({', '.join(lin)})")
    return shape.num_hidden_layers * sum(r * (lin[t][0] + lin[t][1]) for t in targets)


def layer_saved_elements(shape: Shape, seq_len: int, targets, r: int, *, dropout: bool = True,
                         attn_implementation: str = "sdpa") -> int:
    """Elements one decoder layer saves for backward per token, LoRA training, frozen base.

    Counted from the tensors autograd keeps (tests/test_models_memory.py checks it against saved-tensor hooks):
    two RMSNorms 2*(h + 1) (input, rsqrt); attention sdpa 4h + H (q, k, v, output, logsumexp) or eager
    3h + H*T (q, k, v, softmax weights); MLP 3i (gate, up, act(gate)). Each LoRA target adds r (lora_A's output)
    and, with dropout, 2*in (dropout mask and output); without dropout lora_A keeps its input, once per distinct
    input (q/k/v or W_pack share one, gate/up share one; o_proj's is sdpa's saved output already).
    """
    h, i, heads = shape.hidden_size, shape.intermediate_size, shape.num_attention_heads
    attn = 4 * h + heads if attn_implementation != "eager" else 3 * h + heads * seq_len
    base = 2 * (h + 1) + attn + 3 * i
    lin = shape.linears()
    if dropout:
        return base + sum(r + 2 * lin[t][0] for t in targets)
    groups = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "W_pack": "attn", "gate_proj": "mlp",
              "up_proj": "mlp"}
    inputs = {groups.get(t, t): lin[t][0] for t in targets}
    if attn_implementation != "eager":
        inputs.pop("o_proj", None)
    return base + r * len(targets) + sum(inputs.values())


def activation_bytes(shape: Shape, seq_len: int, batch: int, targets, r: int, *, compute_bytes: int = 4,
                     dropout: bool = True, gradient_checkpointing: bool = True, attn_implementation: str = "sdpa",
                     int8_stash: bool = False) -> dict:
    """{"kept", "backward"}: bytes held from forward to backward, and the most backward adds on top.

    kept: every layer's saved tensors, or with checkpointing each layer's input (B, T, h), plus log_softmax's
    fp32 output (B, T, V) (and the low-precision logits while the loss runs). backward: the larger of the loss
    gradients (two fp32 (B, T, V)) and, with checkpointing, one layer recomputed plus its gradients.
    """
    tokens = batch * seq_len
    h, i, L, V = shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers, shape.vocab_size
    layer = layer_saved_elements(shape, seq_len, targets, r, dropout=dropout,
                                 attn_implementation=attn_implementation) * tokens * compute_bytes
    kept = L * tokens * h * compute_bytes if gradient_checkpointing else L * layer
    if int8_stash:  # bitsandbytes int8 matmul keeps its input on ctx: x_attn, attn_out, x_mlp, act*up
        kept += L * tokens * (3 * h + i) * compute_bytes
    logits = tokens * V * (4 + (compute_bytes if compute_bytes != 4 else 0))
    recompute = layer + 2 * tokens * max(h, i) * compute_bytes if gradient_checkpointing else 0
    return {"kept": kept + logits, "backward": max(2 * tokens * V * 4, recompute)}


@dataclass
class MemoryEstimate:
    """Bytes by part; `peak` is what a run needs at its worst moment (training or loading)."""

    shape: Shape
    precision: str
    device: str
    seq_len: int
    batch: int
    gradient_checkpointing: bool
    parts: dict = field(default_factory=dict)  # training-time parts, bytes
    load_peak: int = 0
    train_peak: int = 0

    @property
    def peak(self) -> int:
        return max(self.load_peak, self.train_peak)

    @property
    def peak_gb(self) -> float:
        """Peak in GiB."""
        return self.peak / GIB

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(peak=self.peak, peak_gb=round(self.peak_gb, 3))
        return d

    def rows(self) -> list[dict]:
        """[{"part", "GiB"}] for a table: each training part, the training peak, the loading peak."""
        out = [{"part": k, "GiB": round(v / GIB, 3)} for k, v in self.parts.items()]
        out += [{"part": "training peak", "GiB": round(self.train_peak / GIB, 3)},
                {"part": "loading peak", "GiB": round(self.load_peak / GIB, 3)}]
        return out


def estimate_training(model, precision: str = "fp32", *, lora_targets=None, lora_r: int = 8,
                      lora_dropout: float = 0.05, seq_len: int = 1024, batch: int = 1,
                      gradient_checkpointing: bool = True, attn_implementation: str = "sdpa",
                      device: str = "cpu", weight_files: int | None = None) -> MemoryEstimate:
    """Memory of LoRA training of `model` (preset name, folder, config or Shape) at `precision` on `device`.

    device "cpu": process RSS (imports and Trainer included; loading maps the weight files, `weight_files`
    bytes, read from the folder when `model` is one, else the fp16 size). device "cuda": what
    torch.cuda.max_memory_allocated reports (the CUDA context is not in it). Compute dtype: fp32 on CPU unless
    precision is bf16; on a GPU, bf16/fp16 autocast for every precision but fp32.
    """
    from labkit.models.load import normalize_precision

    precision = normalize_precision(precision)
    shape = shape_of(model)
    targets = list(lora_targets or DEFAULT_TARGETS[shape.arch])
    gpu = device.startswith("cuda")
    if precision == "fp16" and not gpu:
        precision = "fp32"  # labkit loads fp16 as fp32 without a GPU
    kbit = precision in ("int8", "nf4")
    cb = 4 if precision == "fp32" or (not gpu and kbit) else 2
    w = weights_bytes(shape, precision)
    act = activation_bytes(shape, seq_len, batch, targets, lora_r, compute_bytes=cb, dropout=lora_dropout > 0,
                           gradient_checkpointing=gradient_checkpointing, attn_implementation=attn_implementation,
                           int8_stash=precision == "int8")
    largest = max(a * b for a, b in shape.linears().values())
    dequant = 2 * largest * cb if kbit else 0  # backward dequantizes one weight for the input gradient
    parts = {
        "weights": w["linears"] + w["other"],
        "lora + grads + AdamW": 16 * lora_params(shape, targets, lora_r),
        "activations": act["kept"] + max(act["backward"], dequant),
        "overhead": 0 if gpu else int((CPU_IMPORTS_GIB + CPU_TRAINER_GIB) * GIB),
    }
    est = MemoryEstimate(shape, precision, device, seq_len, batch, gradient_checkpointing, parts)
    est.train_peak = sum(parts.values())
    est.load_peak = load_peak_bytes(shape, precision, parts["weights"], device=device, model=model,
                                    weight_files=weight_files)
    return est


def load_peak_bytes(shape: Shape, precision: str, weights: int, *, device: str = "cpu", model=None,
                    weight_files: int | None = None) -> int:
    """Peak while transformers loads the model. GPU: the weights plus one unquantized tensor being quantized.
    CPU: imports + weights + the mapped weight files (their pages count in RSS until loading ends) + for k-bit
    one fp16 copy of the largest tensor (embedding or lm_head)."""
    kbit = precision in ("int8", "nf4")
    linear = max(a * b for a, b in shape.linears().values())
    if device.startswith("cuda"):
        return weights + (4 * linear if kbit else 0)
    if weight_files is None:
        is_folder = isinstance(model, (str, os.PathLike)) and Path(model).is_dir()
        weight_files = weight_files_bytes(model) if is_folder else 2 * shape.params
    # k-bit on CPU (measured at 7B width): an fp16 copy of the embedding-sized tensor, and the quantizer's fp32
    # temporaries of one linear (about 0.75 of its fp32 size for int8, 1.75 for nf4)
    transient = 2 * shape.vocab_size * shape.hidden_size + int(4 * linear * (0.75 if precision == "int8" else 1.75))
    return int(CPU_IMPORTS_GIB * GIB) + weights + weight_files + (transient if kbit else 0)


def table_7b(precision: str = "", *, seq_len: int = 1024, batch: int = 4, lora_r: int = 8, targets=None,
             gradient_checkpointing: bool = True, device: str = "cuda") -> list[dict]:
    """Rows (model x precision) of estimated GiB for LoRA training of Linly-7B and Baichuan-7B at these settings.

    targets: {"llama": spec, "baichuan": spec} in any spelling `labkit.models.lora.parse_targets` reads (None:
    the presets). `precision` marks the chosen row; bf16 stands for fp16 too (same bytes).
    """
    from labkit.models.lora import parse_targets

    rows = []
    for name in ("linly-7b", "baichuan-7b"):
        arch = PRESETS[name].arch
        spec = (targets or {}).get(arch) or DEFAULT_TARGETS[arch]
        for prec in ("bf16", "int8", "nf4"):
            est = estimate_training(name, prec, lora_targets=parse_targets(spec), lora_r=lora_r, seq_len=seq_len,
                                    batch=batch, gradient_checkpointing=gradient_checkpointing, device=device)
            p = est.parts
            rows.append({"model": name, "precision": prec, "chosen": prec == precision or
                         (prec == "bf16" and precision == "fp16"),
                         "weights": round(p["weights"] / GIB, 1),
                         "LoRA + AdamW": round(p["lora + grads + AdamW"] / GIB, 2),
                         "activations": round(p["activations"] / GIB, 1), "peak": round(est.peak_gb, 1)})
    return rows
