"""`MaskedDiffusionTrainer`: transformers' `Trainer` computing the masked diffusion (MDLM) objective."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset, IterableDataset
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import rotate_checkpoints
from transformers.utils import logging

from ..chat_templates import DIFFUTRON_CHAT_TEMPLATE
from ..cpu_features import cpu_has_native_bfloat16
from ..generation.scheduling import MaskedDiffusionScheduler
from .arguments import MaskedDiffusionTrainingArguments, diffusion_setting
from .checkpoints import (
    STAGING_DIR,
    TRAINER_STATE,
    clear_staging,
    is_complete_checkpoint,
    last_complete_checkpoint,
    publish_checkpoint,
)
from .collators import DataCollatorForMaskedDiffusion, DataCollatorForMaskedDiffusionSFT
from .data import longest_row
from .inputs import TrainingDivergedError, check_batch, model_limits, with_sample_ids

logger = logging.get_logger(__name__)

DIFFUSION_SETTINGS = ("noise_schedule", "loss_weighting", "loss_normalization", "time_epsilon")

#: Dataset columns the collators read (kept although the model's `forward` does not take them).
COLLATOR_COLUMNS = ("input_ids", "sample_id", "prompt_length")

#: `Trainer` arguments this trainer would ignore: evaluation computes the diffusion loss only (no predictions to score:
#: the logits exist at the masked positions alone, and differ with every noise draw), and `compute_loss` is the MDLM
#: objective itself.
PREDICTION_ARGUMENTS = ("compute_metrics", "preprocess_logits_for_metrics", "compute_loss_func")


class _NoiseEpochCallback(TrainerCallback):
    """Keeps the collator's noise keyed on the current epoch (so that a resumed run sees the same noise)."""

    def __init__(self, collator: DataCollatorForMaskedDiffusion) -> None:
        self.collator = collator

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.collator.epoch = int(state.epoch or 0)


def _prepare_split(model: Any, dataset: Any, split: str, collator: Any) -> Any:
    """A dataset as the trainer uses it, whether given to the constructor or to `evaluate`/`predict`: refused when
    empty, with its `sample_id` column (each row's noise key) and its rows' lengths checked."""
    if dataset is not None and hasattr(dataset, "__len__") and not isinstance(dataset, dict) and not len(dataset):
        raise ValueError(f"`{split}` is empty.")
    dataset = with_sample_ids(dataset)
    _check_row_lengths(model, dataset, split, collator)
    return dataset


def _ignored_arguments_message(names: list[str]) -> str:
    return (
        f"MaskedDiffusionTrainer does not take {', '.join(f'`{name}`' for name in names)}: its evaluation reports the "
        "masked diffusion loss only (`eval_loss`, the objective over the whole set), with no predictions to pass to "
        "metrics, and its `compute_loss` is the MDLM objective. Generate with the model (e.g. the `masked-diffusion` "
        "pipeline) to score its outputs."
    )


def _check_row_lengths(model: Any, dataset: Any, split: str, collator: Any) -> None:
    """Rows longer than the model's positions fail before training, not at the batch that draws them (maybe hours in);
    skipped where the collator cuts rows to fit, and for data that is not a `datasets.Dataset` of `input_ids`; a dict
    of evaluation sets (as `Trainer` takes) is checked set by set."""
    if isinstance(dataset, dict):
        for name, part in dataset.items():
            _check_row_lengths(model, part, f"{split}[{name!r}]", collator)
        return
    _, limit = model_limits(model)
    if limit is None or not isinstance(dataset, Dataset) or "input_ids" not in dataset.column_names:
        return
    cut_to = getattr(collator, "max_length", None) if getattr(collator, "truncate", False) else None
    if cut_to is not None and cut_to <= limit:
        return
    longest = longest_row(dataset)
    if longest > limit:
        raise ValueError(
            f"`{split}` has rows of up to {longest} tokens, more than the model's {limit} positions: pack the data "
            "into shorter blocks (`block_size`) or pass `max_length` (at most the positions) with `truncate=True`."
        )


