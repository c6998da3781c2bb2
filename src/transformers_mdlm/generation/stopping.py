"""Where a row's answer ends: its first EOS, or the token that completes a stop string."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class StopStringMatcher:
    """Finds the token that completes the first of `stop_strings` in a row's decoded text.

    Decoding is done on prefixes (a binary search over their lengths), so a stop string split across several tokens,
    or produced by a tokenizer that merges spaces, is found all the same.
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str]) -> None:
        if tokenizer is None or not hasattr(tokenizer, "decode"):
            raise ValueError(
                "`stop_strings` needs the model's tokenizer: pass `tokenizer=` to `generate` (the pipeline passes "
                "its own)."
            )
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)

    def _contains(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        return any(stop in text for stop in self.stop_strings)

    def end_index(self, tokens: list[int]) -> int | None:
        """The index of the token that completes a stop string, or `None` when the text holds none."""
        if not tokens or not self._contains(tokens):
            return None
        low, high = 1, len(tokens)  # the shortest prefix that contains a stop string has `high` tokens
        while low < high:
            middle = (low + high) // 2
            if self._contains(tokens[:middle]):
                high = middle
            else:
                low = middle + 1
        return high - 1


def output_padding_id(config: Any) -> int:
    """The id that pads finished rows in the output: the generation config's `pad_token_id` (the call's, else the one
    filled from the tokenizer or model), else its EOS id, as transformers' `generate` does; 0 when it has neither."""
    for candidate in (config.pad_token_id, config.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def pad_after_eos(
    sequences: torch.LongTensor, start: int, eos_token_id: int | None, pad_token_id: int
) -> torch.LongTensor:
    """Columns after each row's first EOS at or after column `start` become `pad_token_id`, as transformers pads the
    rows that finished early."""
    if eos_token_id is None or sequences.shape[1] <= start:
        return sequences
    new = sequences[:, start:]
    after_eos = (new == eos_token_id).long().cumsum(dim=1) - (new == eos_token_id).long() > 0
    padded = sequences.clone()
    padded[:, start:] = new.masked_fill(after_eos, pad_token_id)
    return padded


__all__ = ["StopStringMatcher", "output_padding_id", "pad_after_eos"]
