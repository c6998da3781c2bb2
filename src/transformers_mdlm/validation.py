"""Argument checks shared by every public entry point: each names the argument and what it allows.

One home for them, so that the generation config, the scheduler, the training arguments, the collators, evaluation
and the CLI answer a bad value with the same words (`ValueError` for a value out of range, `TypeError` for a value
of the wrong kind), before any heavy work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def check_int(name: str, value: Any, *, minimum: int, optional: bool = False) -> None:
    """An integer (not a bool) `>= minimum`, or `None` when `optional`.

    Example:

    ```python
    >>> check_int("steps", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: `steps` must be an integer >= 1, got 0.

    ```
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an integer >= {minimum}{' or None' if optional else ''}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value}.")


def check_number(name: str, value: Any, allowed: str, ok: Callable[[float], bool], *, optional: bool = False) -> None:
    """A finite real number (not a bool) for which `ok(value)` holds; `allowed` describes the range in words."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be {allowed}, got {value!r}.")
    if not math.isfinite(value) or not ok(value):
        raise ValueError(f"`{name}` must be {allowed}, got {value}.")


def check_choice(name: str, value: Any, allowed: Iterable[Any], *, optional: bool = False) -> None:
    """One of `allowed` (or `None` when `optional`); the message lists every allowed value."""
    allowed = tuple(allowed)
    if value is None and optional:
        return
    if value not in allowed:
        choices = ", ".join(repr(v) for v in (*allowed, *((None,) if optional else ())))
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}.")


def check_bool(name: str, value: Any, optional: bool = False) -> None:
    """`True` or `False` (not `0`/`1`, not a string); `None` too when `optional`."""
    if optional and value is None:
        return
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True{', False or None' if optional else ' or False'}, got {value!r}.")


def check_token_ids(name: str, ids: Iterable[int], vocab_size: int | None) -> None:
    """Token ids in `[0, vocab_size)` (the upper bound is skipped when `vocab_size` is unknown)."""
    ids = list(ids)
    if not ids:
        return
    low, high = min(ids), max(ids)
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        bad = low if low < 0 else high
        bound = f"[0, {vocab_size})" if vocab_size is not None else "[0, vocab_size)"
        raise ValueError(f"`{name}` must hold token ids in {bound}, got {bad}.")


def iter_texts(name: str, texts: Any) -> Iterator[str]:
    """The strings of `texts` (any iterable), one at a time, each checked. A bare string is refused: iterating it would
    score or count its characters one by one, a silently wrong result."""
    if isinstance(texts, str):
        shown = texts if len(texts) <= 40 else texts[:37] + "..."
        raise TypeError(f"`{name}` must be a list of strings, got one string ({shown!r}); pass [{shown!r}].")
    try:
        iterator = iter(texts)
    except TypeError:
        raise TypeError(f"`{name}` must be a list of strings, got {type(texts).__name__}.") from None
    for index, text in enumerate(iterator):
        if not isinstance(text, str):
            raise TypeError(f"`{name}[{index}]` must be a string, got {type(text).__name__}.")
        yield text


def check_texts(name: str, texts: Any) -> list[str]:
    """[`iter_texts`] as a list.

    Example:

    ```python
    >>> check_texts("texts", "Merhaba dünya")
    Traceback (most recent call last):
    ...
    TypeError: `texts` must be a list of strings, got one string ('Merhaba dünya'); pass ['Merhaba dünya'].

    ```
    """
    return list(iter_texts(name, texts))


__all__ = ["check_bool", "check_choice", "check_int", "check_number", "check_texts", "check_token_ids", "iter_texts"]
