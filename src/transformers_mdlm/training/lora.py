"""LoRA for masked diffusion models: Diffutron's configuration, and merging an adapter into a plain model."""

from __future__ import annotations

import os
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from transformers.utils import logging

from ..presets import portable_model_name
from ..validation import check_int, check_number

logger = logging.get_logger(__name__)

#: Diffutron's continual-pretraining targets on ModernBERT: every linear layer of the encoder plus the head's dense
#: layer; the decoder (tied to the embeddings) is left alone. peft has no default targets for ModernBERT.
MODERNBERT_LORA_TARGETS = ("attn.Wqkv", "attn.Wo", "mlp.Wi", "mlp.Wo", "head.dense")


def diffutron_lora_config(
    r: int = 256,
    lora_alpha: int = 256,
    lora_dropout: float = 0.05,
    target_modules: tuple[str, ...] | list[str] = MODERNBERT_LORA_TARGETS,
    **kwargs: Any,
) -> LoraConfig:
    """The LoRA configuration of Diffutron's continual pretraining (r=256, alpha=256, dropout 0.05), any rank.

    Example:

    ```python
    >>> config = diffutron_lora_config(r=8, lora_alpha=16)
    >>> sorted(config.target_modules)
    ['attn.Wo', 'attn.Wqkv', 'head.dense', 'mlp.Wi', 'mlp.Wo']

    ```
    """
    # peft takes r=0 and any alpha: a negative or zero alpha scales the adapter's update by alpha / r silently.
    check_int("r", r, minimum=1)
    check_number("lora_alpha", lora_alpha, "a finite number > 0", lambda v: v > 0)
    check_number("lora_dropout", lora_dropout, "a number in [0, 1)", lambda v: 0 <= v < 1)
    return LoraConfig(
        r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=list(target_modules), **kwargs
    )


def add_lora(model: Any, config: LoraConfig, base_model_name_or_path: str | None = None) -> PeftModel:
    """Wrap `model` with a LoRA adapter, with a clear error when the target modules match no layer.

    The adapter's `base_model_name_or_path` (what `adapter_config.json` records, and what loading the adapter
    fetches) is `base_model_name_or_path` when given, else the model's own name; the embedded model is recorded by
    its alias `"turkish-mdlm-embedded"`, never by its folder. A base loaded from another local folder is recorded
    as that path, with a warning: pass its Hub id here to make the adapter loadable elsewhere.
    """
    name = base_model_name_or_path or portable_model_name(getattr(model, "name_or_path", None))
    if base_model_name_or_path is None and name and os.path.isabs(name):
        logger.warning(
            f"The adapter will record its base model as the local path {name}; pass `base_model_name_or_path=` "
            "(a Hub id) so that it loads on other machines."
        )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as error:
        if "not found" in str(error) or "Target modules" in str(error):
            names = sorted({name.split(".")[-1] for name, _ in model.named_modules() if name})
            raise ValueError(
                f"LoRA `target_modules` {sorted(config.target_modules)} match no layer of {type(model).__name__}; "
                f"its module names end in: {', '.join(names[:40])}."
            ) from error
        raise
    for adapter in peft_model.peft_config.values():
        adapter.base_model_name_or_path = name
    return peft_model


def merge_lora(model: PeftModel) -> Any:
    """Merge the adapter into the base weights and return the plain model (tied decoder and head intact)."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"`model` must be a peft PeftModel, got {type(model).__name__}.")
    merged = model.merge_and_unload()
    merged.tie_weights()
    return merged
