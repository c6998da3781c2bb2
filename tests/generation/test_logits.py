"""Logit shaping: the reference penalty, n-gram bans, top-k / top-p, Gumbel-max sampling and confidence rules."""

from __future__ import annotations

import pytest
import torch

from transformers_mdlm.generation.logits import (
    apply_repetition_penalty,
    ban_repeated_ngrams,
    confidence_scores,
    filter_logits,
    propose_tokens,
    token_presence,
)


def test_presence_excludes_mask_eos_and_positions_outside_the_row():
    tokens = torch.tensor([[5, 4, 1, 7, 9], [2, 2, 3, 0, 0]])
    valid = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    presence = token_presence(tokens, valid, vocab_size=10, exclude=(4, 1))
    assert presence[0].nonzero().flatten().tolist() == [5, 7]
    assert presence[1].nonzero().flatten().tolist() == [2, 3]


def test_penalty_by_hand():
    logits = torch.tensor([[[2.0, -2.0, 3.0, -1.0], [0.5, 1.0, -0.5, 0.0]]])
    presence = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, presence, 2.0)
    assert out.tolist() == [[[1.0, -4.0, 3.0, -1.0], [0.25, 0.5, -0.5, 0.0]]]
    assert apply_repetition_penalty(logits, presence, 1.0) is logits


def test_sparse_penalty_equals_the_dense_one_in_place():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 50, generator=generator)
    tokens = torch.tensor([[7, 4, 7, 1, 30, 0], [2, 2, 49, 4, 4, 4]])  # repeats, mask (4), EOS (1), padding (0)
    valid = torch.tensor([[True] * 5 + [False], [True] * 6])
    presence = token_presence(tokens, valid, vocab_size=50, exclude=(4, 1))
    dense = apply_repetition_penalty(logits, presence, 1.3)
    sparse = apply_repetition_penalty(logits.clone(), presence, 1.3, token_ids=tokens)
    assert torch.equal(sparse, dense)
    assert not torch.equal(dense, logits)  # the penalty did something
    in_place = logits.clone()
    assert apply_repetition_penalty(in_place, presence, 1.3, token_ids=tokens) is in_place


def _banned(logits: torch.Tensor) -> list[list[list[int]]]:
    return [[(row == float("-inf")).nonzero().flatten().tolist() for row in slots] for slots in logits]


def test_ngram_bans_by_hand_at_every_place_of_the_ngram():
    # Row: 5 6 7 _ 9 5 _ with masks at 3 and 6; "5 6 7" and "6 7 ..." are the known trigrams' material.
    tokens = torch.tensor([[5, 6, 7, 0, 9, 5, 0]])
    known = torch.tensor([[True, True, True, False, True, True, False]])
    positions = torch.tensor([[3, 6]])
    bigram = ban_repeated_ngrams(torch.zeros(1, 2, 12), tokens, known, positions, size=2)
    # At 3: after 7 nothing was seen ("7 x" is new), before 9 nothing either; at 6: after 5 came 6 (banned).
    assert _banned(bigram) == [[[], [6]]]
    # A middle place: 5 _ 7 is known at 0..2 (5 6 7), so "5 x 7" bans x = 6 at position 1 of a new row.
    tokens = torch.tensor([[5, 6, 7, 8, 5, 0, 7]])
    known = torch.tensor([[True, True, True, True, True, False, True]])
    trigram = ban_repeated_ngrams(torch.zeros(1, 1, 12), tokens, known, torch.tensor([[5]]), size=3)
    assert _banned(trigram) == [[[6]]]
    # The window's other places must all be known: with 7 unknown, nothing is banned at the middle place.
    known[0, 6] = False
    assert _banned(ban_repeated_ngrams(torch.zeros(1, 1, 12), tokens, known, torch.tensor([[5]]), size=3)) == [[[]]]
    # One token can also complete two equal n-grams itself: 7 between two 7s makes "7 7" twice (and 3 makes "7 3",
    # which the row holds).
    tokens, known = torch.tensor([[7, 0, 7, 3]]), torch.tensor([[True, False, True, True]])
    assert _banned(ban_repeated_ngrams(torch.zeros(1, 1, 12), tokens, known, torch.tensor([[1]]), size=2)) == [
        [[3, 7]]
    ]
    tokens, known = torch.tensor([[5, 6, 7, 8, 5, 0, 7]]), torch.tensor([[True, True, True, True, True, False, False]])
    # Size 1 bans every known token of the row; a size longer than the row bans nothing.
    assert _banned(ban_repeated_ngrams(torch.zeros(1, 1, 12), tokens, known, torch.tensor([[5]]), size=1)) == [
        [[5, 6, 7, 8]]
    ]
    assert _banned(ban_repeated_ngrams(torch.zeros(1, 1, 12), tokens, known, torch.tensor([[5]]), size=8)) == [[[]]]


