"""`labkit generate`: alpaca-lora's generate.py flags (--base_model --lora_weights --load_8bit ...), no web UI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from labkit.errors import LabkitError
from labkit.log import notice

DEFAULT_TEMPLATE = "alpaca-lora/alpaca"  # alpaca-lora's generate.py default prompt
DIALECT = "alpaca-lora"  # an unqualified --prompt_template NAME means alpaca-lora's templates/NAME.json


def _bool(value: str) -> bool:
    """fire-style booleans as written in alpaca-lora command lines (--load_8bit False)."""
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="labkit generate",
        description="Generate with a base model and an optional LoRA adapter, using the training template. "
                    "Prompts from --prompt (repeatable), --prompt_file (one per line) or stdin.")
    ap.add_argument("--base_model", required=True, help="base model folder (LLaMA or Baichuan); 'tiny-llama' "
                    "or 'tiny-baichuan' for labkit's tiny models")
    ap.add_argument("--lora_weights", default="", help="LoRA adapter folder (adapter_config.json + safetensors)")
    ap.add_argument("--allow_empty_adapter", action="store_true",
                    help="use the adapter even when every lora_B is zero (it then changes nothing)")
    ap.add_argument("--allow_pickle", action="store_true", help="read pickle weights (pytorch_model*.bin, e.g. the official Baichuan-7B release) with torch.load(weights_only=True)")
    ap.add_argument("--load_8bit", nargs="?", const=True, default=False, type=_bool, help="load the base in int8")
    ap.add_argument("--load_4bit", nargs="?", const=True, default=False, type=_bool, help="load the base in nf4")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "int8", "nf4"],
                    help="base precision (--load_8bit = int8, --load_4bit = nf4)")
    ap.add_argument("--template", "--prompt_template", dest="template", default="",
                    help="prompt template: source/name (alpaca-lora/alpaca, let/baichuan, labkit/roles, ...) or an "
                         "alpaca-lora name (alpaca, vigogne); default: the adapter's training template, else "
                         "alpaca-lora/alpaca; 'none' = raw text")
    ap.add_argument("--prompt", "--instruction", dest="prompt", action="append", default=[],
                    help="a prompt (repeatable); 'instruction\\ninput' is split like alpaca records")
    ap.add_argument("--input", default="", help="alpaca input appended to every prompt (after a line break)")
    ap.add_argument("--prompt_file", default="", help="a text file, one prompt per line")
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--do_sample", nargs="?", const=True, default=None, type=_bool,
                    help="sample instead of greedy (default: on when --temperature > 0 is given)")
    ap.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    ap.add_argument("--top_p", type=float, default=0.75)
    ap.add_argument("--top_k", type=int, default=40)
    ap.add_argument("--num_beams", type=int, default=1)
    ap.add_argument("--repetition_penalty", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--compare", action="store_true", help="also print the base's answer (adapter switched off)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    # alpaca-lora's web-UI flags: accepted so old command lines still run
    ap.add_argument("--server_name", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--share_gradio", nargs="?", const=True, default=None, type=_bool, help=argparse.SUPPRESS)
    return ap


def _prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        p = Path(args.prompt_file)
        if not p.is_file():
            raise LabkitError(f"--prompt_file {p}: no such file")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise LabkitError(f"--prompt_file {p}: not a readable UTF-8 text file ({err}); one prompt per line") from None
        prompts += [line.replace("\\n", "\n") for line in text.splitlines() if line.strip()]
    if not prompts and not sys.stdin.isatty():
        prompts = [line.replace("\\n", "\n") for line in sys.stdin.read().splitlines() if line.strip()]
    if not prompts:
        raise LabkitError("no prompt: give --prompt TEXT (repeatable), --prompt_file FILE or pipe prompts on stdin")
    if args.input:
        prompts = [f"{p}\n{args.input}" for p in prompts]
    return prompts


def main(argv: list[str]) -> int:
    from labkit.evaluate.generate import generate, generate_pair, resolve_template, sampling_config
    from labkit.evaluate.heldout import adapter_info, load_with_adapter
    from labkit.models.load import resolve_base

    args = parser().parse_args(argv)
    if args.server_name or args.share_gradio:
        notice("labkit has no web UI; --server_name/--share_gradio are ignored (use notebook 04's playground)")
    if args.load_8bit and args.load_4bit:
        raise LabkitError("choose one of --load_8bit and --load_4bit")
    precision = "int8" if args.load_8bit else "nf4" if args.load_4bit else args.precision
    prompts = _prompts(args)
    base = resolve_base(args.base_model)
    lora = args.lora_weights
    if lora and not (Path(lora) / "adapter_config.json").is_file():
        raise LabkitError(f"--lora_weights {lora}: no adapter_config.json there (not a LoRA adapter folder)")
    recorded = "" if args.template or not lora else str(adapter_info(lora).get("template") or "")
    template = args.template or recorded or DEFAULT_TEMPLATE
    try:
        template_obj = None if template.lower() == "none" else resolve_template(template, DIALECT)  # before loading
    except LabkitError as err:
        if not recorded:
            raise
        raise LabkitError(f"{Path(lora) / 'labkit_train.json'}: the adapter's recorded template {recorded!r} does not "
                          f"resolve ({err}); pass --template NAME") from None
    do_sample = args.do_sample if args.do_sample is not None else bool(args.temperature)
    sampling = sampling_config(max_new_tokens=args.max_new_tokens, do_sample=do_sample,
                               temperature=args.temperature if args.temperature else 1.0, top_p=args.top_p,
                               top_k=args.top_k, num_beams=args.num_beams,
                               repetition_penalty=args.repetition_penalty, seed=args.seed)
    model, tokenizer = load_with_adapter(base, lora or None, precision, allow_empty=args.allow_empty_adapter,
                                         allow_pickle=args.allow_pickle)
    if args.compare and lora:
        out = generate_pair(model, tokenizer, prompts, template_obj, sampling=sampling, batch_size=args.batch_size)
    else:
        out = {"adapter" if lora else "base": generate(model, tokenizer, prompts, template_obj, sampling=sampling,
                                                       batch_size=args.batch_size)}
    for i, prompt in enumerate(prompts):
        if args.json:
            print(json.dumps({"prompt": prompt, **{k: v[i] for k, v in out.items()}}, ensure_ascii=False))
            continue
        print(f"### prompt\n{prompt}")
        for k, v in out.items():
            label = "response" if len(out) == 1 else k
            print(f"### {label}\n{v[i]}")
        print()
    return 0
