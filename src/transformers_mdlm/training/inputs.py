"""Checks of what training is given: rows, batches and the noise keys, each failure named before the model sees it."""

from __future__ import annotations

from typing import Any

import torch


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; training stopped before the optimizer applied it."""


def with_sample_ids(dataset: Any) -> Any:
    """`dataset` with a `sample_id` column (each row's index) when it has none, so that the collator keys every row's
    noise by its index and the epoch: any `datasets.Dataset` then resumes from a checkpoint bit for bit. A dict of
    evaluation sets (as `Trainer` takes) gets them set by set."""
    from datasets import Dataset

    if isinstance(dataset, dict):
        return {name: with_sample_ids(part) for name, part in dataset.items()}
    if isinstance(dataset, Dataset) and "sample_id" not in dataset.column_names:
        return dataset.add_column("sample_id", list(range(len(dataset))))
    return dataset


def model_limits(model: Any) -> tuple[int | None, int | None]:
    """The vocabulary size and the position limit of a model (or a peft/accelerate wrapper around one)."""
    from transformers.modeling_utils import unwrap_model

    inner = unwrap_model(model)  # DDP/accelerate wrappers
    if hasattr(inner, "get_base_model"):  # a peft model
        inner = inner.get_base_model()
    config = getattr(inner, "config", None)
    vocab_size = getattr(config, "vocab_size", None)
    limit = inner.max_sequence_length() if hasattr(inner, "max_sequence_length") else None
    return vocab_size, limit


def check_batch(model: Any, inputs: dict[str, Any]) -> None:
    """Refuse a batch the model cannot take, naming the problem: no tokens, ids beyond the vocabulary, rows longer
    than the model's positions."""
    input_ids = inputs.get("input_ids")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.numel() == 0:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"A training batch needs `input_ids` of shape (batch, length >= 1), got {shape}.")
    vocab_size, limit = model_limits(model)
    ids = input_ids
    labels = inputs.get("labels")
    if isinstance(labels, torch.Tensor) and labels.shape == input_ids.shape:
        # The masked positions' original ids are in `labels` only: an id outside the vocabulary that the noise masked
        # would otherwise fail inside the loss (an IndexError on the CPU, a device assert on a GPU).
        ids = torch.where(labels == -100, input_ids, labels)
    low, high = (int(value) for value in torch.aminmax(ids))  # one device sync per batch
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        raise ValueError(
            f"The batch holds token id {low if low < 0 else high}, outside the model's vocabulary [0, {vocab_size}): "
            "was the data tokenized with another tokenizer?"
        )
    if limit is not None and input_ids.shape[1] > limit:
        raise ValueError(
            f"The batch's rows are {input_ids.shape[1]} tokens, more than the model's {limit} positions: pack the data "
            "into shorter blocks or pass `max_length` (with `truncate=True`) to the collator."
        )


__all__ = ["TrainingDivergedError", "check_batch", "model_limits", "with_sample_ids"]
