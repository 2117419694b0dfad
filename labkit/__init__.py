"""labkit: a fine-tuning lab bench for Chinese chat models (Linly-LLaMA, Baichuan) with LoRA."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"

# Known-harmless notices that would otherwise sit as red boxes in every report (both measured on CPU):
# bitsandbytes' optional hub 'kernels' package on CPU (labkit never fetches it), and transformers 5 renaming a
# flag peft still reads.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda r: "gemm_4bit_forward" not in r.getMessage())
_warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)
