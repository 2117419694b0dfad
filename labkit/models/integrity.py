"""Integrity of weight files and adapters: truncated / corrupt files named before loading; adapters complete and applied.

Weight files (safetensors headers, torch zip archives, shard indexes) are checked without reading the tensors,
so a truncated copy or an overwritten header ends in one clear error instead of a deep traceback. Adapters are
checked against the "empty adapter" bug (no LoRA tensors, or every lora_B zero, so the "fine-tuned" model
answers like the base) and against keys that silently do not match the model.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

from labkit.errors import LabkitError

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<ab>lora_A|lora_B)(?:\.[^.]+)?\.weight$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")
_ST_MAX_HEADER = 100_000_000  # safetensors refuses larger headers
_ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
             "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "C64": 8}
AGAIN = "copy or download it again from its source"
EMPTY_REASON = "the adapter is untrained (or its training was lost on save) and leaves the output unchanged"
EMPTY_HINT = "pass allow_empty=True (CLI: --allow_empty_adapter) if you mean to use an adapter that changes nothing"


# ---------------------------------------------------------------- weight files


def read_json(path: Path, what: str = "file") -> dict:
    """A JSON object from `path`; LabkitError naming the file when it is unreadable, not JSON, or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabkitError(f"{path}: no such {what}") from None
    except UnicodeDecodeError:
        raise LabkitError(f"{path}: not a text file (binary or corrupt {what}); {AGAIN}") from None
    except json.JSONDecodeError as err:
        raise LabkitError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); fix or "
                          f"replace the {what}") from None
    except OSError as err:
        raise LabkitError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise LabkitError(f"{path}: expected a JSON object {{...}}, found {type(data).__name__}; fix or replace the {what}")
    return data


def safetensors_header(path: Path) -> dict:
    """The header {tensor name: {dtype, shape, data_offsets}} of a safetensors file, checked against its size.

    LabkitError naming the file when it is truncated (shorter than its header describes) or corrupt (no valid
    header, offsets that do not tile the data). Reads only the header, never the tensors.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            raw = fh.read(n) if 0 < n <= min(_ST_MAX_HEADER, size - 8) else b""
    except OSError as err:
        raise LabkitError(f"{path}: cannot read ({err.strerror or err})") from None
    if n < 0:
        raise LabkitError(f"{path}: truncated ({size} bytes, not even a safetensors header); {AGAIN}")
    if n == 0 or n > _ST_MAX_HEADER:
        raise LabkitError(f"{path}: corrupt, not a safetensors file (its header-length field reads {n}); {AGAIN}")
    if 8 + n > size:
        raise LabkitError(f"{path}: truncated or corrupt ({size} bytes, but its header alone claims {8 + n}); {AGAIN}")
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        raise LabkitError(f"{path}: corrupt (its safetensors header is not valid JSON); {AGAIN}") from None
    return _check_offsets(path, header, size - 8 - n, size)


def _check_offsets(path: Path, header: dict, data_bytes: int, size: int) -> dict:
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(x) for x in info["data_offsets"])
            shape, dtype = [int(d) for d in info["shape"]], str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise LabkitError(f"{path}: corrupt (header entry {name!r} is malformed); {AGAIN}") from None
        want = math.prod(shape) * _ST_BYTES[dtype] if dtype in _ST_BYTES else stop - begin
        if not 0 <= begin <= stop or stop - begin != want:
            raise LabkitError(f"{path}: corrupt (header entry {name!r}: offsets {begin}..{stop} do not fit "
                              f"{dtype} {shape}); {AGAIN}")
        end = max(end, stop)
    if end > data_bytes:
        raise LabkitError(f"{path}: truncated ({size} bytes, its header describes {size - data_bytes + end}); the "
                          f"copy or download stopped early: {AGAIN}")
    if end < data_bytes:
        raise LabkitError(f"{path}: corrupt ({data_bytes - end} bytes after the last tensor its header "
                          f"describes); {AGAIN}")
    return {k: v for k, v in header.items() if k != "__metadata__"}


def check_pickle_archive(path: Path) -> None:
    """A torch.save file (pytorch_model.bin, adapter_model.bin): LabkitError when it is empty or a truncated zip."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if size == 0:
        raise LabkitError(f"{path}: empty file (0 bytes); {AGAIN}")
    if magic[:2] != b"PK":  # the legacy (pre-1.6) torch format has no cheap structure check
        return
    if not zipfile.is_zipfile(path):
        raise LabkitError(f"{path}: truncated or corrupt ({size} bytes; the archive's directory at the end of the "
                          f"file is missing); {AGAIN}")
    try:
        with zipfile.ZipFile(path) as zf:
            last = max((i.header_offset + i.compress_size for i in zf.infolist()), default=0)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise LabkitError(f"{path}: corrupt archive ({err}); {AGAIN}") from None
    if last > size:
        raise LabkitError(f"{path}: truncated ({size} bytes, its directory describes more than {last}); {AGAIN}")


