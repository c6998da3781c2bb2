"""The canvas: a batch laid out for decoding, and the one packing idiom every layout change uses.

In the decoding layout every row starts at column 0 (prompt, then the masked region, then padding on the right), so
that block `b` of every row is a plain column range after that row's prompt. Inputs already in that layout (unpadded,
or right-padded as the pipeline sends them) are used as they are; left-padded inputs, transformers' habit for
decoder-only models, are packed to the front once, and [`Canvas.to_output`] puts the result back in the caller's
layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .configuration import MaskedDiffusionGenerationConfig


def pack_to_front(selected: torch.BoolTensor, width: int | None = None) -> torch.LongTensor:
    """The columns of each row's `selected` positions, in order, followed by the other columns.

    A stable sort of `~selected`, so the first `selected[row].sum()` entries of a row are its selected columns. With
    `width`, only the first `width` columns of the order are returned.

    Example:

    ```python
    >>> pack_to_front(torch.tensor([[False, True, False, True]]))
    tensor([[1, 3, 0, 2]])

    ```
    """
    order = torch.sort((~selected).to(torch.int8), dim=-1, stable=True).indices
    return order if width is None else order[..., :width]


def is_front_packed(attention_mask: torch.Tensor) -> bool:
    """Whether every row's tokens come first (no padding before a token): unpadded or right-padded."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()) if attention_mask.shape[1] > 1 else True


@dataclass
class Canvas:
    """A batch in the decoding layout: every row starts at column 0, padding (if any) on the right.

    Attributes:
        tokens: `(batch, width)` token ids; positions to decode hold the mask id.
        real: positions that belong to the row (prompt, masked region, or infill input).
        attend: positions the encoder attends to.
        given: positions replaced by masks in the unconditional pass of classifier-free guidance.
        region_start: first column of each row's decoded region (the prompt length, or 0 for infilling).
        region_length: length of each row's decoded region (`max_new_tokens`, or the input length for infilling).
        candidates_from_start: whether masks before the current block also compete (mask tokens inside a prompt
            compete in every block of `generate`, as in the reference; `infill` restricts each step to the block).
        input_ids, attention_mask: the caller's batch, for [`to_output`].
        packed: whether `input_ids` was already in the decoding layout (no packing was needed).
        new_tokens: tokens added after each prompt (0 for infilling).
    """

    tokens: torch.LongTensor
    real: torch.BoolTensor
    attend: torch.BoolTensor
    given: torch.BoolTensor
    region_start: torch.LongTensor
    region_length: torch.LongTensor
    candidates_from_start: bool
    input_ids: torch.LongTensor
    attention_mask: torch.LongTensor
    packed: bool
    new_tokens: int

    def to_output(self, tokens: torch.Tensor, padding: int | bool | None = None) -> torch.Tensor:
        """`tokens` (or any per-position values in the decoding layout) in the caller's layout.

        For `generate`: the input columns (any decoded prompt mask filled in) followed by `new_tokens` columns, as
        transformers' `generate` returns the prompt followed by the new tokens. For `infill`: shaped like the input.
        The caller's padding positions keep the caller's tokens, or get `padding` when it is given.
        """
        keep = self.attention_mask.bool()
        if padding is None:
            prompt = self.input_ids.to(tokens.dtype)
        else:
            prompt = torch.full(self.input_ids.shape, padding, dtype=tokens.dtype, device=tokens.device)
        if self.packed:  # the same columns: copy what decoding may have changed (prompt masks)
            span = min(prompt.shape[1], tokens.shape[1])
            prompt = prompt.clone()
            prompt[:, :span] = torch.where(keep[:, :span], tokens[:, :span], prompt[:, :span])
        else:
            prompt = prompt.clone()
            prompt[keep] = tokens[self.real & self.prompt_columns()]
        if not self.new_tokens:
            return prompt
        return torch.cat([prompt, tokens.gather(1, self._new_token_index())], dim=1)

    def from_output(self, sequences: torch.LongTensor, tokens: torch.LongTensor) -> torch.LongTensor:
        """The inverse of [`to_output`]: `tokens` (the decoding layout) updated with `sequences` (the caller's)."""
        expected = (self.input_ids.shape[0], self.input_ids.shape[1] + self.new_tokens)
        if not isinstance(sequences, torch.Tensor) or tuple(sequences.shape) != expected:
            shape = tuple(sequences.shape) if isinstance(sequences, torch.Tensor) else type(sequences).__name__
            raise ValueError(f"A replacement for `sequences` must be a tensor of shape {expected}, got {shape}.")
        sequences = sequences.to(device=tokens.device, dtype=tokens.dtype)
        keep = self.attention_mask.bool()
        width = self.input_ids.shape[1]
        out = tokens.clone()
        if self.packed:
            span = min(width, out.shape[1])
            out[:, :span] = torch.where(keep[:, :span], sequences[:, :span], out[:, :span])
        else:
            out[self.real & self.prompt_columns()] = sequences[:, :width][keep]
        if self.new_tokens:
            out.scatter_(1, self._new_token_index(), sequences[:, width:])
        return out

    def _new_token_index(self) -> torch.LongTensor:
        return self.region_start[:, None] + torch.arange(self.new_tokens, device=self.region_start.device)

    def prompt_columns(self) -> torch.BoolTensor:
        """Columns of the decoding layout that hold the caller's input (before the added region)."""
        columns = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        lengths = self.attention_mask.sum(dim=1)
        return columns[None, :] < lengths[:, None]


