"""Every `labkit` entry point against broken or careless inputs built here: exit != 0, no traceback, the file named.

Table-driven: model folders (truncated / corrupt safetensors, shards, bad config.json, damaged tokenizer), adapters
(empty, damaged, no or bad adapter_config.json), checkpoints (bad marker, a file changed after saving), datasets
(bad JSON, wrong types), registries (bad dataset_info.json), profiles (bad YAML, unknown key), requirements,
and folders that cannot be written. Each case also checks that nothing was written or changed in the workspace
and that no output folder appeared.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from labkit.cli import main as cli_main
from labkit.models import load_model
from labkit.models.lora import attach_lora
from labkit.models.tiny import tiny_model_path

ROOT = Path(__file__).resolve().parents[1]


def unwritable_folder(tmp: Path) -> Path:
    """A folder nothing can be created in: chmod 0o555, or, where that does not stop writes (root), a path
    under a regular file (creating anything below it fails with ENOTDIR for every user)."""
    folder = tmp / "read-only"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    folder.chmod(0o755)
    blocker = tmp / "a-file"
    blocker.write_text("not a folder")
    return blocker / "sub"


def _truncate(path: Path, size: int = 2 * 1024 * 1024) -> None:
    os.truncate(path, min(size, path.stat().st_size // 2))


def _overwrite_head(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(b"\xc3" * 16)


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The workspace of broken inputs (built once; every case checks it is left exactly as it was)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    llama, baichuan = tiny_model_path("llama"), tiny_model_path("baichuan")
    p: dict[str, Path] = {"root": root, "llama": llama}

    def model(name, src=llama, damage=None, **config):
        folder = root / "models" / name
        shutil.copytree(src, folder)
        if damage:
            damage(folder)
        if config:
            _edit_json(folder / "config.json", **config)
        p[name] = folder

    model("truncated", damage=lambda f: _truncate(f / "model.safetensors"))
    model("corrupt", damage=lambda f: _overwrite_head(f / "model.safetensors"))
    model("no_shape", hidden_size=None, num_attention_heads=None, intermediate_size=None)
    model("baichuan_no_shape", src=baichuan, hidden_size=None, num_attention_heads=None, intermediate_size=None)
    model("config_text", damage=lambda f: (f / "config.json").write_text('{"model_type": "llama", "hidden_'))
    model("config_types", hidden_size="4096", num_hidden_layers=2.5)
    model("gpt2", model_type="gpt2")
    model("tokenizer", damage=lambda f: (f / "tokenizer.json").write_text('{"version": "1.0"}'))
    sharded = root / "models" / "sharded"
    shutil.copytree(llama, sharded, ignore=shutil.ignore_patterns("*.safetensors"))
    load_model(llama).save_pretrained(sharded, max_shard_size="1MB")
    shards = sorted(sharded.glob("model-*.safetensors"))
    p["shard"] = shards[1].name
    for name, damage in (("shard_missing", lambda f: (f / p["shard"]).unlink()),
                         ("shard_corrupt", lambda f: _overwrite_head(f / p["shard"]))):
        model(name, src=sharded, damage=damage)

    adapters = root / "adapters"
    peft = attach_lora(load_model(llama), None, r=4, alpha=8)
    peft.save_pretrained(adapters / "empty")  # every lora_B zero: never trained
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, prm in peft.named_parameters():
            if "lora_B" in n:
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.05)
    peft.save_pretrained(adapters / "good")
    p["good"], p["empty"] = adapters / "good", adapters / "empty"

    def adapter(name, damage):
        folder = adapters / name
        shutil.copytree(p["good"], folder)
        damage(folder)
        p[name] = folder

    adapter("a_truncated", lambda f: _truncate(f / "adapter_model.safetensors", 4096))
    adapter("a_corrupt", lambda f: _overwrite_head(f / "adapter_model.safetensors"))
    adapter("a_no_config", lambda f: (f / "adapter_config.json").unlink())
    adapter("a_config_text", lambda f: (f / "adapter_config.json").write_text("{'r': 4}"))
    adapter("a_no_r", lambda f: _edit_json(f / "adapter_config.json", r=None))

    runs = root / "runs"  # checkpoints as `labkit train` leaves them (marker written last)
    from labkit.train import checkpoints as ck

    for name in ("marker", "damaged"):
        ckpt = runs / name / "checkpoint-4"
        shutil.copytree(p["good"], ckpt)
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 4, "best_model_checkpoint": None}))
        ck.write_marker(ckpt)
        p[f"ckpt_{name}"] = ckpt
    (p["ckpt_marker"] / ck.MARKER).write_text('{"files": {"adapter_model.safetensors": ')
    st = p["ckpt_damaged"] / "adapter_model.safetensors"
    data = bytearray(st.read_bytes())
    data[-64:] = bytes(64)  # same size, different content: only the sha256 sees it
    st.write_bytes(bytes(data))

    data_dir = root / "data"
    data_dir.mkdir()
    (data_dir / "cut.json").write_text('[{"instruction": "a", "output": "b"},\n{"instruction": "c", "outp')
    (data_dir / "types.json").write_text(json.dumps([{"instruction": 5, "output": ["x"]}]))
    (data_dir / "lines.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c" "output": 1}\n')
    (data_dir / "binary.json").write_bytes(bytes(range(256)) * 4)
    for name, text in (("reg_text", '{"mine": {"file_name": "x.json"},'),
                       ("reg_missing", json.dumps({"mine": {"file_name": "nope.json"}})),
                       ("reg_entry", json.dumps({"mine": ["not", "an", "object"]}))):
        (root / name).mkdir()
        (root / name / "dataset_info.json").write_text(text)
        p[name] = root / name / "dataset_info.json"

    profiles = root / "profiles"
    profiles.mkdir()
    (profiles / "yaml.yaml").write_text("max_steps: [1,\n")
    (profiles / "unknown.yaml").write_text("max_stepz: 3\n")
    (profiles / "type.yaml").write_text("max_steps: ten\n")
    (profiles / "list.yaml").write_text("- max_steps: 3\n")
    (root / "envroot").mkdir()
    (root / "envroot" / "requirements.txt").write_text("torch>=2\n")
    p["unwritable"] = unwritable_folder(root / "locked")
    return p


@dataclass
class Case:
    id: str
    argv: list[str]  # "{name}" is replaced by the workspace path of that name
    names: str  # the file or folder the message must name ("{name}/file" allowed)
    words: tuple[str, ...] = ()  # also in the message
    env: dict[str, str] = field(default_factory=dict)
    error_line: bool = True  # an `error: ...` line on stderr (data check prints a report on stdout instead)


GEN = ["generate", "--prompt", "hi", "--max_new_tokens", "2", "--template", "none"]
EXPORT = ["export", "--output_dir", "{root}/merged"]
TRAIN = ["train", "--dataset", "tasks", "--max_samples", "8", "--max_steps", "1", "--output_dir", "{root}/trained"]
TRAIN_FILE = ["train", "--base_model", "tiny-llama", "--max_steps", "1", "--output_dir", "{root}/trained"]

MODEL_CASES = [  # (id, folder, named, words)
    ("truncated safetensors", "truncated", "{truncated}/model.safetensors", ("truncated",)),
    ("overwritten safetensors header", "corrupt", "{corrupt}/model.safetensors", ("corrupt",)),
    ("llama config without shape", "no_shape", "{no_shape}/config.json",
     ("hidden_size", "num_attention_heads", "intermediate_size")),
    ("baichuan config without shape", "baichuan_no_shape", "{baichuan_no_shape}/config.json",
     ("hidden_size", "num_attention_heads", "intermediate_size")),
    ("config not JSON", "config_text", "{config_text}/config.json", ("not valid JSON",)),
    ("config wrong types", "config_types", "{config_types}/config.json", ("hidden_size='4096'",)),
    ("unknown model_type", "gpt2", "{gpt2}/config.json", ("gpt2",)),
    ("missing shard", "shard_missing", "{shard_missing}", ("{shard}", "missing")),
    ("corrupt shard", "shard_corrupt", "{shard_corrupt}/{shard}", ("corrupt",)),
]
ADAPTER_CASES = [
    ("empty adapter", "empty", "{empty}/adapter_model.safetensors", ("every lora_B is zero", "--allow_empty_adapter")),
    ("truncated adapter", "a_truncated", "{a_truncated}/adapter_model.safetensors", ("truncated",)),
    ("overwritten adapter header", "a_corrupt", "{a_corrupt}/adapter_model.safetensors", ("corrupt",)),
    ("adapter without config", "a_no_config", "{a_no_config}", ("adapter_config.json",)),
    ("adapter config not JSON", "a_config_text", "{a_config_text}/adapter_config.json", ("not valid JSON",)),
    ("adapter config without r", "a_no_r", "{a_no_r}/adapter_config.json", ('"r"',)),
]

CASES = (
    [Case(f"generate: {i}", [*GEN, "--base_model", f"{{{f}}}"], n, w) for i, f, n, w in MODEL_CASES]
    + [Case(f"export: {i}", [*EXPORT, "--base_model", f"{{{f}}}", "--lora_weights", "{good}"], n, w)
       for i, f, n, w in MODEL_CASES]
    + [Case(f"train: {i}", [*TRAIN, "--base_model", f"{{{f}}}", "--lora_target", "o_proj"], n, w)
       for i, f, n, w in MODEL_CASES[:7]]
    + [Case("generate: damaged tokenizer.json", [*GEN, "--base_model", "{tokenizer}"], "{tokenizer}",
            ("tokenizer.json",))]
    + [Case(f"generate: {i}", [*GEN, "--base_model", "{llama}", "--lora_weights", f"{{{f}}}"], n, w)
       for i, f, n, w in ADAPTER_CASES]
    + [Case(f"export: {i}", [*EXPORT, "--base_model", "{llama}", "--lora_weights", f"{{{f}}}"], n, w)
       for i, f, n, w in ADAPTER_CASES]
    + [
        Case("train: unreadable checkpoint marker", [*TRAIN, "--base_model", "tiny-llama",
             "--resume_from_checkpoint", "{ckpt_marker}"], "{ckpt_marker}/labkit_complete.json", ("unreadable",)),
        Case("train: checkpoint file changed after saving", [*TRAIN, "--base_model", "tiny-llama",
             "--resume_from_checkpoint", "{ckpt_damaged}"], "{ckpt_damaged}/adapter_model.safetensors", ("sha256",)),
        Case("train: cut-off JSON data", [*TRAIN_FILE, "--data_path", "{root}/data/cut.json"], "{root}/data/cut.json",
             ("line 2",)),
        Case("train: wrong types in data", [*TRAIN_FILE, "--data_path", "{root}/data/types.json"],
             "{root}/data/types.json", ("instruction",)),
        Case("train: registry not JSON", [*TRAIN_FILE, "--dataset_dir", "{root}/reg_text", "--dataset", "mine"],
             "{reg_text}", ("JSON",)),
        Case("train: registry names a missing file", [*TRAIN_FILE, "--dataset_dir", "{root}/reg_missing",
             "--dataset", "mine"], "{root}/reg_missing/nope.json", ("not found",)),
        Case("train: unknown base name", [*TRAIN, "--base_model", "tiny-gpt2"], "tiny-gpt2", ("tiny-llama",)),
        Case("train: output folder cannot be written", [*TRAIN, "--base_model", "tiny-llama", "--output_dir",
             "{unwritable}/out"], "{unwritable}/out", ("--output_dir",)),
        Case("export: output folder cannot be written", ["export", "--base_model", "{llama}", "--lora_weights",
             "{good}", "--output_dir", "{unwritable}/merged"], "{unwritable}/merged", ("--output_dir",)),
        Case("generate: binary prompt file", [*GEN, "--base_model", "{llama}", "--prompt_file",
             "{root}/data/binary.json"], "{root}/data/binary.json", ("UTF-8",)),
        Case("generate: hub id as base", [*GEN, "--base_model", "huggyllama/llama-7b"], "huggyllama/llama-7b",
             ("never downloads",)),
        Case("data check: cut-off JSON", ["data", "check", "{root}/data/cut.json"], "{root}/data/cut.json",
             ("line 2",), error_line=False),
        Case("data check: wrong types", ["data", "check", "{root}/data/types.json"], "{root}/data/types.json",
             ("instruction",), error_line=False),
        Case("data check: bad JSONL line", ["data", "check", "{root}/data/lines.jsonl"], "{root}/data/lines.jsonl",
             ("line 2",), error_line=False),
        Case("data check: not text", ["data", "check", "{root}/data/binary.json"], "{root}/data/binary.json",
             error_line=False),
        Case("data check: registry not JSON", ["data", "check", "--registry", "{reg_text}", "--dataset", "mine"],
             "{reg_text}", ("JSON",), error_line=False),
        Case("data check: registry names a missing file", ["data", "check", "--registry", "{reg_missing}",
             "--dataset", "mine"], "{root}/reg_missing/nope.json", ("not found",), error_line=False),
        Case("data check: registry entry not an object", ["data", "check", "--registry", "{reg_entry}",
             "--dataset", "mine"], "{reg_entry}", ("mine",), error_line=False),
        Case("run: profile not YAML", ["run", "--profile", "{root}/profiles/yaml.yaml"], "{root}/profiles/yaml.yaml",
             ("YAML",)),
        Case("run: unknown profile key", ["run", "--profile", "{root}/profiles/unknown.yaml"],
             "{root}/profiles/unknown.yaml", ("max_stepz", "max_steps")),
        Case("run: wrong type in profile", ["run", "--profile", "{root}/profiles/type.yaml"],
             "{root}/profiles/type.yaml", ("max_steps",)),
        Case("run: profile not a mapping", ["run", "--profile", "{root}/profiles/list.yaml"],
             "{root}/profiles/list.yaml"),
        Case("env: requirement that is not a pin", ["env", "--no-probe"], "{root}/envroot/requirements.txt",
             ("torch>=2",), env={"LABKIT_ROOT": "{root}/envroot"}),
        Case("tiny: cache folder cannot be written", ["tiny", "llama"], "{unwritable}/cache", ("LABKIT_CACHE",),
             env={"LABKIT_CACHE": "{unwritable}/cache"}),
    ]
)


def _fill(text: str, ws: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ws[m.group(1)]), text)


def _snapshot(root: Path) -> dict:
    """path -> (size, mtime_ns) of every file and folder: a write, a new file or a removal changes it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[p] = (st.st_size if not p.is_dir() else 0, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ws, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("LABKIT_REPORTS", str(ws["root"] / "reports"))
    for key, value in case.env.items():
        monkeypatch.setenv(key, _fill(value, ws))
    argv = [_fill(a, ws) for a in case.argv]
    before = _snapshot(ws["root"])
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    text = out + err
    assert code not in (0, None), f"exit 0 for a broken input:\n{text[-2000:]}"
    assert "Traceback" not in text, text[-3000:]
    named = _fill(case.names, ws)
    assert named in text, f"{named} not named:\n{text[-2000:]}"
    for word in case.words:
        assert _fill(word, ws) in text, f"{word!r} missing:\n{text[-2000:]}"
    if case.error_line:
        errors = [i for i, line in enumerate(err.splitlines()) if line.startswith("error: ")]
        assert len(errors) == 1, err[-2000:]  # one error (its detail lines may follow it)
        assert named in "\n".join(err.splitlines()[errors[0]:]), err[-2000:]
    assert _snapshot(ws["root"]) == before, "the workspace changed"
    for made in ("merged", "trained", "reports"):
        assert not (ws["root"] / made).exists(), f"{made} was created"
    assert not list(ws["root"].glob(".tmp-export-*"))


# ---------------------------------------------------------------- the same checks where notebooks load


def test_empty_adapter_is_refused_where_notebooks_04_and_05_load(ws, monkeypatch, tmp_path):
    """Notebook 04 (labkit.evaluate.heldout) and 05 (labkit.attention.load) load through integrity.load_adapter."""
    from labkit.attention.load import load_for_attention
    from labkit.errors import LabkitError
    from labkit.evaluate import heldout

    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path))
    examples = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}],
                 "source": "t", "index": 0, "task": ""}]
    for call in (lambda: heldout.evaluate_arch("llama", "tiny-llama", str(ws["empty"]), template="labkit/roles",
                                               examples=examples, max_new_tokens=2, verbose=False),
                 lambda: load_for_attention("llama", "", str(ws["empty"]))):
        with pytest.raises(LabkitError) as exc:
            call()
        assert str(ws["empty"] / "adapter_model.safetensors") in str(exc.value)
        assert "every lora_B is zero" in str(exc.value)
    ev = heldout.evaluate_arch("llama", "tiny-llama", str(ws["empty"]), template="labkit/roles", examples=examples,
                               max_new_tokens=2, verbose=False, allow_empty=True)
    assert ev is not None and ev.base == str(tiny_model_path("llama"))


