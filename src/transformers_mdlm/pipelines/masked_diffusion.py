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
from ..generation.inputs import check_length
from ..tokenizer_utils import decode_frame

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
        # Generation settings given at construction apply to every call (a call's own settings override them).
        known = MaskedDiffusionGenerationConfig.parameter_names()
        self._default_generate_kwargs = {key: value for key, value in kwargs.items() if key in known}
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
        generation_config.fill_special_token_ids(self.tokenizer)

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
        # Check every generation parameter once, now, before any input is processed; the checked config travels down.
        generate_kwargs = {**getattr(self, "_default_generate_kwargs", {}), **generate_kwargs}
        config = self.model.generation_config.with_overrides(**generate_kwargs, return_dict_in_generate=True)
        preprocess: dict[str, Any] = {"max_new_tokens": config.max_new_tokens}
        postprocess: dict[str, Any] = {}
        if add_special_tokens is not None:
            preprocess["add_special_tokens"] = add_special_tokens
        if return_history is not None:
            config.output_history = bool(return_history)
            postprocess["return_history"] = bool(return_history)
        show_bar = progress_bar if progress_bar is not None else config.steps >= PROGRESS_BAR_MIN_STEPS
        forward: dict[str, Any] = {"generation_config": config, "total_steps": config.steps if show_bar else None}
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
        check_length(
            len(input_ids) + new_tokens,
            self.model.max_sequence_length(),
            f"The input ({len(input_ids)} tokens) plus {new_tokens} new tokens",
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
        generation_config: MaskedDiffusionGenerationConfig,
        total_steps: int | None = None,
        callback_on_step_end: Callable | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """Generate for a batch of prepared inputs.

        Rows go to the model in the decoding layout (each row from column 0, padding on the right), so the model
        uses them as they are; each answer is read back by its prompt length: the prompt is a row's first `length`
        columns and the new tokens follow the input's `width` columns.
        """
        metas = model_inputs["meta"]
        metas = metas if isinstance(metas, list) else [metas]
        results: list[dict[str, Any]] = [dict(meta) for meta in metas]
        for kind in ("generate", "infill"):
            rows = [i for i, meta in enumerate(metas) if (meta["kind"] == "infill") == (kind == "infill")]
            if not rows:
                continue
            lengths = [len(metas[i]["input_ids"]) for i in rows]
            input_ids, attention_mask = self._right_pad([metas[i]["input_ids"] for i in rows])
            width = input_ids.shape[1]
            with _ProgressBar(total_steps) as on_step:
                method = self.model.infill if kind == "infill" else self.model.generate
                out = method(
                    input_ids,
                    attention_mask=attention_mask,
                    generation_config=generation_config,
                    callback_on_step_end=_chain(on_step, callback_on_step_end),
                    generator=generator,
                )
            for position, (row, length) in enumerate(zip(rows, lengths, strict=True)):
                results[row]["prompt_tokens"] = out.sequences[position, :length].tolist()
                results[row]["new_tokens"] = out.sequences[position, width:].tolist()
                results[row]["nfe"] = out.nfe
                if out.history is not None:
                    results[row]["history"] = [
                        frame[position, :length].tolist() + frame[position, width:].tolist() for frame in out.history
                    ]
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
        prompt_tokens = meta["prompt_tokens"]
        if meta["kind"] == "infill":
            record: dict[str, Any] = {"generated_text": tokenizer.decode(prompt_tokens, **decode_kwargs)}
        else:
            new_tokens = _cut_at(meta["new_tokens"], tokenizer.eos_token_id)
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
            record["history"] = [decode_frame(tokens, tokenizer) for tokens in meta.get("history", [])]
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

    def _right_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows as a batch in the decoding layout: each from column 0, the pad id after it."""
        width = max(len(row) for row in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, : len(row)] = 1
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
    """One step callback calling each in turn; a replacement canvas one returns is what the next ones see."""
    callbacks = tuple(c for c in callbacks if c is not None)
    if not callbacks:
        return None

    def call_all(model: Any, step: int, timestep: float, callback_kwargs: dict[str, Any]) -> dict[str, Any] | None:
        replaced = None
        for callback in callbacks:
            returned = callback(model, step, timestep, callback_kwargs)
            if isinstance(returned, dict) and returned.get("sequences") is not None:
                callback_kwargs = {**callback_kwargs, "sequences": returned["sequences"]}
                replaced = {"sequences": returned["sequences"]}
        return replaced

    return call_all


def _is_conversation(inputs: Any) -> bool:
    return isinstance(inputs, (list, tuple)) and bool(inputs) and all(isinstance(m, dict) for m in inputs)


def _check_input_type(item: Any) -> None:
    if not isinstance(item, (str, _Conversation)):
        raise TypeError(
            "The masked-diffusion pipeline takes a string, a conversation (a list of {'role', 'content'} dicts), or a "
            f"list of those; got {type(item).__name__}."
        )


def _cut_at(tokens: list[int], stop_id: int | None) -> list[int]:
    return tokens[: tokens.index(stop_id)] if stop_id is not None and stop_id in tokens else tokens
