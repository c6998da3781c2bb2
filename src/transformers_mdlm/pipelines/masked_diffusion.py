"""`MaskedDiffusionPipeline`: completion, chat, infilling and batches over `generate` / `infill`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from transformers import Pipeline
from transformers.pipelines.text_generation import ReturnType

from ..chat_templates import DIFFUTRON_CHAT_TEMPLATE, DIFFUTRON_END_OF_ANSWER
from ..generation.configuration import MaskedDiffusionGenerationConfig
from ..generation.inputs import check_callback_inputs, check_generator, check_length
from ..tokenizer_utils import decode_frame
from ..validation import check_bool
from .inputs import Conversation, ProgressBar, chain_callbacks, prepare_inputs

#: Above this many denoising steps, `progress_bar=None` shows a progress bar.
PROGRESS_BAR_MIN_STEPS = 256


class MaskedDiffusionPipeline(Pipeline):
    r"""
    Text generation with a masked diffusion language model: `pipeline("masked-diffusion", model=...)`.

    Accepts what transformers' `text-generation` pipeline accepts:

    - a string: plain completion; `generated_text` is the prompt followed by the new text (`return_full_text=False`:
      the new text only); an empty string generates unconditionally;
    - a conversation (a list of `{"role": "system" | "user" | "assistant", "content": str}`): rendered with the
      tokenizer's chat template, or Diffutron's when the tokenizer has none; `generated_text` is the conversation with
      the assistant's reply appended (`return_full_text=False`: the reply). A conversation ending with an assistant
      message is continued (`continue_final_message`, as in transformers);
    - a string holding the tokenizer's mask token: infilling; `generated_text` is the text with every blank filled;
    - a list, a `datasets` column, a `KeyDataset` or any iterable or generator of these: batched with
      `batch_size`; iterables other than lists come back as an iterator, as transformers streams them.

    Each input gives a list of `num_return_sequences` dicts: `{"generated_text": ...}` (`{"generated_token_ids":
    [...]}` with `return_tensors=True`), plus `"history"` (the decoded canvas before the first step and after each
    step, masks shown as the mask token) with `return_history=True`. Answers end at EOS, or at `[/Answer]` when
    Diffutron's template applies, and special tokens are removed.

    Every [`MaskedDiffusionGenerationConfig`] parameter can be passed at construction or call time, as can
    `generation_config=` (this package's config or a plain `transformers.GenerationConfig`); the defaults come from
    the model's `generation_config.json`. `callback_on_step_end` and `generator` pass through to `generate`;
    `progress_bar` shows a bar over denoising steps (`None`: only for runs of at least 256 steps).

    Example:

    ```python
    >>> import transformers_mdlm  # registers the task
    >>> from transformers import pipeline
    >>> pipe = pipeline("masked-diffusion", model="path/to/model")  # doctest: +SKIP
    >>> pipe("Türkiye'nin başkenti neresidir?", return_full_text=False)  # doctest: +SKIP
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
        model = args[0] if args else kwargs.get("model")
        generation_config = getattr(model, "generation_config", None)
        if not isinstance(generation_config, MaskedDiffusionGenerationConfig):
            raise TypeError(
                "The masked-diffusion pipeline needs a model loaded with `AutoModelForMaskedDiffusion` (or one of its "
                f"classes), got {type(model).__name__}; masked-LM architectures it supports: ModernBERT/mmBERT, BERT, "
                "RoBERTa, XLM-RoBERTa, DistilBERT."
            )
        # Generation settings given at construction apply to every call (a call's own settings override them).
        known = {*MaskedDiffusionGenerationConfig.parameter_names(), "generation_config"}
        self._default_generate_kwargs = {key: value for key, value in kwargs.items() if key in known}
        # `return_history` also decides what decoding records, so a construction-time value must reach every call.
        self._default_return_history = kwargs.get("return_history")
        # So does `progress_bar`: whether a call shows a bar depends on the call's step count.
        self._default_progress_bar = kwargs.get("progress_bar")
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError("The masked-diffusion pipeline needs a tokenizer: pass `tokenizer=` with the model.")
        if self.tokenizer.mask_token_id is None:
            raise ValueError(
                f"The tokenizer {type(self.tokenizer).__name__} has no mask token; masked diffusion needs one."
            )
        generation_config.fill_special_token_ids(self.tokenizer)

    # ------------------------------------------------------------------ parameters

    def _sanitize_parameters(
        self,
        return_full_text: bool | None = None,
        return_tensors: bool | None = None,
        return_history: bool | None = None,
        add_special_tokens: bool | None = None,
        continue_final_message: bool | None = None,
        progress_bar: bool | None = None,
        callback_on_step_end: Callable | None = None,
        generator: torch.Generator | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        **generate_kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        # Check every parameter once, now, before any input is processed; the checked config travels down.
        flags = {"return_full_text": return_full_text, "return_tensors": return_tensors,
                 "return_history": return_history, "add_special_tokens": add_special_tokens,
                 "continue_final_message": continue_final_message, "progress_bar": progress_bar,
                 "clean_up_tokenization_spaces": clean_up_tokenization_spaces}  # fmt: skip
        for name, value in flags.items():
            if value is not None:
                check_bool(name, value)
        if return_full_text is not None and return_tensors is not None:
            # transformers' text-generation refuses the pair: token ids always hold the prompt and the answer.
            raise ValueError("`return_full_text` is mutually exclusive with `return_tensors`")
        check_generator(generator)  # `generate`'s own checks, before any input is processed
        check_callback_inputs(callback_on_step_end, None)
        # As transformers' text-generation: the two flags become one `return_type`, so that a call's choice replaces
        # the one made when the pipeline was built (two flags would both survive the merge of the two).
        return_type = None
        if return_full_text is not None:
            return_type = ReturnType.FULL_TEXT if return_full_text else ReturnType.NEW_TEXT
        elif return_tensors:
            return_type = ReturnType.TENSORS
        elif (
            return_tensors is False
            and getattr(self, "_postprocess_params", {}).get("return_type") == ReturnType.TENSORS
        ):
            return_type = ReturnType.FULL_TEXT  # text again, after `return_tensors=True` at construction
        defaults = getattr(self, "_default_generate_kwargs", {})
        if generate_kwargs.get("generation_config") is not None:
            # transformers: a call's `generation_config` replaces the settings given when the pipeline was built.
            defaults = {}
        generate_kwargs = {**defaults, **generate_kwargs}
        base = generate_kwargs.pop("generation_config", None)
        if base is None:
            base = self.model.generation_config
        else:  # transformers' habit: a config for this call; what a plain one leaves unset comes from the model's
            base = MaskedDiffusionGenerationConfig.from_generation_config(base, defaults=self.model.generation_config)
            base.fill_special_token_ids(self.model.generation_config)
        config = base.with_overrides(**generate_kwargs, return_dict_in_generate=True)
        if return_history is None:
            return_history = getattr(self, "_default_return_history", None)
        if return_history is not None:
            config.output_history = bool(return_history)
        preprocess = _given(add_special_tokens=add_special_tokens, continue_final_message=continue_final_message)
        # Always this call's value, `None` included (`max_length` then decides): transformers would otherwise keep the
        # value given at construction for the length check.
        preprocess["max_new_tokens"] = config.max_new_tokens
        if progress_bar is None:
            progress_bar = getattr(self, "_default_progress_bar", None)
        show_bar = progress_bar if progress_bar is not None else config.steps >= PROGRESS_BAR_MIN_STEPS
        forward = _given(generation_config=config, callback_on_step_end=callback_on_step_end, generator=generator)
        # Always this call's value (`None` included): the bar's length is this call's step count.
        forward["total_steps"] = config.steps if show_bar else None
        postprocess = _given(return_type=return_type, return_history=return_history,
                             clean_up_tokenization_spaces=clean_up_tokenization_spaces)  # fmt: skip
        return preprocess, forward, postprocess

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """Generate for one input, a list of inputs or a stream of inputs; see the class documentation."""
        return super().__call__(prepare_inputs(inputs), **kwargs)

    # ------------------------------------------------------------------ the three stages

    def preprocess(
        self,
        inputs: str | Conversation,
        max_new_tokens: int | None = None,
        add_special_tokens: bool = False,
        continue_final_message: bool | None = None,
    ) -> dict[str, Any]:
        tokenizer = self.tokenizer
        continued = False
        if isinstance(inputs, Conversation):
            for index, message in enumerate(inputs.messages):
                if tokenizer.mask_token in message["content"]:
                    # Decoding would fill it inside the prompt while the returned messages kept it: text and ids
                    # would disagree. Infilling is for plain strings.
                    raise ValueError(
                        f"Message {index} holds the mask token {tokenizer.mask_token!r}; chats are answered, not "
                        "infilled. Pass the text with its blanks as a plain string to fill them."
                    )
            template = tokenizer.chat_template or DIFFUTRON_CHAT_TEMPLATE
            continued = (
                inputs.messages[-1]["role"] == "assistant"
                if continue_final_message is None
                else continue_final_message
            )
            text = tokenizer.apply_chat_template(
                inputs.messages, chat_template=template, add_generation_prompt=not continued,
                continue_final_message=continued, tokenize=False,
            )  # fmt: skip
            kind, prompt = "chat", text
            end_marker = DIFFUTRON_END_OF_ANSWER if DIFFUTRON_END_OF_ANSWER in template else None
        else:
            text = inputs
            kind = "infill" if tokenizer.mask_token in inputs else "completion"
            # A SentencePiece-style tokenizer makes trailing whitespace a token of its own, which models rarely saw
            # at the end of a prompt (the answer is then often empty): completions are tokenized without it.
            prompt = text if kind == "infill" else text.rstrip()
            # A model tuned with Diffutron's template ends its text with `[/Answer]` in completions too.
            template = tokenizer.chat_template
            end_marker = DIFFUTRON_END_OF_ANSWER if template is None or DIFFUTRON_END_OF_ANSWER in template else None
        input_ids = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
        new_tokens = 0 if kind == "infill" else (max_new_tokens or 0)
        check_length(
            len(input_ids) + new_tokens,
            self.model.max_sequence_length(),
            f"The input ({len(input_ids)} tokens) plus {new_tokens} new tokens",
        )
        messages = inputs.messages if isinstance(inputs, Conversation) else None
        meta = {"input_ids": input_ids, "kind": kind, "text": text, "messages": messages, "end_marker": end_marker,
                "continued": continued, "trailing_space": prompt != text}  # fmt: skip
        return {"meta": meta}

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
        columns and the new tokens follow the input's `width` columns. With `num_return_sequences = n`, rows
        `i * n ... i * n + n - 1` of the output are input `i`'s answers.
        """
        metas = model_inputs["meta"]
        metas = metas if isinstance(metas, list) else [metas]
        results: list[dict[str, Any]] = [dict(meta, sequences=[], history=[]) for meta in metas]
        n = generation_config.num_return_sequences
        for kind in ("generate", "infill"):
            rows = [i for i, meta in enumerate(metas) if (meta["kind"] == "infill") == (kind == "infill")]
            if not rows:
                continue
            input_ids, attention_mask = self._right_pad([metas[i]["input_ids"] for i in rows])
            width = input_ids.shape[1]
            with ProgressBar(total_steps) as on_step:
                method = self.model.infill if kind == "infill" else self.model.generate
                out = method(
                    input_ids,
                    attention_mask=attention_mask,
                    generation_config=generation_config,
                    callback_on_step_end=chain_callbacks(on_step, callback_on_step_end),
                    generator=generator,
                    tokenizer=self.tokenizer,
                )
            for position, row in enumerate(rows):
                length = len(metas[row]["input_ids"])
                results[row]["nfe"] = out.nfe
                for index in range(position * n, position * n + n):
                    results[row]["sequences"].append(
                        (out.sequences[index, :length].tolist(), out.sequences[index, width:].tolist())
                    )
                    if out.history is not None:
                        frames = [
                            frame[index, :length].tolist() + frame[index, width:].tolist() for frame in out.history
                        ]
                        results[row]["history"].append(frames)
        return {"meta": results}

    def postprocess(
        self,
        model_outputs: dict[str, Any],
        return_type: ReturnType = ReturnType.FULL_TEXT,
        return_history: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[dict[str, Any]]:
        meta = model_outputs["meta"]
        meta = meta[0] if isinstance(meta, list) else meta
        decode_kwargs: dict[str, Any] = {"skip_special_tokens": True}
        if clean_up_tokenization_spaces is not None:
            decode_kwargs["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        full = return_type != ReturnType.NEW_TEXT
        records = []
        for index, (prompt_tokens, new_tokens) in enumerate(meta["sequences"]):
            if return_type == ReturnType.TENSORS:
                record: dict[str, Any] = {"generated_token_ids": prompt_tokens + new_tokens if full else new_tokens}
            else:
                record = {"generated_text": self._text(meta, prompt_tokens, new_tokens, full, decode_kwargs)}
            if return_history:
                record["history"] = [decode_frame(tokens, self.tokenizer) for tokens in meta["history"][index]]
            records.append(record)
        return records

    def _text(
        self, meta: dict[str, Any], prompt_tokens: list[int], new_tokens: list[int], full: bool, decode_kwargs: dict
    ) -> str | list[dict[str, str]]:
        """The text of one answer, as transformers' text-generation pipeline shapes it."""
        tokenizer = self.tokenizer
        if meta["kind"] == "infill":
            return self._filled_text(meta, prompt_tokens, decode_kwargs)
        new_tokens = _cut_at(new_tokens, tokenizer.eos_token_id)
        # Decode prompt and answer together (so that the spacing between them is right), then drop the decoded
        # prompt: transformers 4's text-generation did this; transformers 5 decodes the new tokens alone, which loses
        # the space before the answer's first word (docs/transformers_users.md).
        answer = tokenizer.decode(prompt_tokens + new_tokens, **decode_kwargs)
        answer = answer[len(tokenizer.decode(prompt_tokens, **decode_kwargs)) :]
        if meta["end_marker"] and meta["end_marker"] in answer:
            answer = answer[: answer.index(meta["end_marker"])]
        if meta["kind"] == "completion":
            if meta["trailing_space"]:  # the prompt's own whitespace separates it from the answer
                answer = answer.lstrip()
            return meta["text"] + answer if full else answer
        messages = meta["messages"]
        if meta["continued"]:  # the final assistant message goes on
            answer = answer.rstrip()
            if not full:
                return answer
            return [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + answer}]
        answer = answer.strip()
        return [*messages, {"role": "assistant", "content": answer}] if full else answer

    def _filled_text(self, meta: dict[str, Any], filled: list[int], decode_kwargs: dict) -> str:
        """The input text as typed, each mask token replaced by the text of the token that filled it.

        Decoding the whole filled sequence instead would rewrite the user's text wherever the tokenizer does not
        give it back (unknown characters, normalisation). Each filled token's text is what it adds to the decoded
        sequence at its place, so a word-start token brings its space; none is added after text ending in whitespace.
        """
        tokenizer = self.tokenizer
        pieces = meta["text"].split(tokenizer.mask_token)
        positions = [i for i, token in enumerate(meta["input_ids"]) if token == tokenizer.mask_token_id]
        if len(positions) != len(pieces) - 1:  # a tokenizer that splits or merges its own mask string
            return tokenizer.decode(filled, **decode_kwargs)
        text = pieces[0]
        for position, after in zip(positions, pieces[1:], strict=True):
            before = tokenizer.decode(filled[:position], **decode_kwargs)
            through = tokenizer.decode(filled[: position + 1], **decode_kwargs)
            # A decoder that rewrites earlier text when a token is added (clean-up of spaces) has no clean suffix.
            piece = (
                through[len(before) :]
                if through.startswith(before)
                else tokenizer.decode(filled[position : position + 1], **decode_kwargs)
            )
            text += (piece.lstrip() if not text or text[-1].isspace() else piece) + after
        return text

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
        if hasattr(self.model, "get_base_model"):  # peft writes the adapter only: keep the decoding settings beside it
            self.model.get_base_model().generation_config.save_pretrained(save_directory)
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


def _cut_at(tokens: list[int], stop_id: int | None) -> list[int]:
    return tokens[: tokens.index(stop_id)] if stop_id is not None and stop_id in tokens else tokens


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not `None`)."""
    return {key: value for key, value in values.items() if value is not None}