def test_heldout_base_follows_the_one_rule(ws, tmp_path):
    from labkit.errors import LabkitError
    from labkit.evaluate.heldout import base_for

    assert base_for("llama", "", {"base_model": str(ws["llama"])}) == str(ws["llama"])
    assert base_for("baichuan", "", {}) == str(tiny_model_path("baichuan"))
    assert base_for("llama", "tiny-baichuan", {"base_model": str(ws["llama"])}) == str(tiny_model_path("baichuan"))
    with pytest.raises(LabkitError, match=r"labkit_train\.json.*moved.*llama_model"):
        base_for("llama", "", {"base_model": str(tmp_path / "gone")})
    with pytest.raises(LabkitError, match="no such folder"):
        base_for("llama", str(tmp_path / "gone"))


def test_writable_folder_names_what_blocks_it(tmp_path):
    from labkit.errors import LabkitError
    from labkit.paths import writable_folder

    assert writable_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # a check, not a mkdir
    blocked = unwritable_folder(tmp_path)
    with pytest.raises(LabkitError) as exc:
        writable_folder(blocked / "out", "--output_dir")
    assert str(blocked / "out") in str(exc.value) and "--output_dir" in str(exc.value)
    with pytest.raises(LabkitError, match="disk .* is full"):
        writable_folder(tmp_path / "x", need_bytes=1 << 62)
    (tmp_path / "f").write_text("x")
    with pytest.raises(LabkitError, match="is a file"):
        writable_folder(tmp_path / "f")


def test_datasets_cache_on_an_unwritable_disk_is_not_needed(tmp_path):
    """labkit's datasets are in memory: a `datasets`/Arrow cache that cannot be written does not matter
    (a subprocess: the cache location is read when `datasets` is imported)."""
    blocked = unwritable_folder(tmp_path)
    code = ("from labkit.data.registry import load_datasets\n"
            "from labkit.data.templates import get_template\n"
            "from labkit.data.tokenize import tokenize_examples\n"
            "from labkit.models import load_tokenizer\n"
            "from labkit.models.tiny import tiny_model_path\n"
            "ex, _ = load_datasets('tasks')\n"
            "ds, rep = tokenize_examples(ex[:16], load_tokenizer(tiny_model_path('llama')),"
            " get_template('alpaca-lora/alpaca'), 256)\n"
            "print('rows', len(ds))\n")
    env = {**os.environ, "HF_DATASETS_CACHE": str(blocked / "datasets"), "HF_HOME": str(blocked / "hf"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rows 16" in proc.stdout
    assert not (blocked / "datasets").exists() and not (blocked / "hf").exists()
