"""Remasking strategies: each commits its own most confident positions, and they can be told apart."""

from __future__ import annotations

import pytest
import torch

from conftest import MASK, build_model, modernbert_config

SHORT = dict(max_new_tokens=16, steps=8, block_length=8)


@pytest.mark.parametrize("remasking", ["low_confidence", "random", "margin", "entropy"])
def test_every_remasking_strategy_fills_the_canvas(tiny_modernbert, remasking):
    out = tiny_modernbert.generate(
        torch.tensor([[10, 11]]), remasking=remasking, generator=torch.Generator().manual_seed(0), **SHORT
    )
    assert not (out == MASK).any()


# (initializer range, prompt): on the first case entropy differs from the others, on the second margin does.
REMASKING_CASES = [(1.0, [20, 30, 40]), (0.3, [10, 11, 12])]


def _first_commits(model, prompt, remasking):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=12, steps=4, remasking=remasking, output_history=True)
    return set((out.history[1][0, len(prompt) :] != MASK).nonzero().flatten().tolist())


@pytest.mark.parametrize("case", REMASKING_CASES)
@pytest.mark.parametrize("remasking", ["low_confidence", "margin", "entropy"])
def test_each_remasking_strategy_commits_its_own_most_confident_positions(remasking, case):
    """The first step commits the top-3 masked positions by the strategy's own score, computed here by hand."""
    from transformers_mdlm.generation.logits import confidence_scores

    model = build_model(modernbert_config(initializer_range=case[0]))
    prompt = case[1]
    canvas = torch.tensor([prompt + [MASK] * 12])
    with torch.no_grad():
        logits = model(input_ids=canvas).logits[0, len(prompt) :]
    scores = confidence_scores(logits, logits.argmax(dim=-1), remasking)
    assert _first_commits(model, prompt, remasking) == set(scores.topk(3).indices.tolist())


def test_remasking_strategies_choose_differently():
    """Every pair of strategies commits different positions on one of the cases: the test above tells them apart."""
    firsts = {}
    for initializer_range, prompt in REMASKING_CASES:
        model = build_model(modernbert_config(initializer_range=initializer_range))
        for remasking in ("low_confidence", "margin", "entropy"):
            firsts.setdefault(remasking, []).append(_first_commits(model, prompt, remasking))
    for a, b in (("low_confidence", "margin"), ("low_confidence", "entropy"), ("margin", "entropy")):
        assert firsts[a] != firsts[b], (a, b, firsts)
