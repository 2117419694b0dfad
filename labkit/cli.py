"""The `labkit` command: a thin dispatcher to the subcommand modules (same functions the notebooks call)."""

from __future__ import annotations

import importlib
import os
import sys

from labkit.errors import LabkitError

# subcommand -> (module, function, one-line help). Each function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("labkit.report.cli", "main", "run the notebooks with papermill into reports/<run-id>/"),
    "share": ("labkit.report.cli", "share_main", "zip a run folder (HTML, manifest, notebooks, adapters) to share"),
    "env": ("labkit.env.cli", "main", "environment fingerprint, pin check and known-issue rules"),
    "data": ("labkit.data.cli", "main", "check datasets and show training text: `labkit data check|render ...`"),
    "tiny": ("labkit.models.cli", "tiny_main", "build (if needed) a tiny model: `labkit tiny llama|baichuan`"),
    "export": ("labkit.models.cli", "export_main", "merge a LoRA adapter into its base and save safetensors"),
    "train": ("labkit.train.cli", "main", "LoRA SFT; accepts alpaca-lora and LLaMA-Efficient-Tuning flags"),
    "generate": ("labkit.evaluate.cli", "main", "generate with a base model and optional LoRA adapter"),
}


def _usage() -> str:
    lines = ["usage: labkit COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`labkit COMMAND --help` for the flags of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from labkit import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from labkit.config import unknown_key_message

        print("error: " + unknown_key_message(name, COMMANDS, what="command"), file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    try:
        fn = getattr(importlib.import_module(module), func)
        return int(fn(rest) or 0)
    except LabkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `labkit env | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
