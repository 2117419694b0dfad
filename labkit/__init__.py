"""labkit: a fine-tuning lab bench for Chinese chat models (Linly-LLaMA, Baichuan) with LoRA."""

__version__ = "0.1.0"
