"""Training recipes shared by `mdlm train` and the examples: pretraining (optionally with LoRA) and instruction tuning.

Both are thin: load the data with `datasets`, prepare it, build a [`MaskedDiffusionTrainer`] and run it; what is left
is choosing the model, the data and the arguments.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from datasets import Dataset, load_dataset
from transformers import AutoTokenizer

from ..model_card import lora_settings
from ..modeling_auto import AutoModelForMaskedDiffusion
from ..validation import check_int
from .arguments import MaskedDiffusionTrainingArguments
from .collators import DataCollatorForMaskedDiffusion, DataCollatorForMaskedDiffusionSFT
from .data import format_instruction_dataset, mix_corpus_blocks, pack_dataset, tokenize_line_by_line
from .lora import MODERNBERT_LORA_TARGETS, add_lora, diffutron_lora_config, merge_lora
from .trainer import MaskedDiffusionTrainer


@dataclass
class RecipeArguments:
    """What to train and on which data (the training loop itself is set by `MaskedDiffusionTrainingArguments`)."""

    model: str = field(metadata={"help": "Model folder, Hub id or alias to start from."})
    train_file: str = field(metadata={"help": "Text file (one document per line) or JSON lines file."})
    validation_file: str | None = field(default=None, metadata={"help": "Held-out file of the same kind."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer (defaults to the model's)."})
    text_column: str = field(default="text", metadata={"help": "Text column of a JSON corpus."})
    block_size: int = field(default=128, metadata={"help": "Pretraining and SFT replay: tokens per packed block."})
    line_by_line: bool = field(
        default=False,
        metadata={
            "help": "Pretraining and SFT replay: one document per row (cut into block_size windows) instead of packed "
            "blocks, as transformers' run_mlm.py --line_by_line."
        },
    )
    max_length: int | None = field(default=None, metadata={"help": "SFT: longest row, in tokens."})
    truncate: bool = field(
        default=False,
        metadata={"help": "SFT: cut rows longer than max_length (rows whose prompt alone fills it are dropped)."},
    )
    pad_answer_to: int | None = field(
        default=None, metadata={"help": "SFT: pad each answer with scored EOS tokens to this length (LLaDA's SFT)."}
    )
    replay_file: str | None = field(
        default=None,
        metadata={"help": "SFT: a text corpus whose packed blocks are mixed into the rows (keeps language)."},
    )
    replay_ratio: float = field(
        default=0.0, metadata={"help": "SFT: corpus blocks per instruction row (with replay_file)."}
    )
    tasks: str | None = field(default=None, metadata={"help": "SFT: comma-separated `task` values to keep."})
    exclude_tasks: str | None = field(default=None, metadata={"help": "SFT: comma-separated `task` values to drop."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N rows (quick runs)."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of every weight."})
    lora_r: int = field(default=256, metadata={"help": "LoRA rank (Diffutron: 256)."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha (Diffutron: 256)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (Diffutron: 0.05)."})
    lora_targets: str = field(
        default=",".join(MODERNBERT_LORA_TARGETS), metadata={"help": "Comma-separated module names to adapt."}
    )
    lora_trainable_tokens: str | None = field(
        default=None,
        metadata={
            "help": "With `lora`: comma-separated tokens whose embedding rows train with the adapter (peft's "
            "`trainable_token_indices`), e.g. chat markers just added to the vocabulary; the rest stay frozen."
        },
    )
    merge_lora: bool = field(default=True, metadata={"help": "Save the merged model (else only the adapter)."})

    def __post_init__(self) -> None:
        check_int("limit", self.limit, minimum=1, optional=True)  # `limit=0` would otherwise mean every row
        check_int("block_size", self.block_size, minimum=1)
        for name in ("tasks", "exclude_tasks"):
            value = getattr(self, name)
            if value is not None and not _task_names(value):
                raise ValueError(f"`{name}` names no task: {value!r} (comma-separated `task` values).")
        if not self.replay_ratio >= 0:
            raise ValueError(
                f"`replay_ratio` must be >= 0 (corpus blocks per instruction row), got {self.replay_ratio!r}."
            )
        if (self.replay_file is None) != (self.replay_ratio == 0):
            raise ValueError(
                "`replay_file` and `replay_ratio` go together: a corpus file and a ratio > 0 (corpus blocks per "
                f"instruction row), or neither; got replay_file={self.replay_file!r}, replay_ratio={self.replay_ratio!r}."
            )
        lora_settings_given = [
            item.name
            for item in fields(self)
            if item.name in LORA_SETTINGS and getattr(self, item.name) != item.default
        ]
        if lora_settings_given and not self.lora:
            raise ValueError(
                f"{lora_settings_given} configure a LoRA adapter, which is off: set `lora=True` too (they would be "
                "ignored, and every weight would train)."
            )
        if self.lora_trainable_tokens and not self.lora:
            raise ValueError(
                f"`lora_trainable_tokens` ({self.lora_trainable_tokens!r}) trains embedding rows next to a LoRA "
                "adapter; set `lora=True` too (without LoRA every embedding row trains already)."
            )


#: Recipe fields that only a LoRA run reads; changed without `lora=True`, they raise rather than be ignored.
LORA_SETTINGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "merge_lora")
#: Recipe fields that only instruction tuning reads; set for pretraining, they raise rather than be ignored.
SFT_ONLY_FIELDS = ("max_length", "truncate", "pad_answer_to", "replay_file", "tasks", "exclude_tasks")


def _load_rows(path: str, limit: int | None) -> Dataset:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such data file: {path}")
    kind = "json" if path.endswith((".json", ".jsonl")) else "text"
    dataset = load_dataset(kind, data_files=path, split="train")
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def _corpus_rows(recipe: RecipeArguments, path: str, tokenizer: Any, limit: int | None = None) -> Dataset:
    """A text corpus as packed blocks, or one document per row with `line_by_line`."""
    rows = _load_rows(path, limit)
    if recipe.line_by_line:
        return tokenize_line_by_line(rows, tokenizer, recipe.block_size, text_column=recipe.text_column)
    return pack_dataset(rows, tokenizer, recipe.block_size, text_column=recipe.text_column)


def _filter_tasks(dataset: Dataset, recipe: RecipeArguments, *, strict: bool = True) -> Dataset:
    if not (recipe.tasks or recipe.exclude_tasks):
        return dataset
    if "task" not in dataset.column_names:
        raise ValueError("`tasks`/`exclude_tasks` need a `task` column in the instruction data.")
    keep = _task_names(recipe.tasks) if recipe.tasks else None
    drop = _task_names(recipe.exclude_tasks) if recipe.exclude_tasks else set()
    present = set(dataset["task"])
    unknown = sorted(((keep or set()) | drop) - present)
    if unknown and strict:  # a misspelt name would otherwise keep or drop nothing, silently
        raise ValueError(
            f"`tasks`/`exclude_tasks` name tasks the data does not have: {unknown}; its tasks are {sorted(present)}."
        )
    filtered = dataset.filter(lambda row: (keep is None or row["task"] in keep) and row["task"] not in drop)
    if len(filtered) == 0:
        raise ValueError(f"No rows left after filtering tasks (keep={keep}, drop={drop}).")
    return filtered


def _task_names(value: str) -> set[str]:
    """Comma-separated task names, spaces around them ignored (`"qa, sum"` is `{"qa", "sum"}`)."""
    return {name.strip() for name in value.split(",") if name.strip()}


def _model_and_tokenizer(recipe: RecipeArguments) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(recipe.tokenizer or recipe.model)
    extra = {}  # checked before the weights load
    if recipe.lora_trainable_tokens:
        extra["trainable_token_indices"] = _token_ids(tokenizer, recipe.lora_trainable_tokens)
    # Weights train in float32 (mixed precision is the Trainer's `bf16`/`fp16`), whatever dtype they were saved in.
    model = AutoModelForMaskedDiffusion.from_pretrained(recipe.model, dtype=torch.float32)
    if recipe.lora:
        model = add_lora(
            model,
            diffutron_lora_config(
                r=recipe.lora_r,
                lora_alpha=recipe.lora_alpha,
                lora_dropout=recipe.lora_dropout,
                target_modules=[name.strip() for name in recipe.lora_targets.split(",") if name.strip()],
                **extra,
            ),
        )
    return model, tokenizer


def _token_ids(tokenizer: Any, tokens: str) -> list[int]:
    """The ids of comma-separated whole tokens of the vocabulary; a token that is not one raises, naming it."""
    names = [name.strip() for name in tokens.split(",") if name.strip()]
    vocabulary = tokenizer.get_vocab()
    missing = [name for name in names if name not in vocabulary]
    if missing:
        raise ValueError(
            f"`lora_trainable_tokens` names {missing}, which are not tokens of the tokenizer's vocabulary "
            f"({len(vocabulary)} tokens); add them first (`tokenizer.add_tokens`, `model.resize_token_embeddings`)."
        )
    return [vocabulary[name] for name in names]


def _train_and_save(
    recipe: RecipeArguments, args: MaskedDiffusionTrainingArguments, model: Any, tokenizer: Any, **trainer_kwargs: Any
) -> dict[str, Any]:
    trainer = MaskedDiffusionTrainer(model=model, args=args, processing_class=tokenizer, **trainer_kwargs)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    seconds = time.perf_counter() - start
    metrics = dict(result.metrics)
    if trainer_kwargs.get("eval_dataset") is not None:
        metrics.update(trainer.evaluate())
    lora = lora_settings(trainer.model)
    card = {"model_name": os.path.basename(os.path.normpath(args.output_dir)), "lora": lora}
    if trainer.is_world_process_zero():
        final = trainer.model
        if recipe.lora and recipe.merge_lora:
            final = merge_lora(trainer.model)
        final.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        trainer.model = final
        trainer.create_model_card(**card)
        summary = {"wall_seconds": round(seconds, 1), "metrics": metrics, "summary": trainer.training_summary()}
        with open(os.path.join(args.output_dir, "training_summary.json"), "w") as handle:
            json.dump(summary, handle, indent=2, default=str)
    if args.push_to_hub:
        # As transformers' example scripts: the final model (merged, with its card) goes to `hub_model_id` once
        # saved; `Trainer` itself pushes only checkpoints during training. Every process calls it (it saves first).
        trainer.push_to_hub(**card)
    return metrics


def run_pretraining(recipe: RecipeArguments, args: MaskedDiffusionTrainingArguments) -> dict[str, Any]:
    """Pretrain (or continue pretraining, e.g. with `lora=True`) on a corpus packed into `block_size` blocks."""
    sft_only = {name: getattr(recipe, name) for name in SFT_ONLY_FIELDS if getattr(recipe, name) not in (None, False)}
    if sft_only:
        raise ValueError(
            f"{sorted(sft_only)} apply to instruction tuning only; pretraining would ignore them: {sft_only}."
        )
    model, tokenizer = _model_and_tokenizer(recipe)
    train = _corpus_rows(recipe, recipe.train_file, tokenizer, recipe.limit)
    evaluation = _corpus_rows(recipe, recipe.validation_file, tokenizer) if recipe.validation_file else None
    collator = DataCollatorForMaskedDiffusion(
        tokenizer=tokenizer, time_epsilon=args.time_epsilon, noise_schedule=args.noise_schedule
    )
    return _train_and_save(
        recipe, args, model, tokenizer, train_dataset=train, eval_dataset=evaluation, data_collator=collator
    )


def run_instruction_tuning(recipe: RecipeArguments, args: MaskedDiffusionTrainingArguments) -> dict[str, Any]:
    """Instruction-tune on `instruction`/`input`/`output` or `messages` rows with the chat template."""
    if recipe.line_by_line and not recipe.replay_file:  # in instruction tuning it shapes the replay rows only
        raise ValueError("`line_by_line` applies to pretraining and to SFT replay rows; set `replay_file` too.")
    if not recipe.replay_file:  # they shape the replay rows only; without them they would be ignored
        defaults = {item.name: item.default for item in fields(RecipeArguments)}
        ignored = [name for name in ("block_size", "text_column") if getattr(recipe, name) != defaults[name]]
        if ignored:
            raise ValueError(
                f"{ignored} shape the corpus rows of pretraining and of SFT replay; instruction tuning without "
                "`replay_file` would ignore them."
            )
    model, tokenizer = _model_and_tokenizer(recipe)
    rows = _filter_tasks(_load_rows(recipe.train_file, recipe.limit), recipe)
    formatting = {"max_length": recipe.max_length, "truncate": recipe.truncate, "pad_answer_to": recipe.pad_answer_to}
    train = format_instruction_dataset(rows, tokenizer, **formatting)
    if recipe.replay_file:
        blocks = _corpus_rows(recipe, recipe.replay_file, tokenizer)
        train = mix_corpus_blocks(train, blocks, recipe.replay_ratio, seed=args.seed)
    evaluation = None
    if recipe.validation_file:
        held_out = _filter_tasks(_load_rows(recipe.validation_file, None), recipe, strict=False)
        evaluation = format_instruction_dataset(held_out, tokenizer, **formatting)
    collator = DataCollatorForMaskedDiffusionSFT(
        tokenizer=tokenizer, time_epsilon=args.time_epsilon, noise_schedule=args.noise_schedule
    )
    return _train_and_save(
        recipe, args, model, tokenizer, train_dataset=train, eval_dataset=evaluation, data_collator=collator
    )


def finish_distributed() -> None:
    """Under `torchrun`, wait for every process, then destroy the process group before the interpreter exits.

    Left to the interpreter's shutdown, gloo's threads can outlive the group and abort one process ("terminate called
    without an active exception", exit -6) after a run that finished, which makes the launcher report a failure.
    Call it once the `Trainer` is released (as `mdlm train` does): a DDP-wrapped model freed after its group is
    destroyed can hang the process at exit.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from accelerate import PartialState  # the Trainer's own state: it knows how the processes were launched

        state = PartialState()
        state.wait_for_everyone()
        state.destroy_process_group()
