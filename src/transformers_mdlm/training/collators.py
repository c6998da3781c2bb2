"""Collators that pad, draw the diffusion noise reproducibly, and mark what the loss scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np
import torch

from ..generation.configuration import ALPHA_SCHEDULES
from ..generation.scheduling import MaskedDiffusionScheduler
from ..validation import check_bool, check_choice, check_int, check_number


@dataclass
class DataCollatorForMaskedDiffusion:
    r"""
    Pretraining collator for the masked diffusion objective: every non-padding token is maskable.

    Takes rows holding `input_ids` of any lengths (like transformers' `DataCollatorForLanguageModeling`), pads them, and
    for each row draws a time `t = time_epsilon + (1 - time_epsilon) * U` and masks each maskable token with
    probability `1 - alpha(t)`.

    The noise of a row comes from a generator seeded by `(seed, sample_id, epoch)`: rows carrying a `sample_id`
    (the data-preparation helpers add one) see the same noise whatever the batch size, the number of processes, or
    whether the run was resumed from a checkpoint. [`MaskedDiffusionTrainer`] sets `seed` from the training
    arguments and `epoch` at every epoch. Rows without a `sample_id` use their position in the batch and the call
    count instead (still seeded, but then the noise depends on batching).

    Returns a batch with `input_ids` (noised), `attention_mask`, `labels` (the original token where masked, `-100`
    elsewhere), `t` (per row) and `num_maskable` (maskable tokens per row).

    A row's `attention_mask`, when it has one, says which of its tokens are real: padding (mask 0) is never attended,
    masked nor scored. Rows must not carry `labels` (the collator makes them from the noise) and must hold at least
    one token; every problem raises a `ValueError` naming the row and the field.

    Args:
        tokenizer: supplies the mask and pad ids (it must have a mask token).
        time_epsilon (`float`): smallest time. noise_schedule (`str`): `"linear"` or `"cosine"`.
        seed (`int`): base seed of the noise. pad_to_multiple_of (`int`, *optional*): as in transformers' collators.
        max_length (`int`, *optional*): longest row accepted; `truncate=True` cuts longer rows, otherwise they
            raise a `ValueError`.

    Example:

    ```python
    >>> collator = DataCollatorForMaskedDiffusion(tokenizer=tokenizer)  # doctest: +SKIP
    >>> batch = collator([{"input_ids": [5, 6, 7], "sample_id": 0}, {"input_ids": [8, 9], "sample_id": 1}])  # doctest: +SKIP
    >>> sorted(batch)  # doctest: +SKIP
    ['attention_mask', 'input_ids', 'labels', 'num_maskable', 't']

    ```
    """

    tokenizer: Any
    time_epsilon: float = 1e-3
    noise_schedule: str = "linear"
    seed: int = 42
    epoch: int = 0
    pad_to_multiple_of: int | None = None
    max_length: int | None = None
    truncate: bool = False

    #: Whether the collator reads `prompt_length` (the SFT collator keeps prompts clean); this one masks every token,
    #: so it refuses rows that carry one rather than train on their prompts silently.
    reads_prompt_length: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if getattr(self.tokenizer, "mask_token_id", None) is None:
            raise ValueError(
                f"The tokenizer {type(self.tokenizer).__name__} has no mask token; masked diffusion needs one "
                "(tokenizer.add_special_tokens({'mask_token': '<mask>'}) and resize the model's embeddings)."
            )
        # `time_epsilon=1` (every maskable token masked, t = 1) is allowed here, for inspection; training refuses it.
        check_number("time_epsilon", self.time_epsilon, "a number in [0, 1]", lambda v: 0 <= v <= 1)
        check_choice("noise_schedule", self.noise_schedule, ALPHA_SCHEDULES)
        check_int("seed", self.seed, minimum=0)
        check_int("pad_to_multiple_of", self.pad_to_multiple_of, minimum=1, optional=True)
        check_int("max_length", self.max_length, minimum=1, optional=True)
        check_bool("truncate", self.truncate)
        self.scheduler = MaskedDiffusionScheduler(schedule=self.noise_schedule)
        self._calls = 0

    # Subclasses decide which tokens are maskable.
    def maskable(
        self, features: Sequence[dict[str, Any]], input_ids: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        return real

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty list of rows.")
        for index, feature in enumerate(features):
            if "labels" in feature:
                raise ValueError(
                    f"Row {index} carries `labels`; the masked diffusion collator makes its own from the noise. "
                    "Remove the column (`dataset.remove_columns('labels')`)."
                )
            if "prompt_length" in feature and not self.reads_prompt_length:
                raise ValueError(
                    f"Row {index} carries `prompt_length` (an instruction row), but {type(self).__name__} masks and "
                    "scores every token, the prompt's too. Use DataCollatorForMaskedDiffusionSFT "
                    "(MaskedDiffusionTrainer picks it when the training rows carry `prompt_length`), or remove the "
                    "column to train on whole texts."
                )
        rows = [self._row(feature, index) for index, feature in enumerate(features)]
        width = max(len(row) for row in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        real = torch.zeros((len(rows), width), dtype=torch.bool)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
            real[index, : len(row)] = True
        maskable = self.maskable(features, input_ids, real)

        t = torch.empty(len(rows))
        masked = torch.zeros_like(real)
        for index, feature in enumerate(features):
            generator = torch.Generator().manual_seed(self._noise_seed(feature, index))
            u = torch.rand(1, generator=generator)
            t[index] = self.time_epsilon + (1 - self.time_epsilon) * u
            _, masked[index] = self.scheduler.add_noise(
                input_ids[index], t[index], mask_token_id=self.tokenizer.mask_token_id,
                maskable=maskable[index], generator=generator,
            )  # fmt: skip
        self._calls += 1
        labels = torch.where(masked, input_ids, torch.full_like(input_ids, -100))
        noised = input_ids.masked_fill(masked, self.tokenizer.mask_token_id)
        return {
            "input_ids": noised,
            "attention_mask": real.long(),
            "labels": labels,
            "t": t,
            "num_maskable": maskable.sum(dim=1),
        }

    def _row(self, feature: dict[str, Any], index: int) -> list[int]:
        if "input_ids" not in feature:
            raise ValueError(f"Row {index} has no `input_ids` (keys: {sorted(feature)}). Tokenize the data first.")
        row = _token_ids(feature["input_ids"], index)
        mask = feature.get("attention_mask")
        if mask is not None:
            mask = [int(value) for value in mask]
            if len(mask) != len(row) or any(value not in (0, 1) for value in mask):
                raise ValueError(
                    f"Row {index}: `attention_mask` must hold one 0 or 1 per token ({len(row)} tokens, got {mask})."
                )
            if any(later > earlier for earlier, later in pairwise(mask)):
                raise ValueError(f"Row {index}: `attention_mask` must mark the tokens first, then padding: {mask}.")
            row = row[: sum(mask)]  # the padding the row carries is dropped; the collator pads the batch itself
        if not row:
            raise ValueError(f"Row {index} has no tokens (`input_ids` is empty or all padding).")
        if self.max_length is not None and len(row) > self.max_length:
            if not self.truncate:
                raise ValueError(
                    f"Row {index} has {len(row)} tokens, more than `max_length` ({self.max_length}); pass "
                    "`truncate=True` to cut it, or pack the data into shorter blocks."
                )
            row = row[: self.max_length]
        return row

    def _noise_seed(self, feature: dict[str, Any], index: int) -> int:
        if "sample_id" in feature:
            sample_id = _integer(feature["sample_id"])
            if sample_id is None or sample_id < 0:
                raise ValueError(
                    f"Row {index}: `sample_id` must be an integer >= 0 (it keys the noise), got {feature['sample_id']!r}."
                )
            key = [self.seed, sample_id, self.epoch]
        else:
            key = [self.seed, index, self._calls, self.epoch, 1]
        return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class DataCollatorForMaskedDiffusionSFT(DataCollatorForMaskedDiffusion):
    r"""
    Instruction-tuning collator: the prompt is never masked nor scored; the answer and its end marker are.

    Rows hold `input_ids` (prompt followed by the answer) and `prompt_length` (the number of prompt tokens), as
    [`format_instruction_dataset`] writes them. Padding is never scored either: the loss covers the answer tokens only
    (Diffutron's fork also scores `<pad>` filling up to a fixed length; pad the answer yourself to reproduce that).
    """

    reads_prompt_length: ClassVar[bool] = True

    def maskable(
        self, features: Sequence[dict[str, Any]], input_ids: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        prompt_lengths = []
        lengths = real.sum(dim=1).tolist()
        for index, feature in enumerate(features):
            if "prompt_length" not in feature:
                raise ValueError(f"Row {index} has no `prompt_length`; prepare it with `format_instruction_dataset`.")
            prompt_length = _integer(feature["prompt_length"])
            if prompt_length is None:
                raise ValueError(f"Row {index}: `prompt_length` must be an integer, got {feature['prompt_length']!r}.")
            if not 0 <= prompt_length < lengths[index]:
                raise ValueError(
                    f"Row {index}: `prompt_length` is {prompt_length} for a row of {lengths[index]} tokens; it must be "
                    "in [0, row length) so that the answer has at least one token to learn."
                )
            prompt_lengths.append(prompt_length)
        columns = torch.arange(input_ids.shape[1])[None, :]
        return real & (columns >= torch.tensor(prompt_lengths)[:, None])


def _integer(value: Any) -> int | None:
    """`value` as a Python int when it is one integer: an int, a numpy integer, or a 0-d integer tensor or array (what
    `Dataset.with_format("torch")` or `"numpy"` gives for a scalar column); `None` for anything else, booleans and
    floats included (`int()` would cut `5.9` to `5`)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return int(value.item()) if value.ndim == 0 and _holds_integers(value) else None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def _holds_integers(array: torch.Tensor | np.ndarray) -> bool:
    """Whether a tensor or array has an integer dtype (booleans are not integers)."""
    if isinstance(array, torch.Tensor):
        return not (array.is_floating_point() or array.is_complex() or array.dtype == torch.bool)
    return bool(np.issubdtype(array.dtype, np.integer))  # numpy's booleans are not integers


def _token_ids(ids: Any, index: int) -> list[int]:
    """A row's `input_ids` as a list of ints; floats and booleans are refused (`int()` would truncate them silently)."""
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        if not _holds_integers(ids):
            raise ValueError(f"Row {index}: `input_ids` must hold integer token ids, got a {ids.dtype} array.")
        return ids.reshape(-1).tolist()  # Python ints
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise ValueError(f"Row {index}: `input_ids` must be a list of integer token ids, got {type(ids).__name__}.")
    row = []
    for token in ids:  # one pass: checked and converted
        if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
            raise ValueError(f"Row {index}: `input_ids` must hold integer token ids, got {token!r}.")
        row.append(int(token))
    return row
