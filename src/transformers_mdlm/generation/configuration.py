"""`MaskedDiffusionGenerationConfig`: every knob of masked diffusion decoding, saved as `generation_config.json`."""

from __future__ import annotations

import copy
from typing import Any

from transformers import CompileConfig, GenerationConfig
from transformers.utils import logging

from ..validation import check_bool, check_choice, check_int, check_number

logger = logging.get_logger(__name__)

#: Confidence rules that decide which masked positions a step commits (see `logits.confidence_scores`).
REMASKING_STRATEGIES = ("low_confidence", "random", "margin", "entropy")
#: Noise schedules `alpha(t)`.
ALPHA_SCHEDULES = ("linear", "cosine")
#: Approximate key/value caches for decoding.
KV_CACHES = ("dual",)
#: The special token ids a generation config carries, filled from the tokenizer or the model config when unset.
SPECIAL_TOKEN_ATTRIBUTES = ("mask_token_id", "pad_token_id", "bos_token_id", "eos_token_id")


def check_threshold_remasking(remasking: Any, confidence_threshold: Any) -> None:
    """Refuse `confidence_threshold` with `"entropy"` remasking: that score (negative entropy) is <= 0, so a
    threshold in (0, 1] would never be exceeded and decoding would silently fall back to one token per step."""
    if confidence_threshold is not None and remasking == "entropy":
        raise ValueError(
            f"`confidence_threshold={confidence_threshold}` cannot be combined with `remasking='entropy'`: its score "
            "(negative entropy) is never above 0, so no position would pass the threshold. Use "
            "`remasking='low_confidence'` or `'margin'` with a threshold, or `confidence_threshold=None`."
        )


def _as_string_list(value: Any) -> Any:
    """`stop_strings` given as one string, as transformers takes it, as a list; anything else is left to `validate`."""
    return [value] if isinstance(value, str) else value