class MaskedDiffusionTrainer(Trainer):
    r"""
    A [`transformers.Trainer`] for masked diffusion language models.

    It trains any model of `AutoModelForMaskedDiffusion` (or a peft model on one) with the MDLM objective, computing
    the output head only at the masked positions. Everything else is the standard `Trainer`: checkpoints and exact
    resume, gradient accumulation, mixed precision, `accelerate`/`torchrun` distributed runs, `push_to_hub`.

    The collator defaults to [`DataCollatorForMaskedDiffusionSFT`] when the training data carries `prompt_length`
    (as [`format_instruction_dataset`] writes it: the prompt is then never masked nor scored), else to
    [`DataCollatorForMaskedDiffusion`]; both are built from the tokenizer (`processing_class`) and the arguments, and
    their noise is seeded from `args.seed`. A plain `transformers.TrainingArguments` works too: the diffusion settings
    then take their defaults. The logs add `mask_rate` (masked share of the maskable tokens).

    The loss (see [`MaskedDiffusionTrainingArguments`]): for sequence `i` with time `t_i`, weight `w_i` (the ELBO
    weight, or 1) and `M_i` maskable tokens, `S_i = w_i * sum(CE over its masked tokens)`; `"sequence"`
    normalisation gives `mean_i(S_i / M_i)`, `"token"` gives `sum_i(S_i) / sum_i(M_i)`, both over the whole
    accumulated batch.

    Example:

    ```python
    >>> trainer = MaskedDiffusionTrainer(  # doctest: +SKIP
    ...     model=model, args=MaskedDiffusionTrainingArguments("out"), train_dataset=packed, processing_class=tokenizer
    ... )
    >>> trainer.train()  # doctest: +SKIP

    ```
    """

    # The loss below is normalised over the whole accumulated batch (see `_get_num_items_in_batch`).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: Any = None,
        args: MaskedDiffusionTrainingArguments | TrainingArguments | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = MaskedDiffusionTrainingArguments(output_dir="tmp_trainer")
        if not isinstance(args, TrainingArguments):
            raise TypeError(
                f"`args` must be MaskedDiffusionTrainingArguments or TrainingArguments, got {type(args).__name__}."
            )
        time_epsilon, noise_schedule = (
            diffusion_setting(args, "time_epsilon"),
            diffusion_setting(args, "noise_schedule"),
        )
        tokenizer = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None:
            if tokenizer is None:
                raise ValueError("Pass `processing_class=tokenizer` (or a `data_collator`).")
            sft = _has_column(kwargs.get("train_dataset"), "prompt_length")
            collator_class = DataCollatorForMaskedDiffusionSFT if sft else DataCollatorForMaskedDiffusion
            kwargs["data_collator"] = collator_class(
                tokenizer=tokenizer, time_epsilon=time_epsilon, noise_schedule=noise_schedule
            )
        collator = kwargs["data_collator"]
        if isinstance(collator, DataCollatorForMaskedDiffusionSFT) and getattr(tokenizer, "chat_template", 1) is None:
            # `format_instruction_dataset` formats with Diffutron's template when the tokenizer has none: save it with
            # the tokenizer, so that the trained model's chat format travels with it.
            tokenizer.chat_template = DIFFUTRON_CHAT_TEMPLATE
            logger.info("The tokenizer had no chat template: Diffutron's is set on it and saved with the model.")
        if isinstance(collator, DataCollatorForMaskedDiffusion):
            collator.seed = args.seed
            if args.dataloader_num_workers > 0 and args.dataloader_persistent_workers:
                raise ValueError(
                    "`dataloader_persistent_workers=True` with `dataloader_num_workers > 0`: persistent workers keep "
                    "the copy of the collator they started with, so every epoch would draw the first epoch's noise "
                    "(the trainer moves the collator's `epoch` in the main process). Leave persistent workers off."
                )
            if (collator.time_epsilon, collator.noise_schedule) != (time_epsilon, noise_schedule):
                raise ValueError(
                    "The collator's `time_epsilon`/`noise_schedule` "
                    f"({collator.time_epsilon}, {collator.noise_schedule!r}) differ from the training arguments' "
                    f"({time_epsilon}, {noise_schedule!r})."
                )
        ignored = [name for name in PREDICTION_ARGUMENTS if kwargs.get(name) is not None]
        if ignored:
            raise ValueError(_ignored_arguments_message(ignored))
        for split in ("train_dataset", "eval_dataset"):
            kwargs[split] = _prepare_split(model, kwargs.get(split), split, collator)
        super().__init__(model=model, args=args, **kwargs)
        if self.args.bf16 and self.args.device.type == "cpu" and not cpu_has_native_bfloat16():
            logger.warning(
                "bf16=True on a CPU without bfloat16 kernels (AVX512-BF16 or AMX): PyTorch emulates bfloat16 there, "
                "and a training step runs many times slower than in float32 (24x for a small ModernBERT on an AVX2 "
                "CPU, see docs/performance.md). Leave bf16 off to train in float32."
            )
        self._staging_checkpoint = False
        self._deferred_push = False
        if isinstance(collator, DataCollatorForMaskedDiffusion):
            self.add_callback(_NoiseEpochCallback(collator))
        self.scheduler_for_noise = MaskedDiffusionScheduler(schedule=noise_schedule)
        self._mask_rates: list[float] = []
        self._eval_totals: torch.Tensor | None = None

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *COLLATOR_COLUMNS]))

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """What the loss divides by, over the accumulated batch: maskable tokens (`token`) or sequences (`sequence`)."""
        if not batch_samples or "num_maskable" not in batch_samples[0]:
            return None
        if diffusion_setting(self.args, "loss_normalization") == "token":
            count = sum(batch["num_maskable"].sum() for batch in batch_samples)
        else:
            count = torch.tensor(sum(len(batch["num_maskable"]) for batch in batch_samples))
        count = count.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        check_batch(model, inputs)
        labels = inputs["labels"]
        masked = labels != -100
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], logits_mask=masked)
        token_loss = F.cross_entropy(outputs.logits.float(), labels[masked], reduction="none")
        weights = self._loss_weights(inputs["t"].to(token_loss.device))
        row_of_token = masked.nonzero()[:, 0]
        per_row = torch.zeros(labels.shape[0], device=token_loss.device).index_add(
            0, row_of_token, token_loss * weights[row_of_token]
        )
        num_maskable = inputs["num_maskable"].to(per_row.device)
        if diffusion_setting(self.args, "loss_normalization") == "sequence":
            numerator = (per_row / num_maskable.clamp_min(1)).sum()
            denominator = num_items_in_batch if num_items_in_batch is not None else labels.shape[0]
        else:
            numerator = per_row.sum()
            denominator = num_items_in_batch if num_items_in_batch is not None else num_maskable.sum().clamp_min(1)
        loss = numerator / denominator
        if self._eval_totals is not None and not model.training:  # evaluation: the whole set's ratio, see below
            self._add_to_eval_totals(per_row.detach(), num_maskable)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes  # the gradients are averaged across processes
        if model.training and diffusion_setting(self.args, "stop_on_nonfinite") and not bool(torch.isfinite(loss)):
            raise TrainingDivergedError(
                f"The loss is {float(loss.detach())} at step {self.state.global_step + 1} (learning rate "
                f"{self._get_learning_rate()}): training stopped before the optimizer applied it. Lower the learning "
                "rate or check the data; `stop_on_nonfinite=False` continues regardless."
            )
        if model.training:
            rate = masked.sum() / num_maskable.sum().clamp_min(1)
            self._mask_rates.append(float(rate))
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ no silent divergence, no half checkpoints

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> float:
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        checked = diffusion_setting(self.args, "stop_on_nonfinite") and self.accelerator.scaler is None
        if checked and norm is not None and not math.isfinite(float(norm)):
            raise TrainingDivergedError(
                f"The gradient norm is {float(norm)} at step {self.state.global_step + 1}: training stopped before the "
                "optimizer applied it. Lower the learning rate or check the data; `stop_on_nonfinite=False` continues "
                "regardless."
            )
        return norm

    def _get_output_dir(self, trial: Any) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if getattr(self, "_staging_checkpoint", False) else run_dir

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """transformers' checkpoint, written in a staging folder and renamed to `checkpoint-N` once complete.

        transformers records the best checkpoint's path, and starts the Hub push of the checkpoint, while the folder is
        still staged: the path is rewritten to the published one (in memory on every process, and in the staged
        `trainer_state.json` before the rename, so that a resumed run finds its best checkpoint), and the push is
        deferred until the folder is published (an upload of the staging folder would fail once it is renamed)."""
        run_dir = super()._get_output_dir(trial)
        staging = os.path.join(run_dir, STAGING_DIR)
        name = f"checkpoint-{self.state.global_step}"
        self._staging_checkpoint = True
        self._deferred_push = False
        try:
            super()._save_checkpoint(model, trial)
            push = self._deferred_push
        finally:
            self._staging_checkpoint = False
            self._deferred_push = False
        best = self.state.best_model_checkpoint
        best_was_staged = bool(best) and os.path.dirname(best) == staging
        if best_was_staged:
            self.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(best))
        self.accelerator.wait_for_everyone()
        final = os.path.join(run_dir, name)
        if self.args.should_save:
            state_file = os.path.join(staging, name, TRAINER_STATE)
            if best_was_staged and os.path.isfile(state_file):
                self.state.save_to_json(state_file)  # still staged: the published checkpoint holds the right path
            publish_checkpoint(os.path.join(staging, name), final)
        if push:
            super()._push_from_checkpoint(final)
        if self.args.should_save:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """transformers' push of a checkpoint; one called on the staged folder (from `_save_checkpoint`) waits until
        the folder is published under its final name."""
        if getattr(self, "_staging_checkpoint", False):
            self._deferred_push = True
            return
        super()._push_from_checkpoint(checkpoint_folder)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """transformers' `train`; `resume_from_checkpoint=True` resumes from the last *complete* checkpoint (an
        incomplete one, left by a run killed while writing it, is skipped with a warning), and a named checkpoint
        must be complete."""
        if resume_from_checkpoint is True:
            found = last_complete_checkpoint(self.args.output_dir)
            if found is None:
                raise ValueError(f"No complete checkpoint to resume from in {self.args.output_dir}.")
            resume_from_checkpoint = found
        elif isinstance(resume_from_checkpoint, (str, os.PathLike)) and not is_complete_checkpoint(
            resume_from_checkpoint
        ):
            raise ValueError(
                f"`resume_from_checkpoint`: {resume_from_checkpoint} is not a complete checkpoint (it needs its "
                "weights and trainer_state.json); pass True to take the last complete one."
            )
        if self.args.should_save:
            clear_staging(self.args.output_dir)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def create_model_card(
        self,
        language: str | list[str] | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        **card_kwargs: Any,
    ) -> None:
        """Write `README.md` in `output_dir` from the package's model card template (used by `push_to_hub`).

        Takes transformers' arguments with their meaning: `finetuned_from` becomes the card's `base_model`,
        `dataset_tags` (Hub ids) and `dataset` (names) its `datasets`, `tasks` join its `tags`; `language`,
        `license` and `tags` go to the metadata as they are. Further keyword arguments go to
        `transformers_mdlm.model_card.build_model_card` (`datasets` with licences, `eval_results`, `samples`,
        `lora`, `model_description`, `limitations`, `training`, `repo_id`); an unknown one raises a `TypeError`.
        The training settings come from the arguments and the run.
        """
        if not self.is_world_process_zero():
            return

        from ..model_card import CARD_ARGUMENTS, build_model_card

        unknown = sorted(set(card_kwargs) - set(CARD_ARGUMENTS))
        if unknown:
            raise TypeError(
                f"Unknown model card argument(s): {', '.join(unknown)}. Known: {', '.join(CARD_ARGUMENTS)}."
            )
        del dataset_args  # transformers uses it for the dataset's configuration name; the card has no field for it
        datasets = list(card_kwargs.pop("datasets", None) or [])
        named = {entry["name"] if isinstance(entry, dict) else entry for entry in datasets}
        # `dataset_tags` are Hub ids (transformers writes them into the card's metadata), `dataset` a display name.
        tagged = [{"name": name, "hub_id": name} for name in _as_list(dataset_tags)]
        for entry in [*tagged, *({"name": name} for name in _as_list(dataset))]:
            if entry["name"] not in named:
                datasets.append(entry)
                named.add(entry["name"])
        base_model = card_kwargs.pop("base_model", None)
        if finetuned_from is not None and base_model is not None and finetuned_from != base_model:
            raise ValueError(
                f"`finetuned_from` ({finetuned_from!r}) and `base_model` ({base_model!r}) name the same card field; "
                "pass one of them."
            )
        finetuned_from = finetuned_from or base_model
        if finetuned_from is None:  # as transformers: the model's own Hub id, unless it was loaded from a folder
            inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            source = getattr(inner.config, "_name_or_path", None)
            finetuned_from = source if source and not os.path.isdir(source) else None
        card_kwargs = {key: value for key, value in card_kwargs.items() if value is not None}
        # The repository the card's snippet names: the one `push_to_hub` pushes to (transformers' `hub_model_id`).
        card_kwargs.setdefault("repo_id", getattr(self, "hub_model_id", None) or self.args.hub_model_id or model_name)
        card_kwargs["training"] = {**self.training_summary(), **card_kwargs.get("training", {})}
        card = build_model_card(
            self.model,
            model_name=model_name,
            language=language,
            license=license,
            base_model=finetuned_from,
            datasets=datasets or None,
            tags=[*_as_list(tags), *_as_list(tasks)],
            **card_kwargs,
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def training_summary(self) -> dict[str, Any]:
        """The settings and progress of this run, as listed in the model card."""
        args = self.args
        summary = {
            "objective": "masked diffusion (MDLM), {} schedule, {} weighting, {} normalisation, time epsilon {}".format(
                *(diffusion_setting(args, name) for name in DIFFUSION_SETTINGS)
            ),
            "learning rate": args.learning_rate,
            "batch size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
            "optimizer steps": self.state.global_step,
            "epochs": round(self.state.epoch or 0, 3),
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "seed": args.seed,
        }
        losses = [entry["loss"] for entry in self.state.log_history if "loss" in entry]
        if losses:
            summary["final training loss"] = losses[-1]
        return summary

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        """transformers' loop, with `{prefix}_loss` the objective over the whole evaluation set: the sum of the loss's
        numerators over the sum of its denominators (maskable tokens with `loss_normalization="token"`, rows with
        `"sequence"`). transformers averages the batches' losses by rows instead, which makes a token-normalised loss
        depend on the evaluation batch size, and with `logging_nan_inf_filter` drops batches whose loss is not finite;
        here a NaN or inf anywhere makes the loss NaN or inf."""
        ignored = [name for name in PREDICTION_ARGUMENTS if getattr(self, name, None) is not None]
        if ignored:  # set on the trainer after it was built
            raise ValueError(_ignored_arguments_message(ignored))
        collator = self.data_collator
        noise_keys = (
            (collator.epoch, collator._calls) if isinstance(collator, DataCollatorForMaskedDiffusion) else None
        )
        self._eval_totals = torch.zeros(2, dtype=torch.float64, device=self.args.device)
        try:
            if noise_keys is not None:
                # The same model scores the same at every epoch and call: evaluation's noise is keyed as at epoch 0
                # (and rows without `sample_id` by their batch count from 0); the training noise keys come back
                # after. Dataloader workers start in the loop below, so they copy these keys.
                collator.epoch, collator._calls = 0, 0
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            totals = self._eval_totals
        finally:
            self._eval_totals = None
            if noise_keys is not None:
                collator.epoch, collator._calls = noise_keys
        key = f"{metric_key_prefix}_loss"
        if key in output.metrics and float(totals[1]) > 0:
            output.metrics[key] = float(totals[0] / totals[1])
        return output

    def _add_to_eval_totals(self, per_row: torch.Tensor, num_maskable: torch.Tensor) -> None:
        """Add a batch's rows to the evaluation's (numerator, denominator) sums. With several processes the rows are
        gathered with `gather_for_metrics`, as transformers gathers the losses: it drops the rows that accelerate
        repeats to give every process a last batch of the same size, which a sum of each process's totals would
        count twice. Every process gets the whole set's sums."""
        num_maskable = num_maskable.to(per_row.device).double()
        if diffusion_setting(self.args, "loss_normalization") == "sequence":
            rows = torch.stack([per_row.double() / num_maskable.clamp_min(1), torch.ones_like(num_maskable)], dim=1)
        else:
            rows = torch.stack([per_row.double(), num_maskable], dim=1)
        if self.args.world_size > 1:
            rows = self.accelerator.gather_for_metrics(rows)
        self._eval_totals += rows.sum(dim=0).to(self._eval_totals.device)

    def get_eval_dataloader(self, eval_dataset: str | Any | None = None) -> Any:
        """transformers' dataloader; a set given to `evaluate` gets the constructor's treatment (its `sample_id`
        column, so that its noise does not depend on the batching nor on the call, and the row-length check)."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = _prepare_split(self.model, eval_dataset, "eval_dataset", self.data_collator)
        return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        """transformers' dataloader, for a set prepared as the constructor's (see `get_eval_dataloader`)."""
        return super().get_test_dataloader(
            _prepare_split(self.model, test_dataset, "test_dataset", self.data_collator)
        )

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, None, None]:
        """Evaluation reports the objective only: the sparse logits of masked positions make poor predictions."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        if diffusion_setting(self.args, "loss_weighting") == "none":
            return torch.ones_like(t)
        return self.scheduler_for_noise.loss_weight(t).to(t.device)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._mask_rates and "loss" in logs:
            logs["mask_rate"] = round(sum(self._mask_rates) / len(self._mask_rates), 4)
            self._mask_rates.clear()
        super().log(logs, *args, **kwargs)


def _has_column(dataset: Any, name: str) -> bool:
    """Whether a `datasets.Dataset` or `IterableDataset` (or a list of dict rows) carries `name`. An `IterableDataset`
    whose columns are unknown (after `.map`, `column_names` is `None`) is asked for its first row, which restarts
    nothing: each iteration of an `IterableDataset` starts from its beginning."""
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, list):
        return name in columns
    if isinstance(dataset, IterableDataset):
        first = next(iter(dataset), None)
        return isinstance(first, dict) and name in first
    if isinstance(dataset, (list, tuple)) and dataset and isinstance(dataset[0], dict):
        return name in dataset[0]
    return False


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
