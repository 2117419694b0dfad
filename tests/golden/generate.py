"""Regenerate the golden template fixtures from the tools' own code (documents how tests/golden/*.json were made).

The fixtures are renderings of `conversations.json` made by alpaca-lora, LLaMA-Efficient-Tuning and LLaMA-Factory
themselves: their prompt builders, their tokenize/label-mask functions and their template registries run
unchanged on a byte-level BPE tokenizer whose decode(encode(x)) == x, so the token ids decode back to the exact
training text, special tokens written as their strings. Nothing of the tools is copied here: the tools' files are
read from the folders given on the command line, and the functions that the tools define inside other functions
(alpaca-lora's `tokenize`/`generate_and_tokenize_prompt` in `train()`, LET's `get_dialog`/
`preprocess_supervised_dataset` in `preprocess_data()`) are compiled from those files with `ast` and run as they are.

Run it in a throwaway virtualenv that holds `llamafactory==0.9.5` (never a dependency of labkit), with git clones
of the tools (alpaca-lora: tloen/alpaca-lora; LET and LLaMA-Factory: hiyouga/LLaMA-Factory, which is the renamed
LLaMA-Efficient-Tuning repository):

    python3 -m venv /tmp/lfvenv && /tmp/lfvenv/bin/pip install torch llamafactory==0.9.5
    /tmp/lfvenv/bin/python tests/golden/generate.py \
        --alpaca-lora ALPACA_LORA_CLONE --alpaca-lora-commit 8bb8579 \
        --let LLAMA_FACTORY_CLONE --let-commit fa06b168a \
        --lf --lf-repo LLAMA_FACTORY_CLONE --lf-baichuan-commit 5fb5d7ebd3a8b7b5b4873f18e2b7318cffbec58c

A plain folder instead of a clone works too: for alpaca-lora one with `finetune.py`, `prompter.py` (or
`utils/prompter.py`) and the template JSON files (in `templates/` or beside them); for LET one with `template.py` and
`common.py` (its `src/utils/` files). Outputs (in the folder of this script unless --out):
`alpaca-lora.json`, `let.json`, `llamafactory.json` and, the first time, the tokenizer in `tokenizer/`
(kept afterwards so ids stay stable; --new-tokenizer rebuilds it).

Each fixture: {"header": {source, version/commit, generated, tokenizer, notes}, "renderings": {template: {case: R}}}
with R = {"text", "segments": [[text, trained], ...], "prompt", "bos", "input_ids", "labels"} (alpaca-lora adds
"labels_train_on_inputs", the tool's default) or R = {"unsupported": reason} when the tool would silently ignore a
field the record holds (labkit refuses such records); and "truncations": [{template, case, limits, input_ids,
labels}], the same code run with small cutoff_len / max_source_length / max_target_length.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
IGNORE_INDEX = -100
CUTOFF = 100_000  # long enough that nothing is cut: the fixtures show templates, not truncation
EXTRA_SPECIALS = ["<reserved_102>", "<reserved_103>", "<|im_start|>", "<|im_end|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"]
CUT_CASES = {"alpaca-lora": ["en_input", "zh_input", "code_output"],
             "let": ["en_input", "history_en", "history_zh_system"],
             "llamafactory": ["en_input", "history_en", "history_zh_system"]}
LF_TEMPLATES = ["alpaca", "default", "empty", "vicuna", "llama2", "llama3", "qwen", "chatml", "baichuan"]


# ------------------------------------------------------------------------------------------------ tokenizer
def build_tokenizer(folder: Path, cases: list[dict]) -> None:
    """A byte-level BPE tokenizer (BOS added like LLaMA's) trained on the conversations; saved to `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for c in cases:
        texts += [c.get("system") or "", c["instruction"], c.get("input") or "", c["output"]]
        texts += [x for pair in c.get("history") or [] for x in pair]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", additional_special_tokens=EXTRA_SPECIALS,
                                   clean_up_tokenization_spaces=False)
    fast.save_pretrained(folder)


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    probe = "  你好\n### Input:\n{x}  \r\n\t😀 <|im_end|>"
    assert tok.decode(tok.encode(probe, add_special_tokens=False)) == probe, "tokenizer does not round-trip"
    return tok


