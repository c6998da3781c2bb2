"""Output dataclass of masked diffusion generation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class MaskedDiffusionGenerationOutput(ModelOutput):
    """
    What [`MaskedDiffusionGenerationMixin.generate`] and `infill` return with `return_dict_in_generate=True`.

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            For `generate`, the input ids followed by the new tokens (`sequences[:, input_ids.shape[1]:]` are the new
            ones); for `infill`, the input with every mask filled.
        nfe (`int`):
            Number of forward passes through the network (number of function evaluations). With classifier-free
            guidance the unconditional copy rides in the same pass.
        history (`tuple[torch.LongTensor]`, *optional*):
            With `output_history=True`: the canvas before the first step and after every step, each shaped like
            `sequences` (mask tokens where nothing is committed yet).
    """

    sequences: torch.LongTensor | None = None
    nfe: int | None = None
    history: tuple[torch.LongTensor, ...] | None = None
