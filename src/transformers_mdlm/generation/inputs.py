"""Checks of what `generate` and `infill` are given, done once per call before any forward pass."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig

from ..validation import check_token_ids
from .configuration import MaskedDiffusionGenerationConfig
from .denoising import CALLBACK_TENSOR_INPUTS
from .scheduling import MaskedDiffusionScheduler


def prepare_generation_config(
    base: MaskedDiffusionGenerationConfig | Any | None,
    kwargs: dict[str, Any],
    *,
    special_id_sources: tuple[Any, ...],
    vocab_size: int | None,
    model_defaults: GenerationConfig | None = None,
) -> MaskedDiffusionGenerationConfig:
    """A checked copy of `base` with `kwargs` applied and its unset special ids taken from `special_id_sources`.

    The sources are asked in order (the tokenizer passed to the call, the model's generation config, the model's
    config), as transformers fills a passed generation config's special ids from the model. The copy is validated
    once, here; everything after it trusts it. A plain `transformers.GenerationConfig` sets only what it sets: the rest
    comes from `model_defaults` (the model's saved config), as in transformers' `generate`.
    """
    if base is None:
        base = MaskedDiffusionGenerationConfig()
    if not isinstance(base, MaskedDiffusionGenerationConfig):  # a plain transformers GenerationConfig
        base = MaskedDiffusionGenerationConfig.from_generation_config(base, defaults=model_defaults)
    config = base.with_overrides(**kwargs)
    for source in special_id_sources:
        if source is not None and source is not base:
            config.fill_special_token_ids(source)
    if config.mask_token_id is None:
        raise ValueError(
            "No mask token id: masked diffusion needs one. Pass `tokenizer=` (one with a mask token), "
            "`mask_token_id=`, or set `model.generation_config.mask_token_id`."
        )
    if config.suppress_tokens:
        check_token_ids("suppress_tokens", config.suppress_tokens, vocab_size)
    for name in ("mask_token_id", "pad_token_id", "eos_token_id"):
        value = getattr(config, name)
        if value is not None:
            check_token_ids(name, [value], vocab_size)
    return config


#: The generation settings a scheduler carries in its own config (a passed scheduler decides them).
SCHEDULER_SETTINGS = ("schedule", "remasking", "stochastic_transfer", "confidence_threshold")


def with_scheduler_settings(scheduler: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's keyword arguments with a passed scheduler's settings (`SCHEDULER_SETTINGS`) added, so that the
    generation config that is checked and reported is what decodes (a greedy call with several return sequences is
    refused or allowed for the scheduler's remasking). A setting of the call that differs from the scheduler's raises
    a `ValueError` instead of being overridden silently."""
    if scheduler is None:
        return kwargs
    if not isinstance(scheduler, MaskedDiffusionScheduler):
        raise TypeError(f"`scheduler` must be a MaskedDiffusionScheduler, got {type(scheduler).__name__}.")
    settings = {name: scheduler.config[name] for name in SCHEDULER_SETTINGS}
    conflicts = [
        f"{name}={kwargs[name]!r} (the scheduler's: {settings[name]!r})"
        for name in SCHEDULER_SETTINGS
        if name in kwargs and kwargs[name] != settings[name]
    ]
    if conflicts:
        raise ValueError(
            f"The call sets {', '.join(conflicts)}, but the `scheduler` passed decides these; set them on the "
            "scheduler (`MaskedDiffusionScheduler(remasking=...)`) or leave the scheduler out."
        )
    return {**kwargs, **settings}


def resolve_scheduler(
    scheduler: MaskedDiffusionScheduler | None, config: MaskedDiffusionGenerationConfig
) -> MaskedDiffusionScheduler:
    """The scheduler passed in (its config decides the unmasking policy, see [`with_scheduler_settings`]), or the one
    the generation config implies.

    A scheduler keeps per-call state (`timesteps`), so a passed one is copied: concurrent calls may share it.
    """
    if scheduler is None:
        return MaskedDiffusionScheduler.from_generation_config(config)
    if not isinstance(scheduler, MaskedDiffusionScheduler):
        raise TypeError(f"`scheduler` must be a MaskedDiffusionScheduler, got {type(scheduler).__name__}.")
    return MaskedDiffusionScheduler.from_config(scheduler.config)


def check_callback_inputs(callback: Any, tensor_inputs: Any) -> tuple[str, ...]:
    """The names `callback_on_step_end` receives; each must be one of `CALLBACK_TENSOR_INPUTS`."""
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback_on_step_end` must be callable, got {type(callback).__name__}.")
    if tensor_inputs is None:
        return CALLBACK_TENSOR_INPUTS
    if isinstance(tensor_inputs, str) or not all(isinstance(name, str) for name in tensor_inputs):
        raise TypeError(f"`callback_on_step_end_tensor_inputs` must be a list of names, got {tensor_inputs!r}.")
    unknown = [name for name in tensor_inputs if name not in CALLBACK_TENSOR_INPUTS]
    if unknown:
        raise ValueError(
            f"`callback_on_step_end_tensor_inputs` has {unknown}; allowed: {', '.join(CALLBACK_TENSOR_INPUTS)}."
        )
    return tuple(tensor_inputs)


def check_generator(generator: Any) -> None:
    """A `torch.Generator` or `None`: anything else would be ignored by greedy decoding or fail deep inside torch."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"`generator` must be a torch.Generator or None, got {type(generator).__name__}; for a seed, pass "
            "`generator=torch.Generator(device=model.device).manual_seed(seed)`."
        )


def check_streamer(streamer: Any) -> None:
    """`None` or an object with callable `put` and `end` (transformers' `BaseStreamer` interface)."""
    if streamer is None:
        return
    missing = [name for name in ("put", "end") if not callable(getattr(streamer, name, None))]
    if missing:
        raise TypeError(
            f"`streamer` must be None or a streamer with `put` and `end` methods (transformers' BaseStreamer), got "
            f"{type(streamer).__name__}, which lacks {', '.join(f'`{name}`' for name in missing)}."
        )


def check_prompt(
    input_ids: torch.LongTensor | None,
    attention_mask: torch.Tensor | None,
    *,
    device: torch.device,
    vocab_size: int | None,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """`input_ids` as a `(batch, length)` LongTensor on `device` and a 0/1 `attention_mask` of the same shape.

    Without an `attention_mask`, it is inferred as transformers' `generate` does: `input_ids != pad_token_id` when the
    pad id occurs in the inputs and differs from the EOS id, else all ones.
    """
    if input_ids is None:
        input_ids = torch.zeros(1, 0, dtype=torch.long, device=device)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"`input_ids` must be a LongTensor of shape (batch_size, length), got {type(input_ids).__name__}"
            f"{'' if not isinstance(input_ids, torch.Tensor) else ' of dtype ' + str(input_ids.dtype)}."
        )
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"`input_ids` must have shape (batch_size >= 1, length), got {tuple(input_ids.shape)}.")
    input_ids = input_ids.to(device=device, dtype=torch.long)
    if attention_mask is None:
        # transformers' `_prepare_attention_mask_for_generation`: padded batches passed without their mask would
        # otherwise decode the pads as prompt tokens. With pad == EOS a pad may be a real EOS, so nothing is inferred.
        infer = pad_token_id is not None and pad_token_id != eos_token_id and bool((input_ids == pad_token_id).any())
        attention_mask = (input_ids != pad_token_id).long() if infer else torch.ones_like(input_ids)
    else:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"`attention_mask` must be a tensor, got {type(attention_mask).__name__}.")
        if attention_mask.dim() == 1:
            attention_mask = attention_mask[None]
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)}, "
                f"got {tuple(attention_mask.shape)}."
            )
        attention_mask = attention_mask.to(device)
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("`attention_mask` must hold only 0 (padding) and 1 (token).")
        attention_mask = attention_mask.long()
    real_ids = input_ids[attention_mask.bool()]
    if real_ids.numel():
        check_token_ids("input_ids", [int(real_ids.min()), int(real_ids.max())], vocab_size)
    return input_ids, attention_mask


def check_length(width: int, limit: int | None, what: str) -> None:
    """Refuse a canvas longer than the model's positions, naming what made it long."""
    if limit is not None and width > limit:
        raise ValueError(
            f"{what} is {width} tokens, more than the model's {limit} positions. Shorten the input or lower "
            "`max_new_tokens`."
        )


def resolve_max_new_tokens(config: MaskedDiffusionGenerationConfig, prompt_width: int) -> int:
    """`max_new_tokens`, or `max_length` minus the prompt; at least 1."""
    max_new_tokens = config.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = config.max_length - prompt_width if config.max_length is not None else 0
    if max_new_tokens <= 0:
        raise ValueError(
            f"Nothing to generate: `max_new_tokens` must be >= 1 (got {config.max_new_tokens}, "
            f"max_length={config.max_length}, prompt length {prompt_width})."
        )
    return max_new_tokens


__all__ = [
    "check_callback_inputs",
    "check_generator",
    "check_length",
    "check_prompt",
    "check_streamer",
    "prepare_generation_config",
    "resolve_max_new_tokens",
    "resolve_scheduler",
    "with_scheduler_settings",
]