def render_ids(tok, input_ids: list[int], labels: list[int]) -> dict:
    """text (BOS dropped), bos, segments [[text, trained]] from the label mask; checks the pieces re-join exactly."""
    bos = bool(input_ids) and input_ids[0] == tok.bos_token_id
    ids, labs = (input_ids[1:], labels[1:]) if bos else (input_ids, labels)
    runs: list[list] = []
    for i, lab in zip(ids, labs):
        trained = lab != IGNORE_INDEX
        if runs and runs[-1][1] == trained:
            runs[-1][0].append(i)
        else:
            runs.append([[i], trained])
    text = tok.decode(ids, skip_special_tokens=False)
    segments = [[tok.decode(r, skip_special_tokens=False), t] for r, t in runs]
    assert "".join(s for s, _ in segments) == text and "\ufffd" not in text, f"segments do not re-join: {segments}"
    return {"text": text, "segments": segments, "bos": bos}


def _strip_bos(tok, ids: list[int]) -> list[int]:
    return ids[1:] if ids and ids[0] == tok.bos_token_id else ids


def _nested_functions(path: Path, outer: str, names: tuple[str, ...], namespace: dict) -> dict:
    """Compile the functions `names` that `outer` defines inside itself in `path`, with `namespace` as globals."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == outer]
    assert found, f"{path}: no function {outer}"
    defs = [n for n in found[0].body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert {d.name for d in defs} == set(names), f"{path}: {outer} does not define {names}"
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _is_git(path: Path) -> bool:
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def checkout(path: Path, commit: str, patterns: list[str], dest: Path) -> Path:
    """The tool's files as a folder: `path` itself, or (a git clone) the files matching `patterns` at `commit`."""
    if not _is_git(path):
        return path
    listing = subprocess.run(["git", "-C", str(path), "ls-tree", "-r", "--name-only", commit], check=True,
                             capture_output=True, text=True).stdout.split()
    for rel in listing:
        if any(Path(rel).match(p) for p in patterns):
            blob = subprocess.run(["git", "-C", str(path), "show", f"{commit}:{rel}"], check=True,
                                  capture_output=True).stdout
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(blob)
    return dest


def _first(folder: Path, *candidates: str) -> Path:
    for c in candidates:
        hits = sorted(folder.glob(c))
        if hits:
            return hits[0]
    raise SystemExit(f"{folder}: none of {candidates}")


# ------------------------------------------------------------------------------------------------ alpaca-lora
def alpaca_lora(path: Path, commit: str, tok_dir: Path, cases: list[dict]) -> dict:
    src = tempfile.TemporaryDirectory()
    folder = checkout(path, commit, ["finetune.py", "utils/prompter.py", "templates/*.json"], Path(src.name))
    prompter_py = _first(folder, "utils/prompter.py", "prompter.py")
    finetune_py = _first(folder, "finetune.py")
    tdir = folder / "templates" if (folder / "templates").is_dir() else folder
    names = sorted(p.stem for p in tdir.glob("*.json"))
    Prompter = _module(prompter_py, "alpaca_lora_prompter").Prompter
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:  # Prompter reads templates/<name>.json from the working folder
        (Path(tmp) / "templates").mkdir()
        for n in names:
            (Path(tmp) / "templates" / f"{n}.json").write_bytes((tdir / f"{n}.json").read_bytes())
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for name in names:
                out[name] = {}
                for case in cases:
                    out[name][case["id"]] = _alpaca_lora_case(Prompter(name), finetune_py, tok_dir, case)
            cuts = _alpaca_lora_cuts(Prompter("alpaca"), finetune_py, tok_dir, {c["id"]: c for c in cases})
        finally:
            os.chdir(cwd)
    return {"header": {"source": "alpaca-lora", "repository": "tloen/alpaca-lora", "commit": commit,
                       "generated": "utils/prompter.py Prompter.generate_prompt and finetune.py train()'s tokenize / "
                                    "generate_and_tokenize_prompt, compiled from the tool's files and run unchanged "
                                    f"(cutoff_len {CUTOFF}, add_eos_token False = the tool's default)",
                       "notes": "labels: train_on_inputs=False; labels_train_on_inputs: the tool's default True. "
                                "system and history are not read by the tool (records holding them: unsupported). "
                                "truncations: the same code at small cutoff_len, with train_on_inputs and "
                                "add_eos_token both ways."},
            "renderings": out, "truncations": cuts}


def _alpaca_lora_run(prompter, finetune_py: Path, tok, case: dict, cutoff_len: int, train_on_inputs: bool,
                     add_eos_token: bool) -> tuple[list[int], list[int]]:
    ns = _nested_functions(finetune_py, "train", ("tokenize", "generate_and_tokenize_prompt"),
                           {"tokenizer": tok, "cutoff_len": cutoff_len, "prompter": prompter,
                            "train_on_inputs": train_on_inputs, "add_eos_token": add_eos_token})
    row = ns["generate_and_tokenize_prompt"]({"instruction": case["instruction"], "input": case.get("input"),
                                              "output": case["output"]})
    return row["input_ids"], row["labels"]


