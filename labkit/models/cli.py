"""`labkit tiny llama [baichuan]` (build/print the tiny model folder) and `labkit export` (merge an adapter)."""

from __future__ import annotations

import argparse
import json
import sys

from labkit.errors import LabkitError


def tiny_main(argv: list[str]) -> int:
    """Build the tiny model(s) if needed, one after the other; each folder is printed, the last one last."""
    from labkit.models.tiny import ARCHS, MARKER, tiny_model_path, tiny_tokenizer_path

    ap = argparse.ArgumentParser(prog="labkit tiny", description="build (if needed) tiny default models and print "
                                 "their folders (several names: built in this order, in one process)")
    ap.add_argument("arch", nargs="+", choices=[*ARCHS, "tokenizer"], help="llama | baichuan | tokenizer")
    ap.add_argument("--info", action="store_true", help="also print the build record (recipe, losses) as JSON")
    args = ap.parse_args(argv)
    for arch in args.arch:
        try:
            path = tiny_tokenizer_path() if arch == "tokenizer" else tiny_model_path(arch)
        except OSError as err:  # the cache folder is read-only, full, or a file stands in the way
            from labkit.paths import cache_dir

            raise LabkitError(f"{err.filename or cache_dir()}: cannot build the tiny {arch} in the cache folder "
                              f"{cache_dir()} ({err.strerror or err}); set LABKIT_CACHE to a writable folder") from None
        if args.info:
            from labkit.models.integrity import read_json

            print(json.dumps(read_json(path / MARKER, "build record"), indent=1, ensure_ascii=False))
        print(path)
    return 0


def export_main(argv: list[str]) -> int:
    """Merge --lora_weights into --base_model and save safetensors in --output_dir (checked)."""
    from labkit.models.export import merge_and_export

    ap = argparse.ArgumentParser(prog="labkit export", description="merge a LoRA adapter into its base model")
    ap.add_argument("--base_model", required=True, help="base model folder (LLaMA or Baichuan), or tiny-llama / "
                    "tiny-baichuan")
    ap.add_argument("--lora_weights", required=True, help="LoRA adapter folder (adapter_config.json + safetensors)")
    ap.add_argument("--output_dir", required=True, help="new folder for the merged model")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="dtype of the merged weights")
    ap.add_argument("--allow_empty_adapter", action="store_true",
                    help="export even when every lora_B is zero (the merge then equals the base)")
    ap.add_argument("--allow_pickle", action="store_true", help="read pickle weights (pytorch_model*.bin, e.g. the official Baichuan-7B release) with torch.load(weights_only=True)")
    args = ap.parse_args(argv)
    summary = merge_and_export(args.base_model, args.lora_weights, args.output_dir, precision=args.precision,
                               allow_empty=args.allow_empty_adapter, allow_pickle=args.allow_pickle)
    for key, value in summary.items():
        if key != "output_dir":
            print(f"{key}: {value}", file=sys.stderr)
    print(summary["output_dir"])
    return 0
