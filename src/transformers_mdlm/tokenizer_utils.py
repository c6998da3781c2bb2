"""Small tokenizer helpers shared by the pipeline, the visualisations and the CLI."""

from __future__ import annotations

from typing import Any


def special_ids_except_mask(tokenizer: Any) -> set[int]:
    """The tokenizer's special token ids without the mask id: what a denoising frame hides (masks stay visible)."""
    return set(tokenizer.all_special_ids) - {tokenizer.mask_token_id}


def decode_frame(tokens: list[int], tokenizer: Any) -> str:
    """A denoising frame as text: special tokens other than the mask removed, masks shown as the mask token."""
    hidden = special_ids_except_mask(tokenizer)
    return tokenizer.decode([t for t in tokens if t not in hidden], skip_special_tokens=False)


__all__ = ["decode_frame", "special_ids_except_mask"]
