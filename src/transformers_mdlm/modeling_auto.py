"""`AutoModelForMaskedDiffusion`: load any supported masked-LM checkpoint (or a peft adapter on one) for diffusion."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

from transformers import BertConfig, DistilBertConfig, ModernBertConfig, RobertaConfig, XLMRobertaConfig
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.utils import find_adapter_config_file

from .modeling_masked_diffusion import (
    BertForMaskedDiffusion,
    DistilBertForMaskedDiffusion,
    ModernBertForMaskedDiffusion,
    RobertaForMaskedDiffusion,
    XLMRobertaForMaskedDiffusion,
)
from .presets import check_model_reference, resolve_model_name

MODEL_FOR_MASKED_DIFFUSION_MAPPING = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())
for _config_class, _model_class in (
    (ModernBertConfig, ModernBertForMaskedDiffusion),
    (BertConfig, BertForMaskedDiffusion),
    (RobertaConfig, RobertaForMaskedDiffusion),
    (XLMRobertaConfig, XLMRobertaForMaskedDiffusion),
    (DistilBertConfig, DistilBertForMaskedDiffusion),
):
    # `exist_ok=True`: without it, registering a built-in config is silently skipped.
    MODEL_FOR_MASKED_DIFFUSION_MAPPING.register(_config_class, _model_class, exist_ok=True)

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


class AutoModelForMaskedDiffusion(_BaseAutoModelClass):
    r"""
    Auto class that instantiates a masked diffusion language model from a masked-LM checkpoint or configuration.

    Supported architectures: ModernBERT (mmBERT, Diffutron), BERT, RoBERTa, XLM-RoBERTa, DistilBERT; more with
    `AutoModelForMaskedDiffusion.register(ConfigClass, ModelClass)`. The checkpoint needs no custom code: a plain
    `ModernBertForMaskedLM` checkpoint loads as a [`ModernBertForMaskedDiffusion`].

    A folder or Hub repository holding a peft adapter (`adapter_config.json`) loads onto its base model, as peft's
    `AutoPeftModel` does, and comes back as a `peft.PeftModel` (pass `is_trainable=True` to train it further).

    Example:

    ```python
    >>> from transformers import ModernBertConfig
    >>> from transformers_mdlm import AutoModelForMaskedDiffusion

    >>> config = ModernBertConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
    ...     num_attention_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=2, cls_token_id=2, sep_token_id=1)
    >>> type(AutoModelForMaskedDiffusion.from_config(config)).__name__
    'ModernBertForMaskedDiffusion'

    ```
    """

    _model_mapping = MODEL_FOR_MASKED_DIFFUSION_MAPPING

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], *model_args: Any, **kwargs: Any):
        """Load a model, or a peft adapter together with the base model named in its `adapter_config.json`.

        Aliases such as `"diffutron"` (see `transformers_mdlm.MODEL_ALIASES`) resolve to their Hub ids unless a local
        folder has that name.
        """
        if isinstance(pretrained_model_name_or_path, str) and not os.path.isdir(pretrained_model_name_or_path):
            check_model_reference(pretrained_model_name_or_path)
            pretrained_model_name_or_path = resolve_model_name(pretrained_model_name_or_path)
        hub_kwargs = {name: kwargs[name] for name in _HUB_KWARGS if name in kwargs}
        is_trainable = kwargs.pop("is_trainable", False)
        adapter_name = kwargs.pop("adapter_name", "default")
        adapter_config_file = find_adapter_config_file(
            str(pretrained_model_name_or_path), **{k: v for k, v in hub_kwargs.items() if k != "force_download"}
        )
        has_full_weights = os.path.isdir(pretrained_model_name_or_path) and os.path.isfile(
            os.path.join(pretrained_model_name_or_path, hub_kwargs.get("subfolder", ""), "config.json")
        )
        if adapter_config_file is None or has_full_weights:
            return _load_naming_the_file(super().from_pretrained, pretrained_model_name_or_path, model_args, kwargs)

        from peft import PeftConfig, PeftModel

        peft_config = PeftConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if not peft_config.base_model_name_or_path:
            raise ValueError(
                f"The adapter at {pretrained_model_name_or_path} does not name its base model "
                "(`base_model_name_or_path` in adapter_config.json)."
            )
        base_kwargs = {k: v for k, v in kwargs.items() if k not in ("revision", "subfolder")}
        if peft_config.revision:  # the base model's revision the adapter was trained on, as peft's AutoPeftModel reads
            base_kwargs["revision"] = peft_config.revision
        base_name = resolve_model_name(peft_config.base_model_name_or_path)  # an alias, e.g. the embedded model's
        base_model = super().from_pretrained(base_name, *model_args, **base_kwargs)
        tuned = _adapter_generation_config(pretrained_model_name_or_path, hub_kwargs)
        if tuned is not None:  # decoding settings saved beside the adapter win over the base model's
            base_model.generation_config = tuned
            base_model.generation_config.fill_special_token_ids(base_model.config)
        return PeftModel.from_pretrained(
            base_model,
            pretrained_model_name_or_path,
            adapter_name=adapter_name,
            is_trainable=is_trainable,
            **hub_kwargs,
        )


def _adapter_generation_config(name_or_path: Any, hub_kwargs: dict[str, Any]) -> Any:
    """The `generation_config.json` saved next to an adapter (the pipeline's `save_pretrained` writes one), or `None`
    when there is none."""
    from .generation import MaskedDiffusionGenerationConfig

    local = os.path.isdir(name_or_path)
    if local and not os.path.isfile(
        os.path.join(name_or_path, hub_kwargs.get("subfolder", "") or "", "generation_config.json")
    ):
        return None
    try:
        return MaskedDiffusionGenerationConfig.from_pretrained(name_or_path, **hub_kwargs)
    except OSError:  # no such file in the adapter's repository
        return None


def _load_naming_the_file(load: Any, name_or_path: Any, model_args: tuple, kwargs: dict[str, Any]) -> Any:
    """Load; a corrupt or truncated weights file (safetensors' own error names no file) becomes an `OSError` that
    names it."""
    try:
        return load(name_or_path, *model_args, **kwargs)
    except Exception as error:
        if type(error).__name__ != "SafetensorError":
            raise
        folder = os.path.join(str(name_or_path), kwargs.get("subfolder", "") or "")
        files = (
            sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))
            if os.path.isdir(folder)
            else []
        )
        where = ", ".join(os.path.join(folder, name) for name in files) or str(name_or_path)
        raise OSError(
            f"The weights at {where} could not be read ({error}): the file is truncated or corrupt; download or save "
            "it again."
        ) from error


__all__ = ["MODEL_FOR_MASKED_DIFFUSION_MAPPING", "AutoModelForMaskedDiffusion"]