def check_weight_file(path: Path) -> set[str]:
    """Check one weight file by its format; returns the tensor names of a safetensors file (empty set for pickle)."""
    path = Path(path)
    if path.name.endswith(".safetensors"):
        return set(safetensors_header(path))
    check_pickle_archive(path)
    return set()


def check_model_weights(folder: Path, fmt: str) -> list[Path]:
    """Every weight file of a model folder (single file or shards + index) checked; returns the files."""
    single, index = ("model.safetensors", "model.safetensors.index.json") if fmt == "safetensors" else \
        ("pytorch_model.bin", "pytorch_model.bin.index.json")
    folder = Path(folder)
    if (folder / single).is_file():
        check_weight_file(folder / single)
        return [folder / single]
    weight_map = read_json(folder / index, "shard index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise LabkitError(f"{folder / index}: no \"weight_map\" {{tensor: shard file}} in it; {AGAIN}")
    shards: dict[str, set[str]] = {}
    for tensor, shard in weight_map.items():
        shards.setdefault(str(shard), set()).add(tensor)
    for shard, tensors in sorted(shards.items()):
        path = folder / shard
        if not path.is_file():
            raise LabkitError(f"{folder / index}: names shard {shard}, which is missing from {folder}; {AGAIN}")
        names = check_weight_file(path)
        lost = sorted(tensors - names) if names else []
        if lost:
            raise LabkitError(f"{path}: does not hold {len(lost)} tensor(s) that {index} places in it (e.g. "
                              f"{lost[0]}); the shard and the index do not belong together: {AGAIN}")
    return [folder / s for s in sorted(shards)]


# ---------------------------------------------------------------- adapters


def _read_adapter(folder: Path) -> tuple[dict, dict, Path]:
    folder = Path(folder)
    cfg_path = folder / "adapter_config.json"
    if not folder.is_dir():
        raise LabkitError(f"{folder}: no such adapter folder")
    if not cfg_path.is_file():
        raise LabkitError(f"{folder}: not a LoRA adapter folder (no adapter_config.json)")
    cfg = read_json(cfg_path, "adapter config")
    _check_adapter_config(cfg, cfg_path)
    st, pt = folder / "adapter_model.safetensors", folder / "adapter_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        safetensors_header(st)
        try:
            tensors = load_file(str(st))
        except Exception as err:  # noqa: BLE001 - damage the header check could not see
            raise LabkitError(f"{st}: corrupt adapter weights ({err}); {AGAIN}") from None
        return cfg, tensors, st
    if pt.is_file():
        import torch

        check_pickle_archive(pt)
        try:
            return cfg, torch.load(str(pt), map_location="cpu", weights_only=True), pt
        except Exception as err:  # noqa: BLE001 - truncated, corrupt or not a state dict
            raise LabkitError(f"{pt}: unreadable adapter weights ({type(err).__name__}: {err}); {AGAIN}") from None
    raise LabkitError(f"{folder}: no adapter weights (adapter_model.safetensors)")


def _check_adapter_config(cfg: dict, path: Path) -> None:
    """The fields a LoRA adapter cannot do without: peft_type LORA, r > 0, target_modules."""
    if cfg.get("peft_type", "LORA") != "LORA":
        raise LabkitError(f"{path}: adapter type {cfg.get('peft_type')!r}, labkit checks LoRA adapters")
    r, targets = cfg.get("r"), cfg.get("target_modules")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise LabkitError(f"{path}: \"r\" must be a positive integer (the LoRA rank), found {r!r}")
    if not targets or not isinstance(targets, (str, list)) or \
            (isinstance(targets, list) and not all(isinstance(t, str) for t in targets)):
        raise LabkitError(f"{path}: \"target_modules\" must name the wrapped layers (a list of names or a "
                          f"regex), found {targets!r}")


def _targets(cfg: dict) -> list[str]:
    t = cfg.get("target_modules") or []
    if isinstance(t, str):  # a regex in peft; keep it as one pattern
        return [t]
    return sorted(t)


