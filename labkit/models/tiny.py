"""Tiny default models: a BPE tokenizer and tiny LLaMA / Baichuan bases built deterministically on the bundled data.

Recipe (everything below is in `RECIPE`; its hash, the hash of the bundled data files and `RECIPE_VERSION`
name the cache folders, so a change rebuilds them):

1. Tokenizer: byte-level BPE trained with `tokenizers` on every string of `data/*.json` and `data/*.jsonl`
   (dataset_info.json excluded), plus a short built-in Chinese/English primer. The pre-tokenizer isolates
   each CJK character and each digit before the byte-level split, so Chinese is char-level and numbers are
   digit-level (good for the bundled algorithmic tasks); no text is ever `<unk>`. Specials: `<unk>`=0,
   `<s>`=1 (added in front of every encoding, like LLaMA), `</s>`=2, `<pad>`=3. Saved as a HF fast tokenizer.
2. Models: LlamaForCausalLM with hidden 128, 4 layers, 4 heads, intermediate 512, max_position 512, RMSNorm
   eps 1e-6, RoPE base 10000, untied head, initialised from its seed.
3. Pre-training (LLaMA): 2,000 causal-LM steps of 16 documents (AdamW lr 1e-3, cosine decay), each document
   padded, not packed. 70% of the rows are worksheets, 30% raw strings:
   - a worksheet is one TRAIN record that has an input, written as plain text `instruction\ninput\noutput`
     (no chat template), so the base learns the skills of the data (count, compare, convert, ...);
   - a raw string is any string field of the TRAIN datasets (each a separate document `<s> text </s>`, cut
     at 128 tokens), so it also knows the language of the rest of the data, refusals and dialogs included.
   Nothing teaches the template or the refusing: under a chat template the base still answers nothing
   useful, and that is what LoRA SFT has to add. (Shorter pre-training on raw strings alone left the base
   on a plateau from which the tasks were not learnable in the workbook's step budget: docs/benchmarks.md.)
4. Baichuan: the pre-trained LLaMA base with every layer's q/k/v projections fused into one `W_pack`
   (`labkit.models.convert.llama_to_baichuan`): the same function in Baichuan's layout, so one pre-training
   serves both architectures and the difference between notebooks 02 and 03 is the layout alone.
   Torch runs with a fixed thread count and seeds during the build.

Folders: `cache_dir()/tiny/tokenizer-<hash>/`, `cache_dir()/tiny/<arch>-<hash>/` (model + tokenizer +
`labkit_tiny.json` with the recipe and pre-training losses). Builds go to a temporary folder renamed into
place when complete, under a file lock, so a killed build never looks complete and parallel callers build once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

from labkit.paths import cache_dir, data_dir

RECIPE_VERSION = 3
ARCHS = ("llama", "baichuan")
MARKER = "labkit_tiny.json"

RECIPE: dict = {
    "tokenizer": {"vocab_size": 4096, "min_frequency": 1, "model_max_length": 512},
    "model": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.02,
    },
    "seeds": {"llama": 1234},
    "pretrain": {"steps": 2000, "batch_size": 16, "max_tokens": 128, "worksheet_share": 0.7, "lr": 1e-3,
                 "warmup": 10, "weight_decay": 0.01, "threads": 2},
    "baichuan": "llama base, q/k/v fused into W_pack",
}

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]

# a few lines so the tokenizer and base know common words even if data/ is edited down to little
PRIMER = [
    "你好，我是一个乐于助人的助手。请问有什么可以帮你的？",
    "Hello, I am a helpful assistant. How can I help you today?",
    "零 一 二 三 四 五 六 七 八 九 十 百 千 万",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z",
    "中文 英文 数字 字母 问题 回答 翻译 总结 解释 例如 因为 所以 但是 如果 然后",
    "The quick brown fox jumps over the lazy dog.",
]


# --------------------------------------------------------------------------- data


def _data_files() -> list[Path]:
    folder = data_dir()
    if not folder.is_dir():
        return []
    files = sorted(list(folder.glob("*.json")) + list(folder.glob("*.jsonl")))
    return [f for f in files if f.name != "dataset_info.json"]


def data_hash() -> str:
    """Hash of the bundled data files (names and bytes), dataset_info.json included."""
    h = hashlib.sha256()
    folder = data_dir()
    extra = [folder / "dataset_info.json"] if (folder / "dataset_info.json").is_file() else []
    for f in _data_files() + extra:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _records(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    return data if isinstance(data, list) else [data]


def _strings(obj) -> list[str]:
    """Every string value in a JSON record (keys skipped), in document order."""
    if isinstance(obj, str):
        return [obj] if obj.strip() else []
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


HELD_OUT = ("test", "eval", "dev", "valid", "heldout", "held_out")


def _train_files() -> list[Path]:
    """Files of the TRAIN datasets: split "train" in dataset_info.json where it says, else by file name
    (files whose name contains test/eval/dev/valid/heldout are held out)."""
    info_path = data_dir() / "dataset_info.json"
    files = _data_files()
    info = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            info = {}
    splits = {v.get("file_name"): v.get("split") for v in info.values() if isinstance(v, dict) and v.get("split")}

    def is_train(f: Path) -> bool:
        if f.name in splits:
            return splits[f.name] == "train"
        return not any(tag in f.stem.lower() for tag in HELD_OUT)

    return [f for f in files if is_train(f)]


def _readable_records(files: list[Path]):
    """Every record of `files`, in order; a file that is not valid JSON is skipped (the data checker reports it)."""
    for f in files:
        try:
            records = _records(f)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        yield from records


def corpus_texts(train_only: bool = False) -> list[str]:
    """The strings the tokenizer (all files) or the pre-training (train files only) sees, plus the primer."""
    texts = list(PRIMER)
    for rec in _readable_records(_train_files() if train_only else _data_files()):
        texts.extend(_strings(rec))
    return texts


def worksheets() -> list[str]:
    """Every TRAIN record with an instruction, an input and an output as plain text `instruction\ninput\noutput`
    (the pre-training's worksheets), each distinct text once, in file order."""
    seen: dict[str, None] = {}
    for rec in _readable_records(_train_files()):
        fields = [rec.get(k) for k in ("instruction", "input", "output")] if isinstance(rec, dict) else []
        if len(fields) == 3 and all(isinstance(x, str) and x.strip() for x in fields):
            seen.setdefault("\n".join(fields), None)
    return list(seen)


# --------------------------------------------------------------------------- hashing, cache


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


def tokenizer_recipe_hash() -> str:
    return _hash({"v": RECIPE_VERSION, "tok": RECIPE["tokenizer"], "data": data_hash()})


def model_recipe_hash(arch: str) -> str:
    return _hash({"v": RECIPE_VERSION, "tok": tokenizer_recipe_hash(), "arch": arch, "model": RECIPE["model"],
                  "seeds": RECIPE["seeds"], "pretrain": RECIPE["pretrain"], "baichuan": RECIPE["baichuan"]})


def _tiny_root() -> Path:
    root = cache_dir() / "tiny"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _locked(name: str):
    with open(_tiny_root() / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_atomically(final: Path, build) -> Path:
    """Run build(tmp_dir) and rename tmp_dir to `final`; skip if `final` already holds a complete build."""
    if (final / MARKER).is_file() and _damage(final) is None:
        return final
    with _locked(final.name):
        if (final / MARKER).is_file():
            damage = _damage(final)
            if damage is None:
                return final
            from labkit.log import warn

            warn(f"the cached build {final} is damaged ({damage}); building it again")
        if final.exists():  # incomplete leftover (should not happen with rename, but be safe)
            shutil.rmtree(final)
        _remove_stale_tmp(final.parent)
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            if not (tmp / MARKER).is_file():
                raise RuntimeError(f"tiny build of {final.name} wrote no {MARKER}")
            sums = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
            (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1), encoding="utf-8")
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


CHECKSUMS = "labkit_files.sha256.json"  # sha256 of every file of a finished build, checked on each use


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _damage(folder: Path) -> str | None:
    """None when every file of a cached build still has the checksum it was built with; else what is wrong
    (a disk error, an interrupted copy, a hand edit), so the caller builds the folder again."""
    try:
        sums = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return f"{CHECKSUMS} is missing or unreadable"
    bad = [name for name, digest in sums.items() if not (folder / name).is_file() or _sha256(folder / name) != digest]
    return f"{', '.join(bad)} changed since it was built" if bad else None


def _remove_stale_tmp(root: Path) -> None:
    """Delete .tmp-* build folders left by processes that no longer run (a killed build)."""
    for tmp in root.glob(".tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


@contextlib.contextmanager
def _deterministic_torch(threads: int, seed: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- tokenizer


def _train_tokenizer(texts: list[str], vocab_size: int | None = None):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    cfg = dict(RECIPE["tokenizer"], **({"vocab_size": vocab_size} if vocab_size else {}))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg["vocab_size"], min_frequency=cfg["min_frequency"], special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tok


def _save_tokenizer(folder: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = _train_tokenizer(corpus_texts(train_only=False))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        model_max_length=RECIPE["tokenizer"]["model_max_length"], padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(folder)


def tiny_tokenizer_path() -> Path:
    """The tiny tokenizer folder (HF fast tokenizer), built if missing or its recipe/data changed."""
    final = _tiny_root() / f"tokenizer-{tokenizer_recipe_hash()}"

    def build(tmp: Path) -> None:
        t0 = time.time()
        _save_tokenizer(tmp)
        (tmp / MARKER).write_text(json.dumps({"kind": "tokenizer", "recipe": RECIPE["tokenizer"],
                                              "data_hash": data_hash(), "seconds": round(time.time() - t0, 2)}))

    return _build_atomically(final, build)


# --------------------------------------------------------------------------- models


def tiny_config(tokenizer):
    """The LlamaConfig of the tiny base for `tokenizer` (the tiny Baichuan's config is converted from it)."""
    from transformers import LlamaConfig

    return LlamaConfig(**RECIPE["model"], vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       tie_word_embeddings=False, use_cache=True, architectures=["LlamaForCausalLM"])


def _documents(tokenizer, max_tokens: int) -> tuple[list[list[int]], list[list[int]]]:
    """(worksheets, raw strings) as token ids `<s> text </s>`, each cut at `max_tokens`."""
    eos = tokenizer.eos_token_id

    def encode(texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [(ids + [eos])[:max_tokens] for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]

    return encode(worksheets()), encode(corpus_texts(train_only=True))


def pretrain(model, tokenizer, seed: int) -> dict:
    """The causal-LM pre-training of the recipe (worksheets and raw strings, padded rows); losses and timing."""
    import random

    import torch

    cfg = RECIPE["pretrain"]
    sheets, raw = _documents(tokenizer, cfg["max_tokens"])
    if not sheets and not raw:
        from labkit.errors import LabkitError

        raise LabkitError(f"{data_dir()}: no training text to pre-train the tiny base on (no train split with "
                          "string fields); restore the bundled files with `python -m labkit.data.bundled`")
    share = cfg["worksheet_share"] if sheets and raw else (1.0 if sheets else 0.0)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.95))
    steps, warm = cfg["steps"], cfg["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    order: list[int] = []  # worksheets in shuffled passes, so every one is seen before any repeats

    def row() -> list[int]:
        if rng.random() < share:
            if not order:
                order.extend(rng.sample(range(len(sheets)), len(sheets)))
            return sheets[order.pop()]
        return raw[rng.randrange(len(raw))]

    model.train()
    losses, t0 = [], time.time()
    for _ in range(steps):
        rows = [row() for _ in range(cfg["batch_size"])]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])  # (B, width)
        mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    tail = losses[-50:]
    return {"steps": steps, "worksheets": len(sheets), "raw_strings": len(raw),
            "first_loss": round(losses[0], 4), "final_loss": round(sum(tail) / len(tail), 4),
            "seconds": round(time.time() - t0, 1)}


@contextlib.contextmanager
def _quiet_hub():
    """transformers' loading/saving progress bars off: a build inside a notebook would leave an empty widget box."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def build_tiny_model(arch: str, folder: Path) -> dict:
    """Build the tiny `arch` model (and copy the tokenizer) into `folder`; returns the build record."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok_dir = tiny_tokenizer_path()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    record: dict = {"kind": "model", "arch": arch, "recipe": RECIPE, "recipe_version": RECIPE_VERSION,
                    "recipe_hash": model_recipe_hash(arch), "data_hash": data_hash()}
    if arch == "baichuan":  # the LLaMA base in Baichuan's layout (q/k/v -> W_pack), not a second pre-training
        from labkit.models.convert import llama_to_baichuan

        source = tiny_model_path("llama")
        with _quiet_hub():
            model = llama_to_baichuan(LlamaForCausalLM.from_pretrained(source))
        built = json.loads((source / MARKER).read_text())
        record.update(fused_from=source.name, seed=built["seed"], pretrain=built.get("pretrain"))
    else:
        seed = RECIPE["seeds"]["llama"]
        record["seed"] = seed
        with _deterministic_torch(RECIPE["pretrain"]["threads"], seed):
            model = LlamaForCausalLM(tiny_config(tokenizer))
            record["pretrain"] = pretrain(model, tokenizer, seed)
    record["parameters"] = sum(p.numel() for p in model.parameters())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with _quiet_hub():
        model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps(record, indent=1, ensure_ascii=False))
    return record


def tiny_model_path(arch: str = "llama") -> Path:
    """The tiny `arch` ("llama" | "baichuan") model folder (model + tokenizer), built if missing or stale."""
    from labkit.errors import LabkitError

    arch = str(arch).lower()
    if arch not in ARCHS:
        raise LabkitError(f"unknown tiny architecture {arch!r}: choose one of {', '.join(ARCHS)}")
    final = _tiny_root() / f"{arch}-{model_recipe_hash(arch)}"
    return _build_atomically(final, lambda tmp: build_tiny_model(arch, tmp))