def _alpaca_lora_case(prompter, finetune_py: Path, tok_dir: Path, case: dict) -> dict:
    held = [k for k in ("system", "history") if case.get(k)]
    if held:
        return {"unsupported": f"the tool reads only instruction/input/output; it would ignore {' and '.join(held)}"}
    tok = load_tokenizer(tok_dir)
    ids, labels = _alpaca_lora_run(prompter, finetune_py, tok, case, CUTOFF, False, False)
    ids_t, labels_t = _alpaca_lora_run(prompter, finetune_py, tok, case, CUTOFF, True, False)
    assert ids_t == ids
    r = render_ids(tok, ids, labels)
    r["prompt"] = prompter.generate_prompt(case["instruction"], case.get("input"))
    r["input_ids"], r["labels"], r["labels_train_on_inputs"] = ids, labels, labels_t
    return r


def _alpaca_lora_cuts(prompter, finetune_py: Path, tok_dir: Path, cases: dict) -> list[dict]:
    tok = load_tokenizer(tok_dir)
    out = []
    for cid in CUT_CASES["alpaca-lora"]:
        for cutoff in (100, 134, 140, 150, 170):
            for train_on_inputs in (False, True):
                for add_eos in (False, True):
                    ids, labels = _alpaca_lora_run(prompter, finetune_py, tok, cases[cid], cutoff, train_on_inputs,
                                                   add_eos)
                    out.append({"template": "alpaca", "case": cid, "input_ids": ids, "labels": labels,
                                "limits": {"cutoff_len": cutoff, "train_on_inputs": train_on_inputs,
                                           "add_eos_token": add_eos}})
    return out


# ------------------------------------------------------------------------------------------------ LET
def let(path: Path, commit: str, tok_dir: Path, cases: list[dict]) -> dict:
    src = tempfile.TemporaryDirectory()
    folder = checkout(path, commit, ["src/utils/template.py", "src/utils/common.py"], Path(src.name))
    template_py = _first(folder, "src/utils/template.py", "template.py")
    common_py = _first(folder, "src/utils/common.py", "common.py")
    mod = _module(template_py, "let_template")
    names = _let_names(template_py)
    out = {name: {c["id"]: _let_case(mod.Template(name), common_py, tok_dir, c) for c in cases} for name in names}
    cuts = _let_cuts(mod, common_py, tok_dir, {c["id"]: c for c in cases})
    return {"header": {"source": "let", "repository": "hiyouga/LLaMA-Efficient-Tuning", "commit": commit,
                       "generated": "template.py Template(name) and src/utils/common.py preprocess_data()'s "
                                    "get_dialog / "
                                    "preprocess_supervised_dataset, compiled from the tool's files and run unchanged "
                                    f"(max_source_length = max_target_length = {CUTOFF}); prompt: "
                                    "Template.get_prompt(query, history, prefix)",
                       "notes": "a record's system is passed as the tool's source_prefix (it replaces the template "
                                "prefix); query = instruction + '\\n' + input. Templates with use_history False "
                                "ignore history (records holding it: unsupported). truncations: the same code with "
                                "small max_source_length / max_target_length."},
            "renderings": out, "truncations": cuts}


