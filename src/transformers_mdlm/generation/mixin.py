"""`MaskedDiffusionGenerationMixin`: `generate` and `infill`, as transformers' `GenerationMixin` reads.

Each call checks its inputs, prepares the canvas, runs the denoising loop and builds the output. The model supplies
the encoder and the output head separately (`compute_hidden_states`, `compute_logits`), its position limit and its
padding id; see `transformers_mdlm.modeling_base.MaskedDiffusionModelMixin`.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from transformers.utils import logging

from ..onednn_linear import onednn_linear_mode
from .canvas import Canvas, generation_canvas, infilling_canvas
from .configuration import MaskedDiffusionGenerationConfig
from .denoising import StepCallback, StepHooks, denoise
from .dual_cache import DualCache, dual_cache_attention_enabled
from .inputs import (
    check_callback_inputs,
    check_generator,
    check_length,
    check_prompt,
    check_streamer,
    prepare_generation_config,
    resolve_max_new_tokens,
    resolve_scheduler,
    with_scheduler_settings,
)
from .outputs import MaskedDiffusionGenerationOutput
from .scheduling import MaskedDiffusionScheduler
from .stopping import StopStringMatcher, output_padding_id, pad_after_eos

logger = logging.get_logger(__name__)


class MaskedDiffusionGenerationMixin:
    """
    Masked diffusion decoding for a masked language model: [`generate`] continues prompts, [`infill`] fills masks.

    The model's `generation_config` is a [`MaskedDiffusionGenerationConfig`], loaded from and saved to
    `generation_config.json`; keyword arguments of a call override it for that call only.
    """

    generation_config_class = MaskedDiffusionGenerationConfig
    #: Whether `kv_cache="dual"` may be used: the encoder goes through transformers' attention interface and takes the
    #: canvas columns as `position_ids` (see `generation.dual_cache`).
    supports_dual_cache: bool = False

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: MaskedDiffusionGenerationConfig | None = None,
        *,
        scheduler: MaskedDiffusionScheduler | None = None,
        generator: torch.Generator | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        streamer: Any | None = None,
        tokenizer: Any | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor | MaskedDiffusionGenerationOutput:
        r"""
        Generate `max_new_tokens` tokens after each prompt by masked diffusion.

        The canvas (the prompt, then `max_new_tokens` masks) is decoded in blocks of `block_length` (one block when
        unset), left to right; each block gets `ceil(steps / num_blocks)` denoising steps, and each step commits the
        most confident proposals among the block's masks. Rows of a batch are independent: padding never changes a
        row's result.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`, *optional*):
                Prompts, padded on either side when their lengths differ. `None` (or zero columns) generates
                unconditionally.
            attention_mask (`torch.Tensor` of shape `(batch_size, prompt_length)`, *optional*):
                `1` for prompt tokens, `0` for padding. The tokens with mask 1, in order, form the prompt.
            generation_config ([`MaskedDiffusionGenerationConfig`], *optional*):
                Base parameters; defaults to `model.generation_config`. Keyword arguments override it; special ids it
                lacks come from `tokenizer`, then from the model.
            scheduler ([`MaskedDiffusionScheduler`], *optional*):
                Unmasking policy. When given, its configuration decides `schedule`, `remasking`,
                `stochastic_transfer` and `confidence_threshold`; otherwise it is built from the generation config.
            generator (`torch.Generator`, *optional*):
                Random source for sampling (`temperature > 0`), random remasking and stochastic transfer.
            callback_on_step_end (`Callable`, *optional*):
                Called after every step as `callback(model, step, timestep, callback_kwargs)`, diffusers style.
                `callback_kwargs` holds the names in `callback_on_step_end_tensor_inputs`: `sequences` (the canvas,
                shaped like the output), `committed` (positions committed at this step, same shape) and
                `block_index`. Returning `{"sequences": tensor}` replaces the canvas (masks in it are decoded again).
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*):
                Which of `sequences`, `committed`, `block_index` the callback receives (all by default).
            streamer (`BaseStreamer`, *optional*):
                Gets the prompt, a draft of the current block after every step (`put_draft`, as transformers'
                `TextDiffusionStreamer` expects) and every finished block (`put`).
            tokenizer (`PreTrainedTokenizerBase`, *optional*):
                Supplies the special token ids that the generation config lacks (the mask id above all).
            kwargs:
                Any [`MaskedDiffusionGenerationConfig`] attribute, e.g. `steps=64, temperature=0.1`.

        Returns:
            `torch.LongTensor` of shape `(batch_size, prompt_length + max_new_tokens)` (the prompts followed by the new
            tokens), or a [`MaskedDiffusionGenerationOutput`] when `return_dict_in_generate=True` or
            `output_history=True`.

        Example:

        ```python
        >>> import torch
        >>> from transformers import ModernBertConfig
        >>> from transformers_mdlm import AutoModelForMaskedDiffusion

        >>> config = ModernBertConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        ...     num_attention_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=2, cls_token_id=2, sep_token_id=1)
        >>> model = AutoModelForMaskedDiffusion.from_config(config)
        >>> model.generation_config.mask_token_id = 4
        >>> out = model.generate(torch.tensor([[10, 11, 12]]), max_new_tokens=8, steps=4, block_length=4)
        >>> out.shape
        torch.Size([1, 11])

        ```
        """
        check_generator(generator)
        check_streamer(streamer)
        config = self._prepare_generation_config(
            generation_config, tokenizer, with_scheduler_settings(scheduler, kwargs)
        )
        if config.min_new_tokens and config.eos_token_id is None:
            raise ValueError(
                f"`min_new_tokens={config.min_new_tokens}` bans EOS early, but there is no `eos_token_id`: pass "
                "`eos_token_id=` (or `tokenizer=` with an EOS token), or leave `min_new_tokens` unset."
            )
        if config.stop_on_eos and config.eos_token_id is None:  # it would never stop: a setting silently ignored
            raise ValueError(
                "`stop_on_eos=True` stops a row at its first new EOS, but there is no `eos_token_id`: pass "
                "`eos_token_id=` (or `tokenizer=` with an EOS token), or `stop_on_eos=False`."
            )
        scheduler = resolve_scheduler(scheduler, config)
        hooks = self._step_hooks(config, callback_on_step_end, callback_on_step_end_tensor_inputs, streamer)
        stop_strings = StopStringMatcher(tokenizer, config.stop_strings) if config.stop_strings else None
        input_ids, attention_mask = self._check_prompt(input_ids, attention_mask, config)
        input_ids, attention_mask = _repeat_rows(input_ids, attention_mask, config.num_return_sequences)
        max_new_tokens = resolve_max_new_tokens(config, input_ids.shape[1])
        longest = int(attention_mask.sum(dim=1).max()) + max_new_tokens
        check_length(
            longest, self.max_sequence_length(), f"The longest prompt plus `max_new_tokens` ({max_new_tokens})"
        )
        canvas = generation_canvas(input_ids, attention_mask, max_new_tokens, config, self.padding_id(config))
        if streamer is not None:
            streamer.put(input_ids.cpu())
        return self._decode(canvas, config, scheduler, hooks, generator, stop_strings)

    @torch.inference_mode()
    def infill(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        generation_config: MaskedDiffusionGenerationConfig | None = None,
        *,
        scheduler: MaskedDiffusionScheduler | None = None,
        generator: torch.Generator | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        tokenizer: Any | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor | MaskedDiffusionGenerationOutput:
        r"""
        Fill every mask token of `input_ids`, wherever it stands.

        The same loop as [`generate`], but no tokens are added: blocks of `block_length` (one block when unset) tile
        each row from its first token, and each block's masks get `ceil(steps / num_blocks)` steps. As in the
        reference implementation, EOS tokens inside the input are not attended to. `max_new_tokens`,
        `min_new_tokens`, `stop_on_eos` and `stop_strings` do not apply (every mask is filled, whatever the text
        holds).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, length)`):
                Text with mask tokens to fill; padded rows need an `attention_mask`.
            attention_mask (`torch.Tensor`, *optional*):
                `1` for tokens, `0` for padding (either side).
            generation_config ([`MaskedDiffusionGenerationConfig`], *optional*):
                Base parameters, as in [`generate`].
            scheduler ([`MaskedDiffusionScheduler`], *optional*):
                Unmasking policy, as in [`generate`].
            generator (`torch.Generator`, *optional*):
                Random source, as in [`generate`].
            callback_on_step_end (`Callable`, *optional*), callback_on_step_end_tensor_inputs (`list[str]`, *optional*):
                Per-step hook, as in [`generate`].
            tokenizer (`PreTrainedTokenizerBase`, *optional*):
                Supplies missing special token ids.
            kwargs:
                Any [`MaskedDiffusionGenerationConfig`] attribute.

        Returns:
            `torch.LongTensor` shaped like `input_ids` with the masks filled, or a
            [`MaskedDiffusionGenerationOutput`].

        Example:

        ```python
        >>> import torch
        >>> from transformers import BertConfig
        >>> from transformers_mdlm import AutoModelForMaskedDiffusion

        >>> config = BertConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        ...     num_attention_heads=2)
        >>> model = AutoModelForMaskedDiffusion.from_config(config)
        >>> filled = model.infill(torch.tensor([[10, 4, 4, 13]]), mask_token_id=4, steps=2)
        >>> bool((filled == 4).any())
        False

        ```
        """
        for name in ("max_new_tokens", "min_new_tokens"):
            if kwargs.get(name) is not None:
                logger.warning("`infill` adds no tokens: `%s` does not apply and is ignored.", name)
        for name in ("stop_on_eos", "stop_strings"):
            if kwargs.get(name):
                logger.warning("`infill` fills every mask: `%s` does not apply and is ignored.", name)
        check_generator(generator)
        config = self._prepare_generation_config(
            generation_config, tokenizer, with_scheduler_settings(scheduler, kwargs)
        )
        scheduler = resolve_scheduler(scheduler, config)
        hooks = self._step_hooks(config, callback_on_step_end, callback_on_step_end_tensor_inputs, None)
        input_ids, attention_mask = self._check_prompt(input_ids, attention_mask, config)
        if not bool(((input_ids == config.mask_token_id) & attention_mask.bool()).any()):
            raise ValueError(
                f"Nothing to fill: `input_ids` holds no mask token (id {config.mask_token_id}). Insert the tokenizer's "
                "mask token where text should be filled in, or use `generate` to continue a prompt."
            )
        check_length(int(attention_mask.sum(dim=1).max()), self.max_sequence_length(), "The input")
        input_ids, attention_mask = _repeat_rows(input_ids, attention_mask, config.num_return_sequences)
        canvas = infilling_canvas(input_ids, attention_mask, config, self.padding_id(config))
        return self._decode(canvas, config, scheduler, hooks, generator)

    # ------------------------------------------------------------------ steps of a call

    def _prepare_generation_config(
        self, generation_config: MaskedDiffusionGenerationConfig | None, tokenizer: Any | None, kwargs: dict[str, Any]
    ) -> MaskedDiffusionGenerationConfig:
        # `model.generate(**tokenizer(text, return_tensors="pt"))` passes a BERT tokenizer's segment ids too.
        token_type_ids = kwargs.pop("token_type_ids", None)
        if token_type_ids is not None and bool((torch.as_tensor(token_type_ids) != 0).any()):
            raise ValueError("`token_type_ids` other than 0 have no place in masked diffusion decoding; drop them.")
        base = generation_config if generation_config is not None else self.generation_config
        return prepare_generation_config(
            base,
            kwargs,
            special_id_sources=(tokenizer, self.generation_config, self.config),
            model_defaults=self.generation_config,
            vocab_size=getattr(self.config, "vocab_size", None),
        )

    def _check_prompt(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None,
        config: MaskedDiffusionGenerationConfig,
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        return check_prompt(
            input_ids,
            attention_mask,
            device=self.device,
            vocab_size=getattr(self.config, "vocab_size", None),
            pad_token_id=config.pad_token_id,
            eos_token_id=config.eos_token_id,
        )

    @staticmethod
    def _step_hooks(
        config: MaskedDiffusionGenerationConfig,
        callback: StepCallback | None,
        tensor_inputs: list[str] | None,
        streamer: Any | None,
    ) -> StepHooks:
        names = check_callback_inputs(callback, tensor_inputs)
        return StepHooks(config.output_history, streamer, callback, names)

    def _decode(
        self,
        canvas: Canvas,
        config: MaskedDiffusionGenerationConfig,
        scheduler: MaskedDiffusionScheduler,
        hooks: StepHooks,
        generator: torch.Generator | None,
        stop_strings: StopStringMatcher | None = None,
    ) -> torch.LongTensor | MaskedDiffusionGenerationOutput:
        """Run the loop inside the contexts decoding needs (the dual cache's attention, oneDNN linears on a CPU)."""
        cache = DualCache() if config.kv_cache == "dual" else None
        with ExitStack() as stack:
            if cache is not None:
                stack.enter_context(dual_cache_attention_enabled(self))
            # On a CPU: oneDNN's linear kernel for float32, packed weights for bfloat16 (the head packed for about the
            # rows a step scores, the encoder's linears for the canvas; hints only, read from shapes so that no device
            # sync is needed). A compiled step is left to the compiler (inductor cannot lower the mode's oneDNN call).
            rows = canvas.tokens.shape[0] * (config.block_length or canvas.tokens.shape[1])
            compiled_step = config.compile_config is not None
            if compiled_step and torch.are_deterministic_algorithms_enabled():
                logger.warning_once(
                    "`compile_config` hands the decoding step to the compiler, whose kernels round differently from "
                    "PyTorch's: under `torch.use_deterministic_algorithms(True)` the tokens may still differ from "
                    "plain decoding (in bfloat16 they did; see docs/generation.md). Leave `compile_config` unset for "
                    "exact decoding."
                )
            stack.enter_context(
                onednn_linear_mode(
                    self,
                    steps=config.steps,
                    rows=rows,
                    encoder_rows=canvas.tokens.numel(),
                    compiled_step=compiled_step,
                )
            )
            result = denoise(
                self,
                canvas,
                config,
                scheduler,
                hooks=hooks,
                generator=generator,
                cache=cache,
                stop_strings=stop_strings,
            )
        sequences = canvas.to_output(result.tokens)
        if canvas.new_tokens:  # finished rows are padded after their EOS, as transformers does
            # With the generation config's pad id (the call's wins, as in transformers), not the model's layout id.
            sequences = pad_after_eos(
                sequences, canvas.input_ids.shape[1], config.eos_token_id, output_padding_id(config)
            )
        if not config.return_dict_in_generate:
            return sequences
        history = tuple(result.history) if result.history is not None else None
        return MaskedDiffusionGenerationOutput(sequences=sequences, nfe=result.nfe, history=history)


def _repeat_rows(
    input_ids: torch.LongTensor, attention_mask: torch.LongTensor, count: int
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Each row `count` times in a row, as transformers expands inputs for `num_return_sequences`: the outputs of
    input `i` are rows `i * count ... i * count + count - 1`."""
    if count == 1:
        return input_ids, attention_mask
    return input_ids.repeat_interleave(count, dim=0), attention_mask.repeat_interleave(count, dim=0)


__all__ = ["MaskedDiffusionGenerationMixin"]