@pytest.mark.parametrize("size", [2, 3, 4])
def test_ngram_bans_equal_a_brute_force_search(size):
    generator = torch.Generator().manual_seed(size)
    tokens = torch.randint(5, 9, (3, 20), generator=generator)  # a small vocabulary: many repeats
    known = torch.rand(3, 20, generator=generator) < 0.7
    positions = torch.stack([torch.randperm(20, generator=generator)[:6] for _ in range(3)])
    fast = _banned(ban_repeated_ngrams(torch.zeros(3, 6, 9), tokens, known, positions, size))
    grams = [
        {tuple(row[i : i + size].tolist()) for i in range(20 - size + 1) if bool(ok[i : i + size].all())}
        for row, ok in zip(tokens, known, strict=True)
    ]
    for r in range(3):
        for s, position in enumerate(positions[r].tolist()):
            expected = set()
            for token in range(9):  # would writing `token` at `position` complete a known n-gram?
                row, ok = tokens[r].clone(), known[r].clone()
                row[position], ok[position] = token, True
                through = [
                    tuple(row[start : start + size].tolist())
                    for start in range(max(0, position - size + 1), min(position, 20 - size) + 1)
                    if bool(ok[start : start + size].all())
                ]  # the n-grams the token completes: one already in the row, or two equal ones, repeat
                if set(through) & grams[r] or len(set(through)) < len(through):
                    expected.add(token)
            assert fast[r][s] == sorted(expected), (r, position)


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    assert filter_logits(logits, temperature=1.0, top_k=2, top_p=None).isfinite().tolist() == [
        [[True, True, False, False]]
    ]
    assert filter_logits(logits, temperature=1.0, top_k=None, top_p=0.7).isfinite().tolist() == [
        [[True, True, False, False]]
    ]
    # A low temperature sharpens the distribution: the nucleus shrinks to the top token.
    assert filter_logits(logits, temperature=0.1, top_k=None, top_p=0.7).isfinite().tolist() == [
        [[True, False, False, False]]
    ]
    kept = filter_logits(logits, temperature=1.0, top_k=None, top_p=None)
    assert torch.equal(kept, logits)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_gumbel_max_samples_softmax_at_temperature(temperature):
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    logits = probs.log().expand(1, 40000, 4)
    draws = propose_tokens(logits, temperature=temperature, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.flatten(), minlength=4).double() / draws.numel()
    expected = torch.softmax(probs.log().double() / temperature, dim=0)
    assert torch.allclose(freq, expected, atol=0.01)
    assert torch.equal(propose_tokens(logits, temperature=0.0), torch.zeros(1, 40000, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_greedy_proposals_are_argmax_with_ties_nan_and_inf(dtype):
    # Greedy decoding takes `max(dim=-1).indices` (faster on the CPU); it must be the reference's `argmax` everywhere,
    # including exact ties (the first maximum), a NaN (which wins) and a row of -inf.
    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (4, 5, 1000), generator=generator).to(dtype)  # many exact ties at the maximum
    logits[0, 1, 500] = float("nan")
    logits[1, 2] = float("-inf")
    logits[2, 3, 7:] = float("-inf")
    assert torch.equal(propose_tokens(logits, temperature=0.0), logits.argmax(dim=-1))
    assert propose_tokens(logits, temperature=0.0)[0, 1] == 500
    assert propose_tokens(logits, temperature=0.0)[1, 2] == 0
    wide = torch.randn(3, 256_000, generator=generator).to(dtype)[:, ::2]  # strided, vectorised path
    assert torch.equal(propose_tokens(wide, temperature=0.0), wide.argmax(dim=-1))


def test_confidence_rules():
    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.9, 0.05, 0.05]]]))
    x0 = logits.argmax(-1)
    low = confidence_scores(logits, x0, "low_confidence")
    torch.testing.assert_close(low, torch.tensor([[0.7, 0.4, 0.9]]))
    margin = confidence_scores(logits, x0, "margin")
    torch.testing.assert_close(margin, torch.tensor([[0.5, 0.05, 0.85]]))
    entropy = confidence_scores(logits, x0, "entropy")
    assert entropy[0].argsort().tolist() == [1, 0, 2]  # most uncertain first
    rand = confidence_scores(logits, x0, "random", generator=torch.Generator().manual_seed(0))
    assert rand.shape == (1, 3) and ((rand >= 0) & (rand < 1)).all()
    with pytest.raises(ValueError, match="remasking"):
        confidence_scores(logits, x0, "best")
