"""`MaskedDiffusionPipeline`: completion, chat, infilling and batches over `generate` / `infill`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import Pipeline

from ..chat_templates import DIFFUTRON_CHAT_TEMPLATE, DIFFUTRON_END_OF_ANSWER, validate_messages
from ..generation.configuration import MaskedDiffusionGenerationConfig

#: Above this many denoising steps, `progress_bar=None` shows a progress bar.
PROGRESS_BAR_MIN_STEPS = 256


class _Conversation:
    """A list of chat messages travelling through the pipeline as one input (not as a batch of messages)."""

    def __init__(self, messages: Any) -> None:
        self.messages = validate_messages(messages)


class MaskedDiffusionPipeline(Pipeline):
    r"""
    Text generation with a masked diffusion language model: `pipeline("masked-diffusion", model=...)`.

    Accepts, like transformers' `text-generation` pipeline:

    - a string: plain completion; `generated_text` is the new text (prompt + new text with `return_full_text=True`);
      an empty string generates unconditionally;
    - a conversation (a list of `{"role": "system" | "user" | "assistant", "content": str}`): rendered with the
      tokenizer's chat template, or Diffutron's when the tokenizer has none; `generated_text` is the conversation
      with the assistant's reply appended;
    - a string holding the tokenizer's mask token: infilling; `generated_text` is the text with every blank filled;
    - a list of any of these, batched with `batch_size` (results do not depend on batching).

    Each input gives a list with one dict: `{"generated_text": ...}`, plus `"history"` (the decoded canvas before the
    first step and after each step, masks shown as the mask token) with `return_history=True`. Answers are cut at EOS,
    or at `[/Answer]` when Diffutron's template applies (a tokenizer without a chat template), and special tokens are
    removed.

    Every [`MaskedDiffusionGenerationConfig`] parameter can be passed at construction or call time; the defaults
    come from the model's `generation_config.json`. `callback_on_step_end` and `generator` pass through to
    `generate`; `progress_bar` shows a bar over denoising steps (`None`: only for runs of at least 256 steps).

    Example:

    ```python
    >>> import transformers_mdlm  # registers the task
    >>> from transformers import pipeline
    >>> pipe = pipeline("masked-diffusion", model="path/to/model")  # doctest: +SKIP
    >>> pipe("Türkiye'nin başkenti neresidir?")  # doctest: +SKIP
    [{'generated_text': '...'}]
    >>> pipe([{"role": "user", "content": "Merhaba!"}], max_new_tokens=32, steps=32)  # doctest: +SKIP
    [{'generated_text': [{'role': 'user', 'content': 'Merhaba!'}, {'role': 'assistant', 'content': '...'}]}]

    ```
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError("The masked-diffusion pipeline needs a tokenizer: pass `tokenizer=` with the model.")
        if self.tokenizer.mask_token_id is None:
            raise ValueError(
                f"The tokenizer {type(self.tokenizer).__name__} has no mask token; masked diffusion needs one."
            )
        generation_config = getattr(self.model, "generation_config", None)
        if not isinstance(generation_config, MaskedDiffusionGenerationConfig):
            raise TypeError(
                "The masked-diffusion pipeline needs a model loaded with `AutoModelForMaskedDiffusion` (or one of its "
                f"classes), got {type(self.model).__name__}."
            )
        if generation_config.mask_token_id is None:
            generation_config.mask_token_id = self.tokenizer.mask_token_id
        for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
            if getattr(generation_config, name) is None:
                setattr(generation_config, name, getattr(self.tokenizer, name))

    # ------------------------------------------------------------------ parameters

    def _sanitize_parameters(
        self,
        return_full_text: bool | None = None,
        return_history: bool | None = None,
        add_special_tokens: bool | None = None,
        progress_bar: bool | None = None,
        callback_on_step_end: Callable | None = None,
        generator: torch.Generator | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        **generate_kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        # Validate every generation parameter now, before any input is processed.
        config = self.model.generation_config.with_overrides(**generate_kwargs)
        preprocess: dict[str, Any] = {"max_new_tokens": config.max_new_tokens}
        forward: dict[str, Any] = dict(generate_kwargs)
        postprocess: dict[str, Any] = {}
        if add_special_tokens is not None:
            preprocess["add_special_tokens"] = add_special_tokens
        if return_history is not None:
            forward["output_history"] = bool(return_history)
            postprocess["return_history"] = bool(return_history)
        # The bar's length is known now; `_forward` must not validate the parameters a second time for it.
        forward["progress_bar"] = progress_bar if progress_bar is not None else config.steps >= PROGRESS_BAR_MIN_STEPS
        forward["total_steps"] = config.steps
        if callback_on_step_end is not None:
            forward["callback_on_step_end"] = callback_on_step_end
        if generator is not None:
            forward["generator"] = generator
        if return_full_text is not None:
            postprocess["return_full_text"] = return_full_text
        if clean_up_tokenization_spaces is not None:
            postprocess["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return preprocess, forward, postprocess

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """Generate for one input or a list of inputs; see the class documentation for the kinds of input."""
        if _is_conversation(inputs):
            inputs = _Conversation(inputs)
        elif isinstance(inputs, (list, tuple)):
            if not inputs:
                raise ValueError("Got an empty list of inputs.")
            inputs = [_Conversation(item) if _is_conversation(item) else item for item in inputs]
            for item in inputs:
                _check_input_type(item)
        else:
            _check_input_type(inputs)
        return super().__call__(inputs, **kwargs)

    # ------------------------------------------------------------------ the three stages

    def preprocess(
        self, inputs: str | _Conversation, max_new_tokens: int | None = None, add_special_tokens: bool = False
    ) -> dict[str, Any]:
        tokenizer = self.tokenizer
        if isinstance(inputs, _Conversation):
            template = tokenizer.chat_template or DIFFUTRON_CHAT_TEMPLATE
            text = tokenizer.apply_chat_template(
                inputs.messages, chat_template=template, add_generation_prompt=True, tokenize=False
            )
            kind = "chat"
            end_marker = DIFFUTRON_END_OF_ANSWER if template == DIFFUTRON_CHAT_TEMPLATE else None
        else:
            text = inputs
            kind = "infill" if tokenizer.mask_token in inputs else "completion"
            # A model tuned with Diffutron's template ends its text with `[/Answer]` in completions too.
            end_marker = DIFFUTRON_END_OF_ANSWER if tokenizer.chat_template is None else None
        input_ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        new_tokens = 0 if kind == "infill" else (max_new_tokens or 0)
        limit = self.model.max_sequence_length()
        if limit is not None and len(input_ids) + new_tokens > limit:
            raise ValueError(
                f"The input is {len(input_ids)} tokens; with {new_tokens} new tokens that is more than the model's "
                f"{limit} positions. Shorten it or lower `max_new_tokens`."
            )
        return {
            "meta": {
                "input_ids": input_ids,
                "kind": kind,
                "text": text,
                "messages": inputs.messages if isinstance(inputs, _Conversation) else None,
                "end_marker": end_marker,
            }
        }

    def _forward(
        self,
        model_inputs: dict[str, Any],
        progress_bar: bool = False,
        total_steps: int | None = None,
        callback_on_step_end: Callable | None = None,
        generator: torch.Generator | None = None,
        **generate_kwargs: Any,
    ) -> dict[str, Any]:
        metas = model_inputs["meta"]
        metas = metas if isinstance(metas, list) else [metas]
        results: list[dict[str, Any]] = [dict(meta) for meta in metas]
        groups = {
            "generate": [i for i, meta in enumerate(metas) if meta["kind"] != "infill"],
            "infill": [i for i, meta in enumerate(metas) if meta["kind"] == "infill"],
        }
        for kind, rows in groups.items():
            if not rows:
                continue
            input_ids, attention_mask = self._left_pad([metas[i]["input_ids"] for i in rows])
            with _ProgressBar(total_steps if progress_bar else None) as on_step:
                method = self.model.infill if kind == "infill" else self.model.generate
                out = method(
                    input_ids,
                    attention_mask=attention_mask,
                    callback_on_step_end=_chain(on_step, callback_on_step_end),
                    generator=generator,
                    return_dict_in_generate=True,
                    **generate_kwargs,
                )
            for position, row in enumerate(rows):
                keep = attention_mask[position].bool()
                prompt_length = int(keep.sum()) if kind != "infill" else 0
                width = input_ids.shape[1]
                results[row]["sequence"] = _row_tokens(out.sequences[position], keep, width)
                results[row]["prompt_length"] = prompt_length
                results[row]["nfe"] = out.nfe
                if out.history is not None:
                    results[row]["history"] = [_row_tokens(step[position], keep, width) for step in out.history]
        return {"meta": results}

    def postprocess(
        self,
        model_outputs: dict[str, Any],
        return_full_text: bool = False,
        return_history: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[dict[str, Any]]:
        meta = model_outputs["meta"]
        meta = meta[0] if isinstance(meta, list) else meta
        tokenizer = self.tokenizer
        decode_kwargs = {"skip_special_tokens": True}
        if clean_up_tokenization_spaces is not None:
            decode_kwargs["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        sequence = meta["sequence"]
        if meta["kind"] == "infill":
            record: dict[str, Any] = {"generated_text": tokenizer.decode(sequence, **decode_kwargs)}
        else:
            prompt_tokens = sequence[: meta["prompt_length"]]
            new_tokens = _cut_at(sequence[meta["prompt_length"] :], tokenizer.eos_token_id)
            # As transformers' text-generation does: decode prompt and answer together (so that the spacing between
            # them is right), then drop the decoded prompt.
            answer = tokenizer.decode(prompt_tokens + new_tokens, **decode_kwargs)
            answer = answer[len(tokenizer.decode(prompt_tokens, **decode_kwargs)) :]
            if meta["end_marker"] and meta["end_marker"] in answer:
                answer = answer[: answer.index(meta["end_marker"])]
            if meta["kind"] == "chat":
                answer = answer.strip()
                record = {"generated_text": [*meta["messages"], {"role": "assistant", "content": answer}]}
            else:
                prefix = meta["text"] if return_full_text else ""
                record = {"generated_text": prefix + answer}
        if return_history:
            record["history"] = [
                tokenizer.decode(_visible(tokens, tokenizer), skip_special_tokens=False)
                for tokens in meta.get("history", [])
            ]
        return [record]

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save the model (with its generation config) and tokenizer so that the folder loads again as a pipeline.

        transformers' default adds a `custom_pipelines` entry to the model config that breaks reloading the folder;
        this writes a plain model folder instead.
        """
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory` ({save_directory}) must be a directory, not a file.")
        os.makedirs(save_directory, exist_ok=True)
        self.model.save_pretrained(save_directory, **kwargs)
        self.tokenizer.save_pretrained(save_directory, **kwargs)

    # ------------------------------------------------------------------ helpers

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(row) for row in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            if row:
                input_ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                attention_mask[index, width - len(row) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)


class _ProgressBar:
    """A tqdm bar over denoising steps, driven by the step callback."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.bar = None

    def __enter__(self) -> Callable | None:
        if self.total is None:
            return None
        self.bar = tqdm(total=self.total, desc="denoising", unit="step", leave=False)

        def on_step(model: Any, step: int, timestep: float, callback_kwargs: dict[str, Any]) -> None:
            self.bar.update(1)

        return on_step

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def _chain(*callbacks: Callable | None) -> Callable | None:
    callbacks = tuple(c for c in callbacks if c is not None)
    if not callbacks:
        return None

    def call_all(*args: Any) -> None:
        for callback in callbacks:
            callback(*args)

    return call_all


def _is_conversation(inputs: Any) -> bool:
    return isinstance(inputs, (list, tuple)) and bool(inputs) and all(isinstance(m, dict) for m in inputs)


def _check_input_type(item: Any) -> None:
    if not isinstance(item, (str, _Conversation)):
        raise TypeError(
            "The masked-diffusion pipeline takes a string, a conversation (a list of {'role', 'content'} dicts), or a "
            f"list of those; got {type(item).__name__}."
        )


def _row_tokens(sequence: torch.Tensor, keep: torch.Tensor, width: int) -> list[int]:
    """The row's tokens without its padding: the prompt part (first `width` columns) where `keep`, then the rest."""
    return sequence[:width][keep].tolist() + sequence[width:].tolist()


def _cut_at(tokens: list[int], stop_id: int | None) -> list[int]:
    return tokens[: tokens.index(stop_id)] if stop_id is not None and stop_id in tokens else tokens


def _visible(tokens: list[int], tokenizer: Any) -> list[int]:
    """Tokens of a history frame, with special tokens other than the mask removed (so masks stay visible)."""
    hidden = set(tokenizer.all_special_ids) - {tokenizer.mask_token_id}
    return [t for t in tokens if t not in hidden]
