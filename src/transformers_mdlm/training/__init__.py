"""Training masked diffusion language models with transformers' `Trainer`, peft and datasets."""

from __future__ import annotations

from .arguments import LOSS_NORMALIZATIONS, LOSS_WEIGHTINGS, MaskedDiffusionTrainingArguments
from .collators import DataCollatorForMaskedDiffusion, DataCollatorForMaskedDiffusionSFT
from .data import (
    format_instruction_dataset,
    instruction_messages,
    mix_corpus_blocks,
    pack_dataset,
    tokenize_line_by_line,
)
from .lora import MODERNBERT_LORA_TARGETS, add_lora, diffutron_lora_config, merge_lora
from .trainer import MaskedDiffusionTrainer

__all__ = [
    "LOSS_NORMALIZATIONS",
    "LOSS_WEIGHTINGS",
    "MODERNBERT_LORA_TARGETS",
    "DataCollatorForMaskedDiffusion",
    "DataCollatorForMaskedDiffusionSFT",
    "MaskedDiffusionTrainer",
    "MaskedDiffusionTrainingArguments",
    "add_lora",
    "diffutron_lora_config",
    "format_instruction_dataset",
    "instruction_messages",
    "merge_lora",
    "mix_corpus_blocks",
    "pack_dataset",
    "tokenize_line_by_line",
]
