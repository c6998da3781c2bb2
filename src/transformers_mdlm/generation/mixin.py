"""`MaskedDiffusionGenerationMixin`: `generate` and `infill` for any masked-LM `PreTrainedModel`."""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from transformers import AutoTokenizer
from transformers.modeling_outputs import MaskedLMOutput
from transformers.utils import logging

from ..hub import recommended_generation_settings
from .configuration import MaskedDiffusionGenerationConfig
from .outputs import MaskedDiffusionGenerationOutput
from .sampling import Canvas, StepCallback, denoise
from .scheduling import MaskedDiffusionScheduler

logger = logging.get_logger(__name__)

_SPECIAL_TOKENS = ("mask_token_id", "pad_token_id", "bos_token_id", "eos_token_id")


class MaskedDiffusionGenerationMixin:
    """
    Adds masked diffusion decoding to a masked language model.

    A class combining this mixin with a transformers masked-LM class (see `AutoModelForMaskedDiffusion`) keeps every
    `PreTrainedModel` feature and gains [`generate`] and [`infill`]. Its `generation_config` is a
    [`MaskedDiffusionGenerationConfig`], loaded from and saved to `generation_config.json`.

    Subclasses implement [`compute_logits`] (the output head on given hidden states) and, when the position limit is
    not `config.max_position_embeddings`, [`max_sequence_length`].
    """

    generation_config_class = MaskedDiffusionGenerationConfig
    #: Whether `kv_cache="dual"` may be used: the encoder goes through transformers' attention interface and takes the
    #: canvas columns as `position_ids` (see `generation.dual_cache`).
    supports_dual_cache: bool = False

    # ------------------------------------------------------------------ model hooks

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

    # ------------------------------------------------------------------ public API

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
        streamer: Any | None = None,
        tokenizer: Any | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor | MaskedDiffusionGenerationOutput:
        r"""
        Generate `max_new_tokens` tokens after each prompt by masked diffusion.

        The canvas (the prompt, then `max_new_tokens` masks) is decoded in blocks of `block_length`, left to right; each
        block gets `ceil(steps / num_blocks)` denoising steps, and each step commits the most confident proposals among
        the block's masks. Rows of a batch are independent: padding never changes a row's result.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`, *optional*):
                Prompts, left-padded when their lengths differ. `None` (or zero columns) generates unconditionally.
            attention_mask (`torch.Tensor` of shape `(batch_size, prompt_length)`, *optional*):
                `1` for prompt tokens, `0` for padding. Padding may sit on either side; the tokens with mask 1, in order,
                form the prompt.
            generation_config ([`MaskedDiffusionGenerationConfig`], *optional*):
                Base parameters; defaults to `model.generation_config`. Keyword arguments override it.
            scheduler ([`MaskedDiffusionScheduler`], *optional*):
                Unmasking policy. When given, its configuration decides `schedule`, `remasking`,
                `stochastic_transfer` and `confidence_threshold`; otherwise it is built from the generation config.
            generator (`torch.Generator`, *optional*):
                Random source for sampling (`temperature > 0`), random remasking and stochastic transfer.
            callback_on_step_end (`Callable`, *optional*):
                Called after every step as `callback(model, step, timestep, callback_kwargs)`, diffusers style, with
                `callback_kwargs` holding `sequences` (the canvas, shaped like the output), `committed` (positions
                committed at this step) and `block_index`. Its return value is ignored.
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
        config = self._prepare_masked_diffusion_config(generation_config, tokenizer, kwargs)
        input_ids, attention_mask = self._check_prompt(input_ids, attention_mask)
        max_new_tokens = config.max_new_tokens
        if max_new_tokens is None:
            max_new_tokens = config.max_length - input_ids.shape[1] if config.max_length is not None else 0
        if max_new_tokens <= 0:
            raise ValueError(
                f"Nothing to generate: `max_new_tokens` must be >= 1 (got {config.max_new_tokens}, "
                f"max_length={config.max_length}, prompt length {input_ids.shape[1]})."
            )
        canvas = self._generation_canvas(input_ids, attention_mask, max_new_tokens, config)
        if streamer is not None:
            streamer.put(input_ids.cpu())
        return self._run(canvas, config, scheduler, generator, callback_on_step_end, streamer)

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
        tokenizer: Any | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor | MaskedDiffusionGenerationOutput:
        r"""
        Fill every mask token of `input_ids`, wherever it stands.

        The same loop as [`generate`], but no tokens are added: blocks of `block_length` tile each row from its first
        token, and each block's masks get `ceil(steps / num_blocks)` steps. As in the reference implementation, EOS
        tokens inside the input are not attended to. `max_new_tokens` is ignored.

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
            callback_on_step_end (`Callable`, *optional*):
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
        config = self._prepare_masked_diffusion_config(generation_config, tokenizer, kwargs)
        input_ids, attention_mask = self._check_prompt(input_ids, attention_mask)
        if not bool(((input_ids == config.mask_token_id) & attention_mask.bool()).any()):
            raise ValueError(
                f"Nothing to fill: `input_ids` holds no mask token (id {config.mask_token_id}). Insert the tokenizer's "
                "mask token where text should be filled in, or use `generate` to continue a prompt."
            )
        canvas = self._infilling_canvas(input_ids, attention_mask, config)
        return self._run(canvas, config, scheduler, generator, callback_on_step_end, None)

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
        import tempfile

        from huggingface_hub import HfApi

        from ..model_card import build_model_card

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
        checkpoint without `generation_config.json` (Diffutron's) gets its authors' recommended settings.
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
            try:
                loaded = self.generation_config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
            except OSError:
                recommended = recommended_generation_settings(str(pretrained_model_name_or_path))
                self.generation_config.update(**recommended)
                logger.info(
                    "No generation_config.json found; using the defaults, the model's special ids"
                    + (f" and the recommended settings {recommended}." if recommended else ".")
                )
            else:
                loaded.update(
                    defaults_only=True,
                    **{name: getattr(self.generation_config, name) for name in _SPECIAL_TOKENS},
                )
                self.generation_config = loaded
        if self.generation_config.mask_token_id is None and pretrained_model_name_or_path is not None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
            except (OSError, ValueError) as error:
                logger.info(f"No tokenizer next to the weights ({error}); set `generation_config.mask_token_id`.")
            else:
                _fill_special_ids(self.generation_config, tokenizer)

    # ------------------------------------------------------------------ internals

    def _prepare_masked_diffusion_config(
        self,
        generation_config: MaskedDiffusionGenerationConfig | None,
        tokenizer: Any | None,
        kwargs: dict[str, Any],
    ) -> MaskedDiffusionGenerationConfig:
        base = generation_config if generation_config is not None else self.generation_config
        if base is None:
            base = MaskedDiffusionGenerationConfig()
        if not isinstance(base, MaskedDiffusionGenerationConfig):
            raise TypeError(
                f"`generation_config` must be a MaskedDiffusionGenerationConfig, got {type(base).__name__}. Build one "
                "with `MaskedDiffusionGenerationConfig(**config.to_diff_dict())` if you hold a plain GenerationConfig."
            )
        config = base.with_overrides(**kwargs)
        if tokenizer is not None:
            config = copy.deepcopy(config)
            _fill_special_ids(config, tokenizer)
        if config.mask_token_id is None:
            raise ValueError(
                "No mask token id: masked diffusion needs one. Pass `tokenizer=` (one with a mask token), "
                "`mask_token_id=`, or set `model.generation_config.mask_token_id`."
            )
        vocab_size = getattr(self.config, "vocab_size", None)
        if vocab_size is not None and config.mask_token_id >= vocab_size:
            raise ValueError(
                f"`mask_token_id` ({config.mask_token_id}) must be < the model's vocab_size ({vocab_size})."
            )
        return config

    def _check_prompt(
        self, input_ids: torch.LongTensor | None, attention_mask: torch.Tensor | None
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        device = self.device
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
            attention_mask = torch.ones_like(input_ids)
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
        vocab_size = getattr(self.config, "vocab_size", None)
        real_ids = input_ids[attention_mask.bool()]
        if real_ids.numel() and (
            int(real_ids.min()) < 0 or (vocab_size is not None and int(real_ids.max()) >= vocab_size)
        ):
            raise ValueError(f"`input_ids` must be token ids in [0, {vocab_size}).")
        return input_ids, attention_mask

    def _check_length(self, width: int, what: str) -> None:
        limit = self.max_sequence_length()
        if limit is not None and width > limit:
            raise ValueError(
                f"{what} is {width} tokens, more than the model's {limit} positions. Shorten the prompt or lower "
                "`max_new_tokens`."
            )

    def _generation_canvas(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor,
        max_new_tokens: int,
        config: MaskedDiffusionGenerationConfig,
    ) -> Canvas:
        prompt_lengths = attention_mask.sum(dim=1)
        width = int(prompt_lengths.max()) + max_new_tokens
        self._check_length(width, f"The longest prompt plus `max_new_tokens` ({max_new_tokens})")
        tokens, _ = _left_align(input_ids, attention_mask, width, self._padding_id(config))
        columns = torch.arange(width, device=input_ids.device)
        in_prompt = columns < prompt_lengths[:, None]
        real = columns < (prompt_lengths[:, None] + max_new_tokens)
        tokens = torch.where(real & ~in_prompt, torch.full_like(tokens, config.mask_token_id), tokens)
        new_index = prompt_lengths[:, None] + torch.arange(max_new_tokens, device=input_ids.device)
        keep = attention_mask.bool()
        prompt_has_masks = bool((tokens[in_prompt] == config.mask_token_id).any())

        def to_output(x: torch.LongTensor) -> torch.LongTensor:
            prompt = input_ids
            if prompt_has_masks:  # masks inside a prompt are decoded too
                prompt = input_ids.clone()
                prompt[keep] = x[in_prompt]
            return torch.cat([prompt, x.gather(1, new_index)], dim=1)

        return Canvas(
            tokens=tokens,
            real=real,
            attend=real,
            given=in_prompt & _is_given(tokens, config),
            region_start=prompt_lengths,
            region_length=torch.full_like(prompt_lengths, max_new_tokens),
            candidates_from_start=True,
            to_output=to_output,
        )

    def _infilling_canvas(
        self, input_ids: torch.LongTensor, attention_mask: torch.LongTensor, config: MaskedDiffusionGenerationConfig
    ) -> Canvas:
        lengths = attention_mask.sum(dim=1)
        width = int(lengths.max())
        self._check_length(width, "The input")
        tokens, real = _left_align(input_ids, attention_mask, width, self._padding_id(config))
        keep = attention_mask.bool()

        def to_output(x: torch.LongTensor) -> torch.LongTensor:
            out = input_ids.clone()
            out[keep] = x[real]
            return out

        not_eos = tokens != config.eos_token_id if config.eos_token_id is not None else torch.ones_like(real)
        return Canvas(
            tokens=tokens,
            real=real,
            attend=real & not_eos,
            given=real & _is_given(tokens, config),
            region_start=torch.zeros_like(lengths),
            region_length=lengths,
            candidates_from_start=False,
            to_output=to_output,
        )

    def _padding_id(self, config: MaskedDiffusionGenerationConfig) -> int:
        # RoBERTa derives positions from the pad id, so right padding must use the model's own.
        for candidate in (getattr(self.config, "pad_token_id", None), config.pad_token_id, config.eos_token_id):
            if isinstance(candidate, int):
                return candidate
        return 0

    def _run(
        self,
        canvas: Canvas,
        config: MaskedDiffusionGenerationConfig,
        scheduler: MaskedDiffusionScheduler | None,
        generator: torch.Generator | None,
        callback_on_step_end: StepCallback | None,
        streamer: Any | None,
    ) -> torch.LongTensor | MaskedDiffusionGenerationOutput:
        if scheduler is None:
            scheduler = MaskedDiffusionScheduler.from_generation_config(config)
        elif not isinstance(scheduler, MaskedDiffusionScheduler):
            raise TypeError(f"`scheduler` must be a MaskedDiffusionScheduler, got {type(scheduler).__name__}.")
        tokens, nfe, history = denoise(
            self,
            canvas,
            config,
            scheduler,
            generator=generator,
            callback_on_step_end=callback_on_step_end,
            streamer=streamer,
        )
        sequences = canvas.to_output(tokens)
        if not config.return_dict_in_generate:
            return sequences
        return MaskedDiffusionGenerationOutput(
            sequences=sequences, nfe=nfe, history=tuple(history) if history is not None else None
        )


def _left_align(
    input_ids: torch.LongTensor, attention_mask: torch.LongTensor, width: int, pad_id: int
) -> tuple[torch.LongTensor, torch.BoolTensor]:
    """Move each row's tokens (mask 1) to the front, in order, into a `(batch, width)` tensor padded with `pad_id`."""
    keep = attention_mask.bool()
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    lengths = keep.sum(dim=1)
    tokens = torch.full((input_ids.shape[0], width), pad_id, dtype=torch.long, device=input_ids.device)
    span = min(width, input_ids.shape[1])
    tokens[:, :span] = input_ids.gather(1, order)[:, :span]
    real = torch.arange(width, device=input_ids.device)[None, :] < lengths[:, None]
    tokens = torch.where(real, tokens, torch.full_like(tokens, pad_id))
    return tokens, real


def _is_given(tokens: torch.LongTensor, config: MaskedDiffusionGenerationConfig) -> torch.BoolTensor:
    """Tokens the unconditional pass of guidance hides: everything but masks and EOS (as the reference does)."""
    given = tokens != config.mask_token_id
    if config.eos_token_id is not None:
        given &= tokens != config.eos_token_id
    return given


def _fill_special_ids(config: MaskedDiffusionGenerationConfig, tokenizer: Any) -> None:
    for name in _SPECIAL_TOKENS:
        value = getattr(tokenizer, name, None)
        if getattr(config, name) is None and isinstance(value, int):
            setattr(config, name, value)