def _target_matches(name: str, targets: list[str], regex: bool) -> bool:
    if regex:
        return re.fullmatch(targets[0], name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _expected_from_model(model, targets: list[str], regex: bool) -> dict[str, tuple[int, int]]:
    """module name -> (in_features, out_features) for every linear the adapter's targets select."""
    from labkit.models.lora import linear_modules

    base = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    out = {}
    for name in linear_modules(base):
        if _target_matches(name, targets, regex):
            mod = base.get_submodule(name)
            mod = getattr(mod, "base_layer", mod)
            out[name] = (int(mod.in_features), int(mod.out_features))
    return out


def _expected_from_config(config, targets: list[str]) -> dict[str, tuple[int, int]]:
    """Same as _expected_from_model but from a LLaMA / Baichuan config (no weights needed)."""
    d, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or d // config.num_attention_heads
    kv = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * hd
    shapes = {"self_attn.q_proj": (d, config.num_attention_heads * hd), "self_attn.k_proj": (d, kv),
              "self_attn.v_proj": (d, kv), "self_attn.o_proj": (config.num_attention_heads * hd, d),
              "mlp.gate_proj": (d, i), "mlp.up_proj": (d, i), "mlp.down_proj": (i, d)}
    if config.model_type == "baichuan":
        shapes = {k: v for k, v in shapes.items() if not k.split(".")[-1] in ("q_proj", "k_proj", "v_proj")}
        shapes["self_attn.W_pack"] = (d, 3 * d)
    out = {}
    for layer in range(n):
        for suffix, shape in shapes.items():
            name = f"model.layers.{layer}.{suffix}"
            if _target_matches(name, targets, False):
                out[name] = shape
    return out


def _base_config(cfg: dict):
    base = cfg.get("base_model_name_or_path")
    if base and (Path(base) / "config.json").is_file():
        from labkit.models.load import _config

        try:
            return _config(Path(base))
        except LabkitError:
            return None
    return None


def _expected(cfg: dict, found: dict, targets: list[str], regex: bool, model) -> tuple[dict, str]:
    """(module name -> (in, out) or None, where that came from): the model, the base config, or the file."""
    if model is not None:
        return _expected_from_model(model, targets, regex), "model"
    if (config := _base_config(cfg)) is not None and not regex:
        return _expected_from_config(config, targets), "base config"
    layers = sorted({int(m.group(1)) for name in found if (m := _LAYER.search(name + "."))})
    kinds = sorted({re.sub(r"^.*\.layers\.\d+\.", "", n) for n in found})
    expected = {}
    for layer in range(max(layers) + 1 if layers else 0):
        for kind in kinds:
            name = f"model.layers.{layer}.{kind}"
            shape = next(((int(v["lora_A"].shape[1]), int(v["lora_B"].shape[0])) for k, v in found.items()
                          if k.endswith("." + kind) and "lora_A" in v and "lora_B" in v), None)
            expected[name] = shape
    return expected, "file"


def _other_base(cfg: dict, model) -> list[str]:
    """A hint when the adapter names another base than the model it is checked against."""
    made_for = cfg.get("base_model_name_or_path")
    base = getattr(getattr(model, "config", None), "_name_or_path", "") if model is not None else ""
    if made_for and base and Path(str(made_for)).expanduser().resolve() != Path(str(base)).expanduser().resolve():
        return [f"the adapter was made for {made_for}, the model is {base}"]
    return []


def verify_adapter_dir(path, model=None, require_trained: bool = False) -> dict:
    """Check a saved adapter: lora_A [r, in] and lora_B [out, r] for every targeted module of every layer.

    The expected modules come from `model` when given, else from the base config named in adapter_config.json,
    else from the layers present in the file. Fails (LabkitError) on an empty adapter, missing modules, wrong
    shapes or non-finite values; with `require_trained`, also when every lora_B is still zero. Returns a summary.
    """
    folder = Path(path)
    cfg, tensors, file = _read_adapter(folder)
    return _check_tensors(folder, cfg, tensors, file, model, require_trained)


def _check_tensors(folder: Path, cfg: dict, tensors: dict, file: Path, model, require_trained: bool) -> dict:
    import torch

    r = int(cfg["r"])
    targets = _targets(cfg)
    regex = isinstance(cfg.get("target_modules"), str)
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m:
            found.setdefault(m.group("module"), {})[m.group("ab")] = t
    size = file.stat().st_size
    if not found:
        raise LabkitError(f"{file}: holds no LoRA tensors ({size} bytes, {len(tensors)} tensors) - the adapter was "
                          f"saved empty; its targets {targets} were never wrapped or the state dict was lost on save")
    expected, source = _expected(cfg, found, targets, regex, model)
    if not expected:
        made_for = cfg.get("base_model_name_or_path")
        hint = f"; the adapter was made for {made_for}" if made_for else ""
        raise LabkitError(f"{folder}: target_modules {targets} select no linear layer of the base ({source}){hint}")
    missing, bad_shape, nonfinite = [], [], []
    b_nonzero = 0
    for name, shape in expected.items():
        ab = found.get(name, {})
        for part in ("lora_A", "lora_B"):
            if part not in ab:
                missing.append(f"{name}.{part}")
        if "lora_A" in ab and "lora_B" in ab and shape is not None:
            fan_in, fan_out = shape
            if tuple(ab["lora_A"].shape) != (r, fan_in):
                bad_shape.append(f"{name}.lora_A {tuple(ab['lora_A'].shape)} != {(r, fan_in)}")
            if tuple(ab["lora_B"].shape) != (fan_out, r):
                bad_shape.append(f"{name}.lora_B {tuple(ab['lora_B'].shape)} != {(fan_out, r)}")
        for part, t in ab.items():
            if not torch.isfinite(t.float()).all():
                nonfinite.append(f"{name}.{part}")
        if "lora_B" in ab and bool(ab["lora_B"].abs().sum() > 0):
            b_nonzero += 1
    extra = sorted(set(found) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if bad_shape:
        problems.append(f"wrong shapes: {'; '.join(bad_shape[:6])}")
    if nonfinite:
        problems.append(f"non-finite values in {', '.join(nonfinite[:6])}")
    if extra:
        problems.append(f"{len(extra)} module(s) in the file that the targets do not select: {', '.join(extra[:6])}")
    if require_trained and b_nonzero == 0:
        problems.append(f"every lora_B is zero: {EMPTY_REASON}")
    if problems:
        problems += _other_base(cfg, model)
        raise LabkitError(f"{file}: adapter check failed ({source}: {len(expected)} modules expected, targets "
                          f"{targets}, r={r}): " + "; ".join(problems))
    return {"path": str(folder), "file": file.name, "bytes": size, "r": r, "target_modules": targets,
            "modules": len(expected), "tensors": 2 * len(expected), "checked_against": source,
            "modules_with_nonzero_B": b_nonzero, "trained": b_nonzero > 0}


def load_adapter(base_model, path, check_output: bool = True, is_trainable: bool = False,
                 allow_empty: bool = False):
    """PeftModel.from_pretrained with checks: every adapter tensor applied (missing / unexpected keys listed,
    values equal to the file), and, where some lora_B != 0, the output differs from the base's.

    An adapter whose every lora_B is zero (it changes nothing: the "empty adapter") is refused unless
    `allow_empty=True`; so is one whose file holds no LoRA tensors at all (always).
    """
    import torch
    from peft import PeftModel

    folder = Path(path)
    cfg, tensors, file = _read_adapter(folder)
    summary = _check_tensors(folder, cfg, tensors, file, base_model, False)
    if not summary["trained"] and not allow_empty:
        raise LabkitError(f"{file}: every lora_B is zero ({summary['modules']} modules): {EMPTY_REASON}; "
                          f"{EMPTY_HINT}")
    try:
        model = PeftModel.from_pretrained(base_model, str(folder), is_trainable=is_trainable)
    except (ValueError, KeyError, RuntimeError, OSError, TypeError) as err:
        raise LabkitError(f"{folder}: PEFT could not load the adapter ({type(err).__name__}: {err})") from None
    adapter = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapters[0]
    state = {k: v for k, v in model.state_dict().items() if ".lora_" in k}
    applied = {}
    for key in tensors:
        m = _KEY.match(key)
        if not m:
            continue
        applied[key] = f"base_model.model.{m.group('module')}.{m.group('ab')}.{adapter}.weight"
    missing_in_model = sorted(k for k, mk in applied.items() if mk not in state)
    not_in_file = sorted(set(state) - set(applied.values()))
    changed = [k for k, mk in applied.items() if mk in state and
               not torch.equal(state[mk].detach().cpu().float(), tensors[k].float())]
    if missing_in_model or not_in_file or changed:
        raise LabkitError(
            f"{file}: adapter not fully applied - unexpected keys (in the file, not in the model): "
            f"{missing_in_model[:6] or 'none'}; missing keys (in the model, not in the file): {not_in_file[:6] or 'none'}; "
            f"values that differ after loading: {changed[:6] or 'none'}")
    summary["applied_tensors"] = len(applied)
    if check_output and summary["trained"]:
        summary["output_max_abs_change"] = output_change(model)
        if summary["output_max_abs_change"] <= 0.0:
            raise LabkitError(f"{file}: lora_B is non-zero but the adapter does not change the model's output "
                              f"(is it attached to the modules the forward pass uses?)")
    model.labkit_adapter_check = summary
    return model


@__import__("torch").no_grad()
def output_change(peft_model, input_ids=None) -> float:
    """Max |logits(adapter) - logits(base)| on a short probe input."""
    import torch

    cfg = peft_model.get_base_model().config
    if input_ids is None:
        gen = torch.Generator().manual_seed(0)
        input_ids = torch.randint(4, max(5, cfg.vocab_size), (1, 16), generator=gen)
    device = next(peft_model.parameters()).device
    input_ids = input_ids.to(device)
    was_training = peft_model.training
    peft_model.eval()
    with_adapter = peft_model(input_ids=input_ids).logits.float()
    with peft_model.disable_adapter():
        base = peft_model(input_ids=input_ids).logits.float()
    peft_model.train(was_training)
    return float((with_adapter - base).abs().max())
