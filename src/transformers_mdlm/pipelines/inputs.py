"""What the masked-diffusion pipeline accepts, as transformers pipelines accept it, and how it reaches the model."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

from ..chat_templates import validate_messages


class Conversation:
    """A list of chat messages travelling through the pipeline as one input (not as a batch of messages)."""

    def __init__(self, messages: Any) -> None:
        self.messages = validate_messages(messages)


def is_conversation(inputs: Any) -> bool:
    """A non-empty list or tuple of dicts (chat messages)."""
    return isinstance(inputs, (list, tuple)) and bool(inputs) and all(isinstance(m, dict) for m in inputs)


def prepare_item(item: Any, index: int | None = None) -> str | Conversation:
    """One input: a string, or a conversation wrapped so that it is not taken for a batch."""
    if is_conversation(item):
        return Conversation(item)
    if isinstance(item, (Conversation, str)):
        return item
    where = "" if index is None else f" (input {index})"
    raise TypeError(
        "The masked-diffusion pipeline takes a string, a conversation (a list of {'role', 'content'} dicts), or a "
        f"list, dataset column, KeyDataset or generator of those; got {type(item).__name__}{where}."
    )


def prepare_inputs(inputs: Any) -> Any:
    """A single input, a list of inputs, or (for any other iterable: a `KeyDataset`, a `datasets` column, a
    generator) a generator of inputs, which transformers' `Pipeline.__call__` streams with `batch_size`."""
    if isinstance(inputs, str) or is_conversation(inputs) or isinstance(inputs, Conversation):
        return prepare_item(inputs)
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise ValueError("Got an empty list of inputs.")
        return [prepare_item(item, index) for index, item in enumerate(inputs)]
    if isinstance(inputs, (dict, bytes)):
        return prepare_item(inputs)
    if isinstance(inputs, Iterable):
        return _stream(iter(inputs))
    if hasattr(inputs, "__getitem__") and hasattr(inputs, "__len__"):  # a torch Dataset such as `KeyDataset`
        return _stream(inputs[index] for index in range(len(inputs)))
    return prepare_item(inputs)


def _stream(inputs: Iterator[Any]) -> Iterator[str | Conversation]:
    for index, item in enumerate(inputs):
        yield prepare_item(item, index)


class ProgressBar:
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


def chain_callbacks(*callbacks: Callable | None) -> Callable | None:
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


__all__ = ["Conversation", "ProgressBar", "chain_callbacks", "is_conversation", "prepare_inputs", "prepare_item"]