def front_pack(
    input_ids: torch.LongTensor, attention_mask: torch.LongTensor, width: int, pad_id: int
) -> tuple[torch.LongTensor, torch.BoolTensor, bool]:
    """Each row's tokens (mask 1), in order, at the front of a `(batch, width)` tensor padded with `pad_id`.

    Returns the tokens, the map of real positions, and whether the input already was in that layout.
    """
    keep = attention_mask.bool()
    packed = is_front_packed(attention_mask)
    source = input_ids if packed else input_ids.gather(1, pack_to_front(keep))
    tokens = torch.full((input_ids.shape[0], width), pad_id, dtype=torch.long, device=input_ids.device)
    span = min(width, input_ids.shape[1])
    tokens[:, :span] = source[:, :span]
    real = torch.arange(width, device=input_ids.device)[None, :] < keep.sum(dim=1)[:, None]
    return torch.where(real, tokens, torch.full_like(tokens, pad_id)), real, packed


def is_given(tokens: torch.LongTensor, config: MaskedDiffusionGenerationConfig) -> torch.BoolTensor:
    """Tokens the unconditional pass of guidance hides: everything but masks and EOS (as the reference does)."""
    given = tokens != config.mask_token_id
    if config.eos_token_id is not None:
        given &= tokens != config.eos_token_id
    return given


def generation_canvas(
    input_ids: torch.LongTensor,
    attention_mask: torch.LongTensor,
    max_new_tokens: int,
    config: MaskedDiffusionGenerationConfig,
    pad_id: int,
) -> Canvas:
    """Each row's prompt followed by `max_new_tokens` masks, in the decoding layout."""
    prompt_lengths = attention_mask.sum(dim=1)
    width = int(prompt_lengths.max()) + max_new_tokens
    tokens, in_prompt, packed = front_pack(input_ids, attention_mask, width, pad_id)
    columns = torch.arange(width, device=input_ids.device)
    real = columns < (prompt_lengths[:, None] + max_new_tokens)
    tokens = torch.where(real & ~in_prompt, torch.full_like(tokens, config.mask_token_id), tokens)
    return Canvas(
        tokens=tokens,
        real=real,
        attend=real,
        given=in_prompt & is_given(tokens, config),
        region_start=prompt_lengths,
        region_length=torch.full_like(prompt_lengths, max_new_tokens),
        candidates_from_start=True,
        input_ids=input_ids,
        attention_mask=attention_mask,
        packed=packed,
        new_tokens=max_new_tokens,
    )


def infilling_canvas(
    input_ids: torch.LongTensor,
    attention_mask: torch.LongTensor,
    config: MaskedDiffusionGenerationConfig,
    pad_id: int,
) -> Canvas:
    """The input itself in the decoding layout; EOS tokens inside it are not attended to, as in the reference."""
    lengths = attention_mask.sum(dim=1)
    tokens, real, packed = front_pack(input_ids, attention_mask, int(lengths.max()), pad_id)
    not_eos = tokens != config.eos_token_id if config.eos_token_id is not None else torch.ones_like(real)
    return Canvas(
        tokens=tokens,
        real=real,
        attend=real & not_eos,
        given=real & is_given(tokens, config),
        region_start=torch.zeros_like(lengths),
        region_length=lengths,
        candidates_from_start=False,
        input_ids=input_ids,
        attention_mask=attention_mask,
        packed=packed,
        new_tokens=0,
    )


__all__ = ["Canvas", "front_pack", "generation_canvas", "infilling_canvas", "is_front_packed", "pack_to_front"]
