"""The LoRA recipe notebooks 02 and 03 share: base and data, held-out answers before and after, train, verify, record.

Each step is one method that returns the table the notebook shows, so a notebook reads top to bottom:

    lab = Recipe(cfg, heldout_datasets="tasks_test,negatives_test", n_heldout=12)
    lab.load()             # base model + tokenized, packed training data   -> data summary
    lab.answers_before()   # the base on held-out prompts                   -> prompt | reference | base | verdict
    lab.add_lora()         # LoRA on cfg.lora_target                         -> trainable parameters per module
    lab.train()            # HF Trainer (labkit.train.sft.run_training)      -> final metrics
    lab.answers_after()    # the same prompts, base and adapter side by side -> ... | verdicts
    lab.verify()           # the saved adapter holds A and B for every target
    lab.record()           # metrics into the run manifest

The held-out sample and the verdicts come from `labkit.evaluate` (one exact-match definition for the whole
workbook: `labkit.evaluate.metrics.exact_match`), so the answers shown here and notebook 04's numbers agree.
This module sits on top of `train` and `evaluate` (it is the notebooks' recipe, not a training primitive);
nothing in labkit imports it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from labkit.train.config import TrainConfig

ANSWER_TOKENS = 32  # max_new_tokens for the before/after answers (the bundled answers are short)


@dataclasses.dataclass
class Recipe:
    """One LoRA fine-tuning run of a notebook, step by step (see the module docstring)."""

    cfg: TrainConfig
    heldout_datasets: str = "tasks_test,negatives_test"  # held-out registry names, disjoint from training
    n_heldout: int = 12  # held-out prompts shown before and after (spread evenly over the datasets)
    model: Any = None
    tokenizer: Any = None
    data: tuple = ()  # (train_dataset, eval_dataset, collator)
    data_summary: dict = dataclasses.field(default_factory=dict)
    heldout: list = dataclasses.field(default_factory=list)
    before: list = dataclasses.field(default_factory=list)
    after: list = dataclasses.field(default_factory=list)
    result: Any = None  # labkit.train.sft.TrainResult

    @property
    def output_dir(self) -> Path:
        from labkit.train.sft import output_dir_of

        return output_dir_of(self.cfg)

    def describe(self) -> str:
        """Where the base comes from and where the adapter goes."""
        from labkit.models import resolve_base

        return f"base model: {resolve_base(self.cfg.base_model, self.cfg.arch)}\nadapter folder: {self.output_dir}"

    def load(self):
        """Load the base and the training data (template, tokenize, pack); the data summary as a table."""
        import pandas as pd

        from labkit.train.sft import load_base, prepare_data

        self.model, self.tokenizer = load_base(self.cfg)
        train_ds, eval_ds, collator, self.data_summary = prepare_data(self.cfg, self.tokenizer)
        self.data = (train_ds, eval_ds, collator)
        return pd.json_normalize(self.data_summary, sep=" / ").T.rename(columns={0: "value"})

    def _sample(self) -> list[dict]:
        from labkit.evaluate.heldout import load_heldout

        names = [n for n in self.heldout_datasets.split(",") if n.strip()]
        per_dataset = max(1, self.n_heldout // max(1, len(names)))
        return load_heldout(self.heldout_datasets, per_dataset, self.cfg.seed, self.cfg.dataset_dir or None)

    def _answers(self) -> list[str]:
        from labkit.evaluate.generate import generate

        return generate(self.model, self.tokenizer, self.heldout, self.cfg.template, max_new_tokens=ANSWER_TOKENS,
                        batch_size=16)

    def answers_before(self):
        """The base's answers to a seeded held-out sample, next to the reference, with a verdict."""
        self._need("model", "load")
        self.heldout = self._sample()
        self.before = self._answers()
        return self._table(base=self.before)

    def add_lora(self):
        """Wrap the base in LoRA on cfg.lora_target; trainable vs. total parameters per module type."""
        from labkit.models.lora import trainable_table
        from labkit.train.sft import add_lora

        self._need("model", "load")
        self.model = add_lora(self.model, self.cfg)
        return trainable_table(self.model)

    def train(self):
        """Train with the HF Trainer (checkpoints with completion markers); the final scalars as a table."""
        import pandas as pd

        from labkit.train.sft import run_training

        self._need("data", "load")
        train_ds, eval_ds, collator = self.data
        self.result = run_training(self.cfg, model=self.model, tokenizer=self.tokenizer, train_dataset=train_ds,
                                   eval_dataset=eval_ds, data_collator=collator,
                                   data_summary=self.data_summary)
        scalars = {k: v for k, v in self.result.metrics.items() if isinstance(v, (int, float, str)) and v is not None}
        return pd.Series(scalars, name="value").to_frame()

    def loss_plot(self) -> Path | None:
        """The saved loss figure (training_loss.png in the adapter folder), or None with plot_loss off."""
        self._need("result", "train")
        return self.result.loss_plot

    def answers_after(self):
        """The same held-out prompts: reference, base and adapter answers, a verdict for each."""
        self._need("result", "train")
        if not self.heldout:
            self.heldout = self._sample()
        self.after = self._answers()
        return self._table(base=self.before, adapter=self.after)

    def verify(self):
        """The saved adapter: A and B for every targeted module of every layer, B not zero."""
        import pandas as pd

        from labkit.models.integrity import verify_adapter_dir

        check = verify_adapter_dir(self.output_dir, require_trained=True)
        return pd.Series(check, name="value").to_frame()

    def record(self) -> dict:
        """Final losses, throughput and the shown held-out answers' exact matches into the run manifest."""
        from labkit.evaluate.metrics import exact_match
        from labkit.report import record

        self._need("result", "train")
        m = self.result.metrics
        refs = [_reference(e) for e in self.heldout]
        exact = {name: int(sum(exact_match(p, r) for p, r in zip(answers, refs)))
                 for name, answers in (("base", self.before), ("adapter", self.after)) if answers}
        return record(
            final_train_loss=m.get("final_train_loss"), first_train_loss=m.get("first_train_loss"),
            eval_loss=m.get("eval_loss"), train_tokens_per_s=m.get("train_tokens_per_s"),
            train_seconds=m.get("train_seconds"), global_step=m.get("global_step"),
            trainable_params=int(sum(p.numel() for p in self.model.parameters() if p.requires_grad)),
            heldout_shown=len(self.heldout), heldout_exact_base=exact.get("base"),
            heldout_exact_adapter=exact.get("adapter"), adapter_dir=str(self.output_dir))

    def _table(self, **answers: list[str]):
        import pandas as pd

        from labkit.evaluate.metrics import verdict

        refs = [_reference(e) for e in self.heldout]
        table = pd.DataFrame({"task": [e.get("task") or "" for e in self.heldout],
                              "prompt": [e["messages"][-2]["content"] for e in self.heldout], "reference": refs})
        for name, values in answers.items():
            table[name] = values
            table[f"{name} verdict"] = [verdict(p, r) for p, r in zip(values, refs)]
        return table

    def _need(self, attr: str, step: str) -> None:
        from labkit.errors import LabkitError

        value = getattr(self, attr)
        if value is None or (isinstance(value, (tuple, list)) and not value):
            raise LabkitError(f"Recipe.{step}() has not run yet: run the notebook's cells in order")


def _reference(example: dict) -> str:
    return example["messages"][-1]["content"]
