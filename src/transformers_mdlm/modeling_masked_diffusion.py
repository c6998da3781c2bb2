"""Masked diffusion language models: transformers' masked-LM classes plus `generate` and `infill`.

Each class subclasses the transformers masked-LM class of its architecture without changing a module, so checkpoints
load and save with the same tensor names, and every `PreTrainedModel` feature (dtype and attention choices,
`save_pretrained`, `push_to_hub`, peft) keeps working. Only the output head is named per architecture, so that
decoding can compute logits at the positions a step needs instead of the whole sequence.
"""

from __future__ import annotations

import torch
from transformers import (
    BertForMaskedLM,
    DistilBertForMaskedLM,
    ModernBertForMaskedLM,
    RobertaForMaskedLM,
    XLMRobertaForMaskedLM,
)

from .modeling_base import MaskedDiffusionModelMixin


class ModernBertForMaskedDiffusion(MaskedDiffusionModelMixin, ModernBertForMaskedLM):
    """ModernBERT (and mmBERT, Diffutron's backbone) as a masked diffusion language model."""

    supports_dual_cache = True

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.head(hidden_states))


class BertForMaskedDiffusion(MaskedDiffusionModelMixin, BertForMaskedLM):
    """BERT as a masked diffusion language model."""

    @property
    def supports_dual_cache(self) -> bool:
        # Relative position embeddings are computed from positions within the input, not from `position_ids`.
        return getattr(self.config, "position_embedding_type", "absolute") == "absolute"

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.cls(hidden_states)

    def max_sequence_length(self) -> int | None:
        if getattr(self.config, "position_embedding_type", "absolute") != "absolute":
            return None
        return self.config.max_position_embeddings


class RobertaForMaskedDiffusion(MaskedDiffusionModelMixin, RobertaForMaskedLM):
    """RoBERTa as a masked diffusion language model."""

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)

    def max_sequence_length(self) -> int | None:
        # Positions start after the padding index (fairseq convention).
        return self.config.max_position_embeddings - (self.config.pad_token_id or 0) - 1


class XLMRobertaForMaskedDiffusion(MaskedDiffusionModelMixin, XLMRobertaForMaskedLM):
    """XLM-RoBERTa as a masked diffusion language model."""

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)

    def max_sequence_length(self) -> int | None:
        return self.config.max_position_embeddings - (self.config.pad_token_id or 0) - 1


class DistilBertForMaskedDiffusion(MaskedDiffusionModelMixin, DistilBertForMaskedLM):
    """DistilBERT as a masked diffusion language model."""

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.vocab_layer_norm(self.activation(self.vocab_transform(hidden_states)))
        return self.vocab_projector(hidden_states)


__all__ = [
    "BertForMaskedDiffusion",
    "DistilBertForMaskedDiffusion",
    "ModernBertForMaskedDiffusion",
    "RobertaForMaskedDiffusion",
    "XLMRobertaForMaskedDiffusion",
]