def _let_names(template_py: Path) -> list[str]:
    """Template names in the order template.py checks them (`self.name == "..."`)."""
    names = []
    for node in ast.walk(ast.parse(template_py.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "name":
            names += [c.value for c in node.comparators if isinstance(c, ast.Constant)]
    return names


def _let_run(template, common_py: Path, tok, case: dict, max_source: int, max_target: int):
    data_args = SimpleNamespace(max_source_length=max_source, max_target_length=max_target)
    ns = _nested_functions(common_py, "preprocess_data", ("get_dialog", "preprocess_supervised_dataset"),
                           {"prompt_template": template, "tokenizer": tok, "data_args": data_args,
                            "IGNORE_INDEX": IGNORE_INDEX})
    batch = {"prompt": [case["instruction"]], "query": [case.get("input")], "response": [case["output"]],
             "history": [case.get("history")], "prefix": [case.get("system")]}
    enc = ns["preprocess_supervised_dataset"](batch)
    return enc["input_ids"][0], enc["labels"][0]


def _let_case(template, common_py: Path, tok_dir: Path, case: dict) -> dict:
    if case.get("history") and not template.use_history:
        return {"unsupported": f"template {template.name!r} has use_history False: the tool would ignore history"}
    tok = load_tokenizer(tok_dir)
    ids, labels = _let_run(template, common_py, tok, case, CUTOFF, CUTOFF)
    r = render_ids(tok, ids, labels)
    query = case["instruction"] + "\n" + case["input"] if case.get("input") else case["instruction"]
    r["prompt"] = template.get_prompt(query, case.get("history"), case.get("system") or "")
    r["input_ids"], r["labels"] = ids, labels
    return r


def _let_cuts(mod, common_py: Path, tok_dir: Path, cases: dict) -> list[dict]:
    tok = load_tokenizer(tok_dir)
    out = []
    for name in ("default", "baichuan"):
        for cid in CUT_CASES["let"]:
            for ms, mt in ((8, 4), (24, 8), (64, 16), (140, 8), (200, 200)):
                ids, labels = _let_run(mod.Template(name), common_py, tok, cases[cid], ms, mt)
                out.append({"template": name, "case": cid, "input_ids": ids, "labels": labels,
                            "limits": {"max_source_length": ms, "max_target_length": mt}})
    return out


# ------------------------------------------------------------------------------------------------ LLaMA-Factory
def llamafactory(repo: Path | None, baichuan_commit: str, tok_dir: Path, cases: list[dict]) -> dict:
    import llamafactory as lf
    from llamafactory.data import template as lf_template

    notes = ["system and history are read through dataset_info columns {system: system, history: history}"]
    if "baichuan" not in lf_template.TEMPLATES:
        if repo is None:
            raise SystemExit("llamafactory has no 'baichuan' template; pass --lf-repo (a LLaMA-Factory clone)")
        _register_old_template(repo, baichuan_commit, "baichuan", lf_template)
        notes.append(f"'baichuan' is not in {lf.__version__} (removed 2026-01); its register_template call was taken "
                     f"from src/llamafactory/data/template.py at commit {baichuan_commit} and run in this version")
    out = {name: {c["id"]: _lf_case(name, tok_dir, c) for c in cases} for name in LF_TEMPLATES}
    by_id = {c["id"]: c for c in cases}
    cuts = [{"template": name, "case": cid, "limits": {"cutoff_len": cutoff},
             **_lf_case(name, tok_dir, by_id[cid], cutoff, render=False)}
            for name in ("alpaca", "qwen", "llama2", "baichuan") for cid in CUT_CASES["llamafactory"]
            for cutoff in (8, 24, 48, 100)]
    return {"header": {"source": "llamafactory", "package": f"llamafactory=={lf.__version__}",
                       "baichuan_commit": baichuan_commit,
                       "generated": "AlpacaDatasetConverter (instruction + '\\n' + input, history, system), "
                                    "get_template_and_fix_tokenizer, SupervisedDatasetProcessor.preprocess_dataset "
                                    f"(cutoff_len {CUTOFF}, train_on_prompt False, mask_history False) for text and "
                                    "labels; prompt: Template.encode_oneturn with an empty last assistant turn "
                                    "(as its chat engine does)",
                       "notes": "; ".join(notes + ["truncations: the same code at small cutoff_len"])},
            "renderings": out, "truncations": cuts}


def _register_old_template(repo: Path, commit: str, name: str, lf_template) -> None:
    src = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:src/llamafactory/data/template.py"],
                         check=True, capture_output=True, text=True).stdout
    for node in ast.parse(src).body:
        call = getattr(node, "value", None)
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "register_template" and any(
                k.arg == "name" and getattr(k.value, "value", None) == name for k in call.keywords):
            exec(compile(ast.Module(body=[node], type_ignores=[]), f"{commit}:template.py", "exec"),
                 vars(lf_template))
            return
    raise SystemExit(f"{commit}: no register_template(name={name!r})")


def _lf_case(name: str, tok_dir: Path, case: dict, cutoff_len: int = CUTOFF, render: bool = True) -> dict:
    from llamafactory.data.converter import AlpacaDatasetConverter
    from llamafactory.data.parser import DatasetAttr
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    tok = load_tokenizer(tok_dir)
    data_args = DataArguments(template=name, cutoff_len=cutoff_len, train_on_prompt=False, mask_history=False)
    saved = copy.deepcopy(TEMPLATES[name])
    try:
        template = get_template_and_fix_tokenizer(tok, data_args)
        attr = DatasetAttr(load_from="file", dataset_name="golden", formatting="alpaca")
        attr.system, attr.history = "system", "history"
        record = {"instruction": case["instruction"], "input": case.get("input"), "output": case["output"],
                  "system": case.get("system"), "history": case.get("history")}
        conv = AlpacaDatasetConverter(attr, data_args)(record)
        proc = SupervisedDatasetProcessor(template=template, tokenizer=tok, processor=None, data_args=data_args)
        batch = {k: [conv[k]] for k in ("_prompt", "_response", "_system", "_tools", "_images", "_videos", "_audios")}
        enc = proc.preprocess_dataset(batch)
        ids, labels = enc["input_ids"][0], enc["labels"][0]
        if not render:
            return {"input_ids": ids, "labels": labels}
        r = render_ids(tok, ids, labels)
        prompt_ids, _ = template.encode_oneturn(tok, conv["_prompt"] + [{"role": "assistant", "content": ""}],
                                                conv["_system"], conv["_tools"])
        r["prompt"] = tok.decode(_strip_bos(tok, prompt_ids), skip_special_tokens=False)
        r["eos_token"] = tok.eos_token
        r["input_ids"], r["labels"] = ids, labels
        return r
    finally:
        TEMPLATES[name] = saved


# ------------------------------------------------------------------------------------------------ main
def dump(fixture: dict) -> str:
    """The fixture as JSON with one line per (template, case) rendering (reviewable diffs, compact id lists)."""
    j = lambda x: json.dumps(x, ensure_ascii=False)  # noqa: E731
    lines = ["{", f' "header": {json.dumps(fixture["header"], ensure_ascii=False, indent=2)},', ' "renderings": {']
    names = list(fixture["renderings"])
    for i, name in enumerate(names):
        per = fixture["renderings"][name]
        lines.append(f"  {j(name)}: {{")
        lines += [f"   {j(cid)}: {j(r)}" + ("," if k < len(per) - 1 else "") for k, (cid, r) in enumerate(per.items())]
        lines.append("  }" + ("," if i < len(names) - 1 else ""))
    lines.append(" }," if "truncations" in fixture else " }")
    if "truncations" in fixture:
        cuts = fixture["truncations"]
        lines += [' "truncations": ['] + [f"  {j(c)}" + ("," if k < len(cuts) - 1 else "") for k, c in enumerate(cuts)]
        lines.append(" ]")
    return "\n".join(lines + ["}"]) + "\n"



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alpaca-lora", type=Path, help="folder with alpaca-lora's finetune.py, prompter.py, templates")
    ap.add_argument("--alpaca-lora-commit", default="8bb8579")
    ap.add_argument("--let", type=Path, help="folder with LLaMA-Efficient-Tuning's template.py and common.py")
    ap.add_argument("--let-commit", default="fa06b168a")
    ap.add_argument("--lf", action="store_true", help="render with the installed llamafactory package")
    ap.add_argument("--lf-repo", type=Path, help="a LLaMA-Factory git clone (for templates removed from the package)")
    ap.add_argument("--lf-baichuan-commit", default="5fb5d7ebd3a8b7b5b4873f18e2b7318cffbec58c")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--new-tokenizer", action="store_true", help="rebuild tokenizer/ (changes every id)")
    args = ap.parse_args(argv)
    cases = json.loads((HERE / "conversations.json").read_text(encoding="utf-8"))
    tok_dir = args.out / "tokenizer"
    if args.new_tokenizer or not (tok_dir / "tokenizer.json").exists():
        build_tokenizer(tok_dir, cases)
    tok_note = {"tokenizer": "tokenizer/ (byte-level BPE trained on conversations.json, BOS <s> added, EOS </s>, "
                             f"extra special tokens {EXTRA_SPECIALS})"}
    jobs = []
    if args.alpaca_lora:
        jobs.append(("alpaca-lora.json", lambda: alpaca_lora(args.alpaca_lora, args.alpaca_lora_commit, tok_dir,
                                                             cases)))
    if args.let:
        jobs.append(("let.json", lambda: let(args.let, args.let_commit, tok_dir, cases)))
    if args.lf:
        jobs.append(("llamafactory.json", lambda: llamafactory(args.lf_repo, args.lf_baichuan_commit, tok_dir,
                                                               cases)))
    if not jobs:
        ap.error("nothing to do: give --alpaca-lora, --let and/or --lf")
    for fname, job in jobs:
        fixture = job()
        fixture["header"].update(tok_note, cases="conversations.json")
        n = sum(len(v) for v in fixture["renderings"].values())
        (args.out / fname).write_text(dump(fixture), encoding="utf-8")
        print(f"{fname}: {len(fixture['renderings'])} templates, {n} renderings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
