"""The canvas: one packing idiom, the decoding layout, and the way back to the caller's layout."""

from __future__ import annotations

import torch

from conftest import EOS, MASK, PAD, left_pad
from transformers_mdlm import MaskedDiffusionGenerationConfig
from transformers_mdlm.generation.canvas import (
    front_pack,
    generation_canvas,
    infilling_canvas,
    is_front_packed,
    pack_to_front,
)

CONFIG = MaskedDiffusionGenerationConfig(mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD)


def right_pad(rows):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def test_pack_to_front_keeps_order_and_puts_the_rest_after():
    selected = torch.tensor([[False, True, False, True, True], [True, False, False, False, True]])
    assert pack_to_front(selected).tolist() == [[1, 3, 4, 0, 2], [0, 4, 1, 2, 3]]
    assert pack_to_front(selected, 2).tolist() == [[1, 3], [0, 4]]


def test_front_packed_detection():
    assert is_front_packed(torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]))
    assert not is_front_packed(torch.tensor([[1, 1, 0], [0, 1, 1]]))
    assert is_front_packed(torch.ones(2, 1, dtype=torch.long))


def test_left_and_right_padding_give_the_same_canvas():
    rows = [[11, 12, 13], [21], [31, 32]]
    left = generation_canvas(*left_pad(rows), 4, CONFIG, PAD)
    right = generation_canvas(*right_pad(rows), 4, CONFIG, PAD)
    assert not left.packed and right.packed  # right padding is the decoding layout: nothing to move
    assert torch.equal(left.tokens, right.tokens)
    assert left.tokens.tolist() == [
        [11, 12, 13, MASK, MASK, MASK, MASK],
        [21, MASK, MASK, MASK, MASK, PAD, PAD],
        [31, 32, MASK, MASK, MASK, MASK, PAD],
    ]
    assert left.region_start.tolist() == [3, 1, 2]
    assert torch.equal(left.real, right.real) and int(left.real.sum()) == 3 + 1 + 2 + 3 * 4


def test_to_output_and_from_output_are_inverse_in_both_layouts():
    g = torch.Generator().manual_seed(0)
    rows = [[11, MASK, 13, 14], [21, 22]]
    for ids, mask in (left_pad(rows), right_pad(rows)):
        canvas = generation_canvas(ids, mask, 3, CONFIG, PAD)
        decoded = torch.where(canvas.real, torch.randint(20, 90, canvas.tokens.shape, generator=g), canvas.tokens)
        out = canvas.to_output(decoded)
        assert out.shape == (2, ids.shape[1] + 3)
        assert torch.equal(out[:, : ids.shape[1]][mask == 0], ids[mask == 0])  # the caller's padding is kept
        assert out[0, 1] == decoded[0, 1]  # a decoded prompt mask shows up in the prompt columns
        assert torch.equal(canvas.from_output(out, canvas.tokens), decoded)
        infill = infilling_canvas(ids, mask, CONFIG, PAD)
        filled = torch.where(infill.real, torch.randint(20, 90, infill.tokens.shape, generator=g), infill.tokens)
        assert torch.equal(infill.from_output(infill.to_output(filled), infill.tokens), filled)


def test_front_pack_moves_left_padding_once():
    ids, mask = left_pad([[5, 6, 7], [8]])
    tokens, real, packed = front_pack(ids, mask, 4, PAD)
    assert tokens.tolist() == [[5, 6, 7, PAD], [8, PAD, PAD, PAD]]
    assert real.tolist() == [[True, True, True, False], [True, False, False, False]] and not packed
