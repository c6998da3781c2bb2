"""`MaskedDiffusionModelMixin`: what every masked diffusion model adds to its transformers masked-LM class.

Model-level concerns live here: the split into encoder and output head that decoding and training use, the
masked-LM loss, the position limit, loading `generation_config.json` (with the tokenizer's mask id and the presets of
known checkpoints) and publishing with a model card. Decoding itself is [`MaskedDiffusionGenerationMixin`]'s.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from transformers import AutoTokenizer
from transformers.modeling_outputs import MaskedLMOutput
from transformers.utils import logging

from .generation.configuration import SPECIAL_TOKEN_ATTRIBUTES, MaskedDiffusionGenerationConfig
from .generation.mixin import MaskedDiffusionGenerationMixin
from .presets import preset_for_model

logger = logging.get_logger(__name__)

#: transformers' loss for masked language modelling: cross-entropy at the labelled positions (labels not shifted).
MASKED_LM_LOSS_TYPE = "ForMaskedLM"


class MaskedDiffusionModelMixin(MaskedDiffusionGenerationMixin):
    """
    Turns a transformers masked-LM class into a masked diffusion language model.

    A class combining this mixin with a masked-LM class (see `AutoModelForMaskedDiffusion`) keeps every
    `PreTrainedModel` feature and gains `generate` and `infill`. Subclasses implement [`compute_logits`] (the output
    head on given hidden states) and, when the position limit is not `config.max_position_embeddings`,
    [`max_sequence_length`].

    `model(input_ids, labels=labels).loss` is the masked-LM cross-entropy at the positions whose label is not `-100`
    (transformers cannot infer it from a `*ForMaskedDiffusion` class name and would otherwise fall back to the
    causal-LM loss, which shifts the labels).
    """

    generation_config_class = MaskedDiffusionGenerationConfig

    @classmethod
    def can_generate(cls) -> bool:
        """Always: transformers then gives every instance a `generation_config` (a masked diffusion one)."""
        return True

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.loss_type = MASKED_LM_LOSS_TYPE

    # ------------------------------------------------------------------ encoder and head

    def compute_hidden_states(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, **kwargs: Any
    ) -> torch.Tensor:
        """Last hidden states of the encoder (the model without its output head); `kwargs` (e.g. `position_ids`) go to
        the encoder."""
        return self.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The masked-LM head applied to `hidden_states` of shape `(..., hidden_size)`."""
        raise NotImplementedError(f"{type(self).__name__} must implement `compute_logits`.")

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        logits_mask: torch.BoolTensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """The masked-LM forward; with `logits_mask`, the head runs only at the selected positions.

        Args:
            logits_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Positions whose logits are computed. The returned `logits` then have shape
                `(logits_mask.sum(), vocab_size)`, in row-major order of the selected positions. Training uses it to
                score only the masked tokens: the output head of a large vocabulary costs more than the encoder.
        """
        if logits_mask is None:
            return super().forward(input_ids, attention_mask, *args, **kwargs)
        if args or any(value is not None for value in kwargs.values()):
            unexpected = [name for name, value in kwargs.items() if value is not None]
            raise TypeError(f"`logits_mask` only combines with `input_ids` and `attention_mask`, got {unexpected}.")
        hidden_states = self.compute_hidden_states(input_ids, attention_mask)
        return MaskedLMOutput(logits=self.compute_logits(hidden_states[logits_mask]))

    def max_sequence_length(self) -> int | None:
        """Longest sequence (prompt + canvas) the model's positions allow; `None` when unbounded."""
        return getattr(self.config, "max_position_embeddings", None)

    def padding_id(self, generation_config: MaskedDiffusionGenerationConfig) -> int:
        """The id that pads rows in the decoding layout: the model's own pad id first (RoBERTa numbers positions
        from it), then the generation config's pad or EOS id. The padding of finished rows in the output is the
        generation config's `pad_token_id` instead (see `generation.stopping.output_padding_id`)."""
        for candidate in (
            getattr(self.config, "pad_token_id", None),
            generation_config.pad_token_id,
            generation_config.eos_token_id,
        ):
            if isinstance(candidate, int):
                return candidate
        return 0

    # ------------------------------------------------------------------ publishing

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        model_card: Any | None = None,
        **card_kwargs: Any,
    ) -> Any:
        """Upload the model, its generation config and a model card rendered from the package's template.

        Args:
            repo_id (`str`): the Hub repository (created if missing).
            model_card (`huggingface_hub.ModelCard`, *optional*): the card to upload; by default
                `transformers_mdlm.model_card.build_model_card(self, repo_id=repo_id, **card_kwargs)`.
            card_kwargs: passed to `build_model_card` (datasets, training settings, evaluation results, ...).

        Returns:
            The `huggingface_hub.CommitInfo` of the upload.
        """
        from huggingface_hub import HfApi

        from .model_card import build_model_card

        if model_card is not None and card_kwargs:
            raise TypeError(
                f"{sorted(card_kwargs)} build the model card, but `model_card=` is given and would be uploaded as it "
                "is: pass one or the other."
            )
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        card = model_card if model_card is not None else build_model_card(self, repo_id=repo_id, **card_kwargs)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            card.save(os.path.join(folder, "README.md"))
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                revision=revision,
                create_pr=create_pr,
            )

    # ------------------------------------------------------------------ loading

    def adjust_generation_fn(
        self,
        generation_config: MaskedDiffusionGenerationConfig | None,
        from_auto_class: bool,
        from_pipeline: bool,
        pretrained_model_name_or_path: str | None,
        cache_dir: str | None = None,
        force_download: bool = False,
        proxies: dict | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str = "main",
        subfolder: str = "",
        trust_remote_code: bool | None = None,
        **kwargs: Any,
    ) -> None:
        """Called by `from_pretrained`: load `generation_config.json`, then fill missing special ids from the tokenizer.

        A plain masked-LM checkpoint (Diffutron's are) has no mask id in its configs; the tokenizer saved beside the
        weights has it, so it is read once here and saved in `generation_config.json` by `save_pretrained`. A known
        checkpoint without `generation_config.json` (Diffutron's) gets its preset (`transformers_mdlm.presets`).
        """
        del trust_remote_code, from_auto_class, from_pipeline
        hub_kwargs = {
            "cache_dir": cache_dir,
            "force_download": force_download,
            "proxies": proxies,
            "local_files_only": local_files_only,
            "token": token,
            "revision": revision,
            "subfolder": subfolder,
        }
        if generation_config is not None:
            self.generation_config = self.generation_config_class.from_dict(generation_config.to_dict())
        elif pretrained_model_name_or_path is not None:
            self._load_generation_config(str(pretrained_model_name_or_path), hub_kwargs)
        if self.generation_config.mask_token_id is None and pretrained_model_name_or_path is not None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
            except (OSError, ValueError) as error:
                logger.info(f"No tokenizer next to the weights ({error}); set `generation_config.mask_token_id`.")
            else:
                self.generation_config.fill_special_token_ids(tokenizer)

    def _load_generation_config(self, name_or_path: str, hub_kwargs: dict[str, Any]) -> None:
        try:
            loaded = self.generation_config_class.from_pretrained(name_or_path, **hub_kwargs)
        except OSError:
            preset = preset_for_model(name_or_path)
            self.generation_config.update(**preset)
            logger.info(
                "No generation_config.json found; using the defaults, the model's special ids"
                + (f" and the preset {preset}." if preset else ".")
            )
            return
        loaded.update(
            defaults_only=True, **{name: getattr(self.generation_config, name) for name in SPECIAL_TOKEN_ATTRIBUTES}
        )
        self.generation_config = loaded


__all__ = ["MASKED_LM_LOSS_TYPE", "MaskedDiffusionModelMixin"]
