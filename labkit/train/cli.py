"""`labkit train ...`: a pasted alpaca-lora / LLaMA-Efficient-Tuning command line or a LLaMA-Factory config."""

from __future__ import annotations

USAGE = """usage: labkit train [--flag value ...]
       labkit train config.yaml [key=value | --key value ...]

Takes the flags of alpaca-lora's finetune.py and of LLaMA-Efficient-Tuning's train_sft.py as written in
real command lines (only paths change), LLaMA-Factory's SFT + LoRA YAML (or its --stage/--template flags),
plus labkit's own TrainConfig names. The command's dialect decides the defaults, what an unqualified
template name means (alpaca -> alpaca-lora/alpaca, default -> let/default, llama3 -> llamafactory/llama3),
the truncation and the step plan, all as the tool would; --dialect labkit|alpaca-lora|let|llamafactory
overrides it. Examples:

  labkit train --base_model ./linly-Ch-7b --data_path ./alpaca_1058_100negative.json \\
      --output_dir ./fintune-Linly-7b-revise1058 --num_epochs 2 --cutoff_len 1024 --val_set_size 0 \\
      --lora-target-modules '[q_proj,v_proj,k_proj,o_proj]'
  labkit train --model_name_or_path ./baichuan-7B --do_train --dataset alpaca4zh --finetuning_type lora \\
      --lora_rank 8 --lora_target W_pack --output_dir alpaca_baichuan --per_device_train_batch_size 4 \\
      --gradient_accumulation_steps 8 --lr_scheduler_type cosine --learning_rate 5e-5 --num_train_epochs 3.0 \\
      --dev_ratio 0.01 --evaluation_strategy steps --load_best_model_at_end --plot_loss --fp16

  labkit train llama3_lora_sft.yaml max_steps=20

  --resume_from_checkpoint PATH|auto|true   continue (auto/true: newest complete checkpoint in output_dir)
  --max_steps N                             stop after N optimizer steps
  --lenient                                 drop records that fail validation (counted) instead of stopping
  --report_to tensorboard|wandb             event files in output_dir/runs; wandb offline (when installed)
  Multi-GPU: torchrun --nproc_per_node N -m labkit train ...   (or accelerate launch -m labkit train ...)

The plan (template, samples per optimizer step, steps, warmup, truncation) is printed before the model
loads. The output folder ends with adapter_model.safetensors (verified), trainer_state.json,
training_loss.png, train_metrics.json and labkit_train.json (config + plan). The last line printed is the
output folder.
"""


def main(argv: list[str]) -> int:
    from labkit.log import notice
    from labkit.train.flags import known_flags, parse_train_args
    from labkit.train.lfconfig import supported_keys

    if not argv or argv[0] in ("-h", "--help", "help"):
        from labkit.data.templates import template_names

        print(USAGE + "\nflags: " + " ".join("--" + f for f in known_flags())
              + "\n\nLLaMA-Factory keys: " + " ".join(supported_keys())
              + "\n\ntemplates: " + " ".join(template_names()))
        return 0 if argv else 2
    cfg, notices = parse_train_args(argv)
    if _rank0():
        for line in notices:
            notice(line)
    from labkit.train.sft import run_training

    res = run_training(cfg)
    m = res.metrics
    if res.output_dir is not None and _rank0():
        print(f"steps {m.get('global_step')}  final train loss {m.get('final_train_loss', float('nan')):.4f}  "
              f"eval loss {m.get('eval_loss', float('nan')):.4f}  trained tokens/s {m.get('train_tokens_per_s')}  "
              f"time {m.get('train_seconds')} s")
        print(res.output_dir)
    return 0


def _rank0() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