class MaskedDiffusionGenerationConfig(GenerationConfig):
    r"""
    Configuration of [`MaskedDiffusionGenerationMixin.generate`] and [`MaskedDiffusionGenerationMixin.infill`].

    It is a [`transformers.GenerationConfig`]: it is saved as `generation_config.json` next to the weights, loaded by
    `from_pretrained`, and any attribute can be overridden by a keyword argument of `generate`. Only the parameters that
    mean something for masked diffusion decoding are kept; the autoregressive ones (beams, caches, ...) are left out.

    The defaults are plain masked diffusion decoding: 128 new tokens in 128 steps, one block per call, greedy,
    low-confidence remasking, no repetition penalty, no guidance. A model's recommended settings live in its own
    `generation_config.json`; Diffutron checkpoints without one get their authors' recommendation as a preset (see
    `transformers_mdlm.presets`).

    Decoding starts from a canvas of `max_new_tokens` mask tokens after the prompt, split into blocks of `block_length`
    tokens that are decoded left to right. Each block gets `ceil(steps / num_blocks)` denoising steps; each step runs the
    model once and commits some of the block's masked positions (how many: the `schedule`; which: `remasking`).
    Every value is checked when the config is built or overridden: a bad one raises a `ValueError`/`TypeError` that
    names the parameter and what it allows.

    Args:
        max_new_tokens (`int`, *optional*, defaults to 128):
            Number of tokens to generate after the prompt (the size of the masked canvas); 128 when neither it nor
            `max_length` is given.
        max_length (`int`, *optional*):
            Total length (prompt + new tokens); used only when `max_new_tokens` is `None` (given alone, it decides).
        min_new_tokens (`int`, *optional*):
            transformers' setting: EOS (`eos_token_id`) may not be proposed in the first `min_new_tokens` positions
            after the prompt, so an answer ends no earlier. The positions after them may take EOS; with
            `suppress_tokens=[eos_token_id]` none may. Decoding is not left to right, so the ban is by position, not by
            how many tokens were committed so far. Needs `eos_token_id`; not used by `infill`. `None` or `0` is off.
        steps (`int`, *optional*, defaults to 128):
            Total number of denoising steps over all blocks. Each block gets `ceil(steps / num_blocks)`; steps that would
            commit no token are skipped, so a block never takes more forward passes than it has masks.
        block_length (`int`, *optional*):
            Length of the semi-autoregressive blocks. `None` (or `block_length >= max_new_tokens`) decodes the canvas
            as one block.
        temperature (`float`, *optional*, defaults to 0.0):
            `0` is greedy decoding (the argmax at every position). Above `0`, proposals are sampled with the Gumbel-max
            trick in float64 from `softmax(logits / temperature)`.
        top_k (`int`, *optional*):
            Keep only the `top_k` most likely tokens when sampling (`None` or `0` = off).
        top_p (`float`, *optional*):
            Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`, in `(0, 1]`.
        remasking (`str`, *optional*, defaults to `"low_confidence"`):
            Which masked positions are committed at each step, by a confidence score: `"low_confidence"` (probability
            of the proposal; the reference), `"random"` (uniform noise), `"margin"` (top-1 minus top-2 probability) or
            `"entropy"` (negative entropy of the predictive distribution).
        schedule (`str`, *optional*, defaults to `"linear"`):
            Noise schedule that sets how many tokens each step commits: `"linear"` (the reference) or `"cosine"`.
        stochastic_transfer (`bool`, *optional*, defaults to `False`):
            Draw the number of tokens committed per step from a binomial distribution instead of rounding its mean.
        confidence_threshold (`float`, *optional*):
            `None` follows the fixed schedule. A value in `(0, 1]` switches to confidence-threshold parallel decoding
            (Fast-dLLM): every masked position of the block whose confidence exceeds it is committed, and at least one
            per step.
        repetition_penalty (`float`, *optional*, defaults to 1.0):
            Diffutron's penalty (1.2 in its authors' sampler): logits of every token id already present in the row (prompt
            included, mask and EOS excluded) are divided by it where positive and multiplied by it where negative, at
            every position. `1.0` is off.
        no_repeat_ngram_size (`int`, *optional*, defaults to 0):
            transformers' switch: above `0`, no n-gram of this many tokens occurs twice in a row's canvas (prompt
            included). Each step sets to `-inf` the logits of tokens that would complete, at any place of the n-gram,
            one already there; positions committed in the same step do not see each other, so the guarantee is
            exact with one token per step (see `logits.ban_repeated_ngrams`). `0` is off.
        suppress_tokens (`list[int]`, *optional*):
            Token ids that are never proposed (their logits are set to `-inf`), e.g. the mask id itself, which the
            reference leaves free: a random or poorly trained model may then "commit" a mask.
        cfg_scale (`float`, *optional*, defaults to 0.0):
            Classifier-free guidance: with `cfg_scale > 0` an unconditional pass with the prompt masked runs alongside,
            and `logits = uncond + (cfg_scale + 1) * (cond - uncond)`.
        do_sample (`bool`, *optional*):
            transformers' switch: `False` decodes greedily whatever `temperature` says; `True` samples at
            `temperature` (1.0 when `temperature` is 0). `None` (the default) lets `temperature` decide.
        num_return_sequences (`int`, *optional*, defaults to 1):
            Answers per prompt: each prompt is repeated this many times (rows `i * n ... i * n + n - 1` of the output
            belong to prompt `i`, as in transformers). Needs sampling, or random remasking (or
            `stochastic_transfer`): fully greedy decoding would repeat one answer, so it raises a `ValueError`, as
            transformers does for greedy decoding.
        stop_strings (`list[str]`, *optional*):
            A row stops once its committed new text (up to its first mask) contains one of these strings, checked
            after every step: the tokens after the one that completes it, and its remaining masks, become padding, and
            the row takes no more forward passes, even in the middle of a block. Committed tokens never change, so the
            answer up to the stop is the one decoded without it. Needs the tokenizer (`generate(...,
            tokenizer=tokenizer)`; the pipeline passes its own).
        stop_on_eos (`bool`, *optional*, defaults to `False`):
            Stop decoding a row once an EOS token is committed with no mask before it: the remaining masks become
            `pad_token_id` (or EOS when there is no pad token) and the row takes no more forward passes.
        kv_cache (`str`, *optional*):
            `None` (exact) or `"dual"`: Fast-dLLM's approximate dual cache. The first step of each block runs the
            encoder over the whole canvas and keeps every layer's keys and values; the block's other steps recompute
            only the block's positions, attending to the kept states elsewhere. Faster when the canvas outside the
            block is long; changes tokens (see the performance page of the docs for its measured effect).
        static_shapes (`bool`, *optional*, defaults to `False`):
            Run every step over the whole batch (finished rows included) and the head over a fixed number of positions
            per block (the block's width), so that the step's tensors keep one shape per block, as CUDA graphs and
            `torch.compile(mode="reduce-overhead")` need. Greedy tokens equal the default path's; sampled tokens are
            drawn from the same distributions but with different random numbers (the noise has another shape).
        compile_config (`transformers.CompileConfig`, *optional*):
            transformers' compilation settings: the step's model call (encoder and head) is wrapped with
            `torch.compile(**compile_config.to_dict())` once per setting. Implies `static_shapes=True`; not combined
            with `kv_cache="dual"`. Not saved with the config (as transformers). The compiler's kernels round
            differently from PyTorch's: float32 tokens matched eager decoding in our GPU runs, bfloat16 tokens did
            not (GPU and CPU), so a compiled step is outside the exactness guarantee of the deterministic switch.
        output_history (`bool`, *optional*, defaults to `False`):
            Return the canvas after every step (implies `return_dict_in_generate=True`).
        return_dict_in_generate (`bool`, *optional*, defaults to `False`):
            Return a [`MaskedDiffusionGenerationOutput`] instead of a tensor of token ids.
        mask_token_id (`int`, *optional*):
            Id of the mask token. Filled from the tokenizer when the model is loaded with `from_pretrained`.
        pad_token_id (`int`, *optional*), bos_token_id (`int`, *optional*), eos_token_id (`int`, *optional*):
            Special token ids. `eos_token_id` is excluded from the repetition penalty and ends a row with `stop_on_eos`.

    Example:

    ```python
    >>> from transformers_mdlm import MaskedDiffusionGenerationConfig

    >>> config = MaskedDiffusionGenerationConfig(max_new_tokens=64, steps=64, block_length=32, mask_token_id=4)
    >>> config.with_overrides(temperature=0.1).temperature
    0.1
    >>> MaskedDiffusionGenerationConfig(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: `steps` must be an integer >= 1, got 0.

    ```
    """

    def __init__(
        self,
        *,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        min_new_tokens: int | None = None,
        steps: int = 128,
        block_length: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        remasking: str = "low_confidence",
        schedule: str = "linear",
        stochastic_transfer: bool = False,
        confidence_threshold: float | None = None,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        suppress_tokens: list[int] | None = None,
        cfg_scale: float = 0.0,
        do_sample: bool | None = None,
        num_return_sequences: int = 1,
        stop_strings: list[str] | str | None = None,
        stop_on_eos: bool = False,
        kv_cache: str | None = None,
        static_shapes: bool = False,
        compile_config: CompileConfig | None = None,
        output_history: bool = False,
        return_dict_in_generate: bool = False,
        mask_token_id: int | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        # Like transformers' own diffusion generation config, the parent's `__init__` is not called on purpose: most of
        # its attributes (beams, caches, assistants) have no meaning here.
        # 128 new tokens unless a length is given: `max_length` alone decides the length, as in transformers (whose
        # `max_new_tokens` default is None); given both, `max_new_tokens` wins.
        self.max_new_tokens = 128 if max_new_tokens is None and max_length is None else max_new_tokens
        self.max_length = max_length
        self.min_new_tokens = min_new_tokens
        self.steps = steps
        self.block_length = block_length
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.remasking = remasking
        self.schedule = schedule
        self.stochastic_transfer = stochastic_transfer
        self.confidence_threshold = confidence_threshold
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.suppress_tokens = suppress_tokens
        self.cfg_scale = cfg_scale
        self.do_sample = do_sample
        self.num_return_sequences = num_return_sequences
        self.stop_strings = _as_string_list(stop_strings)
        self.stop_on_eos = stop_on_eos
        self.kv_cache = kv_cache
        self.static_shapes = static_shapes
        self.compile_config = compile_config
        self.output_history = output_history
        self.return_dict_in_generate = return_dict_in_generate
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id

        # Metadata that transformers writes into generation_config.json.
        kwargs.pop("_commit_hash", None)
        self._from_model_config: bool | None = kwargs.pop("_from_model_config", None)
        self.transformers_version: str | None = kwargs.pop("transformers_version", None)
        if kwargs:
            unknown = ", ".join(sorted(kwargs))
            raise TypeError(
                f"Unknown masked diffusion generation parameter(s): {unknown}. "
                f"Known parameters: {', '.join(self.parameter_names())}."
            )
        self.validate()

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """Names of the parameters that `generate(**kwargs)` may override."""
        return tuple(name for name in vars(cls()) if not name.startswith("_") and name != "transformers_version")

    def validate(self, strict: bool = False, user_set_attributes: set[str] | None = None) -> None:
        """Raise a `ValueError` (or `TypeError`) naming the first parameter whose value is out of its allowed range."""
        check_int("max_new_tokens", self.max_new_tokens, minimum=0, optional=True)
        check_int("max_length", self.max_length, minimum=1, optional=True)
        check_int("min_new_tokens", self.min_new_tokens, minimum=0, optional=True)
        check_int("steps", self.steps, minimum=1)
        check_int("block_length", self.block_length, minimum=1, optional=True)
        check_number("temperature", self.temperature, "a finite number >= 0", lambda v: v >= 0)
        check_int("top_k", self.top_k, minimum=0, optional=True)
        check_number("top_p", self.top_p, "a number in (0, 1]", lambda v: 0 < v <= 1, optional=True)
        check_choice("remasking", self.remasking, REMASKING_STRATEGIES)
        check_choice("schedule", self.schedule, ALPHA_SCHEDULES)
        check_bool("stochastic_transfer", self.stochastic_transfer)
        check_number(
            "confidence_threshold",
            self.confidence_threshold,
            "a number in (0, 1] or None",
            lambda v: 0 < v <= 1,
            optional=True,
        )
        check_threshold_remasking(self.remasking, self.confidence_threshold)
        check_number("repetition_penalty", self.repetition_penalty, "a finite number > 0", lambda v: v > 0)
        check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, minimum=0)
        if self.suppress_tokens is not None and (
            not isinstance(self.suppress_tokens, (list, tuple))
            or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.suppress_tokens)
        ):
            raise TypeError(
                f"`suppress_tokens` must be a list of token ids (ints >= 0) or None, got {self.suppress_tokens!r}."
            )
        check_number("cfg_scale", self.cfg_scale, "a finite number >= 0", lambda v: v >= 0)
        check_choice("kv_cache", self.kv_cache, KV_CACHES, optional=True)
        # Strictly a bool: `0 == False`, but `sampling_temperature` tests `is False`, so `0` would sample.
        check_bool("do_sample", self.do_sample, optional=True)
        check_int("num_return_sequences", self.num_return_sequences, minimum=1)
        if (
            self.num_return_sequences > 1
            and self.sampling_temperature == 0
            and self.remasking != "random"
            and not self.stochastic_transfer
        ):  # transformers refuses greedy decoding with several sequences too
            raise ValueError(
                f"`num_return_sequences={self.num_return_sequences}` with greedy decoding (temperature 0 or "
                f"`do_sample=False`) and {self.remasking!r} remasking would return identical answers; sample "
                "(`do_sample=True` or `temperature > 0`), or use `remasking='random'`."
            )
        if self.stop_strings is not None and (
            not isinstance(self.stop_strings, (list, tuple))
            or not all(isinstance(text, str) and text for text in self.stop_strings)
        ):
            raise TypeError(f"`stop_strings` must be a list of non-empty strings or None, got {self.stop_strings!r}.")
        if self.compile_config is not None:
            if not isinstance(self.compile_config, CompileConfig):
                raise TypeError(
                    f"`compile_config` must be a `transformers.CompileConfig` or None, got {type(self.compile_config)}."
                )
            if self.kv_cache is not None:
                raise ValueError("`compile_config` compiles the exact step; it cannot be combined with `kv_cache`.")
        for flag in ("stop_on_eos", "static_shapes", "output_history", "return_dict_in_generate"):
            check_bool(flag, getattr(self, flag))
        for name in SPECIAL_TOKEN_ATTRIBUTES:
            check_int(name, getattr(self, name), minimum=0, optional=True)

    @staticmethod
    def _get_default_generation_params() -> dict[str, Any]:
        return {}

    @classmethod
    def from_model_config(cls, model_config: Any) -> MaskedDiffusionGenerationConfig:
        """Build a config that takes the special token ids (pad, bos, eos, mask) of a model's configuration."""
        config_dict = model_config if isinstance(model_config, dict) else model_config.to_dict()
        token_ids = {
            name: config_dict[name] for name in SPECIAL_TOKEN_ATTRIBUTES if isinstance(config_dict.get(name), int)
        }
        config = cls(**token_ids)
        config._from_model_config = True
        return config

    def get_generation_mode(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Masked diffusion decoding has no autoregressive generation mode.")

    def update(self, defaults_only: bool = False, allow_custom_entries: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Set the given attributes (only the unset ones with `defaults_only=True`) and return the unknown ones."""
        unused = {}
        for key, value in kwargs.items():
            if key == "stop_strings":
                value = _as_string_list(value)
            if hasattr(self, key) and not key.startswith("_"):
                if not defaults_only or getattr(self, key) is None:
                    setattr(self, key, value)
            else:
                unused[key] = value
        self.validate()
        return unused

    def with_overrides(self, **kwargs: Any) -> MaskedDiffusionGenerationConfig:
        """A validated copy of this config with `kwargs` applied; an unknown name raises a `TypeError`.

        A `max_length` given here without `max_new_tokens` replaces this config's `max_new_tokens` (a saved default
        would otherwise take precedence and the call's length would be ignored; transformers keeps the default and
        only warns). Given both, `max_new_tokens` wins, as in transformers, with its warning.
        """
        if kwargs.get("max_length") is not None:
            if "max_new_tokens" not in kwargs:
                kwargs = {**kwargs, "max_new_tokens": None}
            elif kwargs["max_new_tokens"] is not None:
                logger.warning(
                    "Both `max_new_tokens` (=%s) and `max_length` (=%s) were given; `max_new_tokens` takes precedence.",
                    kwargs["max_new_tokens"], kwargs["max_length"],
                )  # fmt: skip
        config = copy.deepcopy(self)
        unknown = config.update(**kwargs)
        if unknown:
            raise TypeError(
                f"Unknown masked diffusion generation parameter(s): {', '.join(sorted(unknown))}. "
                f"Known parameters: {', '.join(self.parameter_names())}."
            )
        if config.output_history:
            config.return_dict_in_generate = True
        return config

    @property
    def sampling_temperature(self) -> float:
        """The temperature decoding uses: 0 (greedy) with `do_sample=False`, at least 1.0 with `do_sample=True`
        and a temperature of 0, else `temperature`."""
        if self.do_sample is False:
            return 0.0
        if self.do_sample and self.temperature == 0:
            return 1.0
        return float(self.temperature)

    @classmethod
    def from_generation_config(
        cls, config: GenerationConfig, defaults: GenerationConfig | None = None
    ) -> MaskedDiffusionGenerationConfig:
        """Convert a plain `transformers.GenerationConfig`, keeping the settings both share.

        Only the values the plain config sets (its `to_diff_dict()`) are read; the others come from `defaults` when it
        is a masked diffusion config (the model's saved generation config, as transformers' `generate` fills a passed
        config's unset values from it), else from this class's defaults. Settings that have no meaning for masked
        diffusion decoding (beams, caches, assistants, ...) raise a `TypeError` naming them, rather than being ignored.
        """
        if isinstance(config, cls):
            return copy.deepcopy(config)
        if not isinstance(config, GenerationConfig):
            raise TypeError(f"`generation_config` must be a GenerationConfig, got {type(config).__name__}.")
        values = {
            k: v for k, v in config.to_diff_dict().items() if not k.startswith("_") and k != "transformers_version"
        }
        for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
            if isinstance(values.get(name), (list, tuple)):
                ids = list(values[name])
                if len(ids) != 1:
                    raise ValueError(f"`{name}` must be a single id for masked diffusion decoding, got {ids}.")
                values[name] = ids[0]
        known = set(cls.parameter_names())
        unknown = sorted(name for name in values if name not in known)
        if unknown:
            raise TypeError(
                f"The GenerationConfig sets {', '.join(unknown)}, which masked diffusion decoding does not have. "
                f"Shared settings: {', '.join(sorted(known))}."
            )
        if isinstance(defaults, cls):
            return defaults.with_overrides(**values)
        return cls(**values)

    def fill_special_token_ids(self, source: Any) -> MaskedDiffusionGenerationConfig:
        """Set every special token id that is still `None` from `source` (a tokenizer or a model config), in place.

        transformers' `generate` fills missing special ids from the model in the same way; a masked diffusion config
        also needs the mask id, which tokenizers carry. Returns `self`.
        """
        for name in SPECIAL_TOKEN_ATTRIBUTES:
            value = getattr(source, name, None)
            if getattr(self, name) is None and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, value)
        return self
