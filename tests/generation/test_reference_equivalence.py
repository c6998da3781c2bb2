"""Greedy decoding equals the reference sampler token for token, on a small random ModernBERT."""

from __future__ import annotations

import pytest
import torch

from conftest import EOS, MASK, PAD, left_pad, random_prompt
from reference_sampler import reference_generate, reference_infill
from transformers_mdlm.presets import generation_preset

# The authors' sampling function's defaults: where a setting below is left out, both sides use theirs.
AUTHORS = generation_preset("diffutron-sampler")

SETTINGS = {
    "paper-short": dict(max_new_tokens=32, steps=16, block_length=32),
    "paper-long-blocks": dict(max_new_tokens=64, steps=32, block_length=32),
    "uneven-blocks": dict(max_new_tokens=23, steps=10, block_length=7),
    "few-steps": dict(max_new_tokens=20, steps=3, block_length=20),
    "more-steps-than-masks": dict(max_new_tokens=6, steps=40, block_length=4),
    "one-token-per-step": dict(max_new_tokens=12, steps=12, block_length=4),
    "guidance": dict(max_new_tokens=16, steps=8, block_length=8, cfg_scale=1.5),
    "penalty": dict(max_new_tokens=24, steps=12, block_length=8, repetition_penalty=1.3),
    "guidance-and-penalty": dict(max_new_tokens=16, steps=16, block_length=16, cfg_scale=0.5, repetition_penalty=1.2),
    "cosine": dict(max_new_tokens=24, steps=9, block_length=12, schedule="cosine"),
    # The defaults above include the authors' repetition penalty 1.2; these switch it off.
    "no-penalty": dict(max_new_tokens=32, steps=16, block_length=8, repetition_penalty=1.0),
    "guidance-no-penalty": dict(max_new_tokens=16, steps=8, block_length=8, cfg_scale=1.5, repetition_penalty=1.0),
    "authors-defaults": dict(max_new_tokens=96),  # 128 steps, one block of 128, penalty 1.2 on both sides
}


def _generate(model, input_ids, **kwargs):
    """The whole decoded canvas (the last history frame, before `generate` pads after EOS), checked against the
    returned sequences: equal up to each row's first new EOS, padding after it."""
    out = model.generate(input_ids, output_history=True, **kwargs)
    raw = out.history[-1]
    width = input_ids.shape[1]
    for row, sequence in zip(raw.tolist(), out.sequences.tolist(), strict=True):
        new = row[width:]
        end = new.index(EOS) + 1 if EOS in new else len(new)
        assert sequence == row[:width] + new[:end] + [PAD] * (len(new) - end)
    return raw


def _new_tokens_reference(model, prompts, **settings):
    settings = {"max_new_tokens": 128, "steps": 128, "block_length": 128, **settings}  # the authors' defaults
    canvas = reference_generate(model, prompts, mask_id=MASK, eos_id=EOS, **settings)
    n = settings["max_new_tokens"]
    return [canvas[row, len(p) : len(p) + n].tolist() for row, p in enumerate(prompts)]


@pytest.mark.parametrize("name", list(SETTINGS))
def test_single_prompt_matches_reference(tiny_modernbert, name):
    settings = SETTINGS[name]
    prompt = random_prompt(torch.Generator().manual_seed(len(name)), 9)
    expected = _new_tokens_reference(tiny_modernbert, [prompt], **settings)
    out = _generate(tiny_modernbert, torch.tensor([prompt]), **{**AUTHORS, **settings})
    assert out[0, len(prompt) :].tolist() == expected[0]
    assert out[0, : len(prompt)].tolist() == prompt


@pytest.mark.parametrize("name", ["paper-short", "uneven-blocks", "guidance", "penalty", "guidance-no-penalty"])
def test_uneven_batch_matches_reference(tiny_modernbert, name):
    settings = SETTINGS[name]
    g = torch.Generator().manual_seed(7)
    prompts = [random_prompt(g, n) for n in (3, 11, 6)]
    expected = _new_tokens_reference(tiny_modernbert, prompts, **settings)
    ids, mask = left_pad(prompts)
    out = _generate(tiny_modernbert, ids, attention_mask=mask, **{**AUTHORS, **settings})
    assert [row[ids.shape[1] :] for row in out.tolist()] == expected


@pytest.mark.parametrize("penalty", [1.0, 1.2])
def test_empty_prompt_matches_reference(tiny_modernbert, penalty):
    """An all-mask canvas gives every position the same hidden state: exact ties, broken as the reference's topk."""
    settings = dict(max_new_tokens=16, steps=8, block_length=8, repetition_penalty=penalty)
    expected = _new_tokens_reference(tiny_modernbert, [[]], **settings)
    out = _generate(tiny_modernbert, torch.zeros(1, 0, dtype=torch.long), **settings)
    assert out[0].tolist() == expected[0]


def test_random_remasking_draws_the_reference_positions_distribution(tiny_modernbert):
    """`random` remasking commits uniformly random positions: over seeds, every position is committed first."""
    first = set()
    for seed in range(40):
        out = tiny_modernbert.generate(
            torch.tensor([[10, 11]]),
            max_new_tokens=4,
            steps=4,
            block_length=4,
            remasking="random",
            output_history=True,
            generator=torch.Generator().manual_seed(seed),
        )
        first.add(int((out.history[1][0, 2:] != MASK).nonzero()[0]))
    assert first == {0, 1, 2, 3}


@pytest.mark.parametrize(
    "settings",
    [
        dict(steps=4, block_length=4),
        dict(steps=12, block_length=16),
        dict(steps=6, block_length=5, cfg_scale=1.0),
        dict(steps=8, block_length=8, repetition_penalty=1.25),
    ],
)
def test_infill_matches_reference(tiny_modernbert, settings):
    g = torch.Generator().manual_seed(3)
    inputs = []
    for length in (14, 9):
        tokens = random_prompt(g, length)
        for position in torch.randperm(length, generator=g)[: length // 2].tolist():
            tokens[position] = MASK
        inputs.append(tokens)
    expected = reference_infill(tiny_modernbert, inputs, mask_id=MASK, eos_id=EOS, **settings)
    width = max(len(t) for t in inputs)
    ids = torch.full((2, width), 0, dtype=torch.long)
    mask = torch.zeros((2, width), dtype=torch.long)
    for row, tokens in enumerate(inputs):  # right padding here, to exercise either side
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    out = tiny_modernbert.infill(ids, attention_mask=mask, **{"repetition_penalty": 1.2, **settings})
    for row, tokens in enumerate(inputs):
        assert out[row, : len(tokens)].tolist() == expected[row, : len(tokens)].tolist()
        assert (out[row, len(tokens) :] == 0).all()
