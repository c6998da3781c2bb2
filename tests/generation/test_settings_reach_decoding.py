"""Every setting a call gives reaches decoding, and none given earlier overrides it silently (found by an audit:
each test fails on the code before its fix)."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, pipeline

from conftest import EOS, MASK, build_model, left_pad, make_tiny_tokenizer, modernbert_config
from transformers_mdlm import AutoModelForMaskedDiffusion, MaskedDiffusionGenerationConfig, MaskedDiffusionScheduler
from transformers_mdlm.generation.dual_cache import dual_cache_attention_enabled
from transformers_mdlm.model_card import build_model_card


def _model():
    model = build_model(modernbert_config())
    model.generation_config.update(max_new_tokens=5, steps=5, repetition_penalty=1.3, stop_on_eos=True)
    return model


def test_a_plain_generation_config_keeps_the_models_saved_settings():
    # transformers fills what a passed GenerationConfig leaves unset from `model.generation_config`; the conversion
    # used to start from this package's defaults instead (128 new tokens, no penalty, no EOS stop).
    model, ids = _model(), torch.tensor([[10, 11, 12]])
    out = model.generate(ids, generation_config=GenerationConfig(top_k=20))
    assert out.shape == (1, 3 + 5)
    assert torch.equal(out, model.generate(ids, top_k=20))
    converted = MaskedDiffusionGenerationConfig.from_generation_config(
        GenerationConfig(top_k=20, max_new_tokens=7), defaults=model.generation_config
    )
    assert (converted.max_new_tokens, converted.top_k, converted.repetition_penalty) == (7, 20, 1.3)
    pipe = pipeline("masked-diffusion", model=model, tokenizer=make_tiny_tokenizer())
    answer = pipe("w1 w2", generation_config=GenerationConfig(top_k=20), return_tensors=True)
    assert len(answer[0]["generated_token_ids"]) <= 2 + 5


def test_a_calls_generation_config_replaces_the_pipelines_construction_settings():
    tokenizer = make_tiny_tokenizer()
    pipe = pipeline("masked-diffusion", model=build_model(modernbert_config()), tokenizer=tokenizer,
                    max_new_tokens=4, steps=4)  # fmt: skip
    config = MaskedDiffusionGenerationConfig(max_new_tokens=12, steps=12, mask_token_id=MASK)
    out = pipe("w1", generation_config=config, return_tensors=True)
    assert len(out[0]["generated_token_ids"]) == 1 + 12
    assert len(pipe("w1", return_tensors=True)[0]["generated_token_ids"]) == 1 + 4


def test_max_length_alone_decides_the_length():
    assert MaskedDiffusionGenerationConfig(max_length=8).max_new_tokens is None
    assert MaskedDiffusionGenerationConfig().max_new_tokens == 128
    assert MaskedDiffusionGenerationConfig(max_length=8, max_new_tokens=3).max_new_tokens == 3
    model = build_model(modernbert_config())
    model.generation_config.mask_token_id = MASK
    assert model.generate(torch.tensor([[10, 11, 12]]), generation_config=GenerationConfig(max_length=8), steps=5,
                          ).shape == (1, 8)  # fmt: skip
    # The pipeline's length check used the `max_new_tokens` of its construction (128: "131 tokens, more than 128").
    pipe = pipeline("masked-diffusion", model=model, tokenizer=make_tiny_tokenizer())
    out = pipe("w1 w2 w3", max_length=10, steps=4, return_tensors=True)
    assert len(out[0]["generated_token_ids"]) <= 10


def test_return_history_given_at_construction_records_the_history():
    pipe = pipeline("masked-diffusion", model=build_model(modernbert_config()), tokenizer=make_tiny_tokenizer(),
                    max_new_tokens=4, steps=2, return_history=True)  # fmt: skip
    out = pipe("w1 w2")
    history = out[0]["history"]  # was: IndexError, the config never recorded it
    assert len(history) == 3 and history[0].count("<mask>") == 4 and "<mask>" not in history[-1]


def test_infilling_fills_every_mask_whatever_stop_on_eos_says():
    model = build_model(modernbert_config())
    model.generation_config.update(mask_token_id=MASK, eos_token_id=EOS, pad_token_id=0)
    ids = torch.tensor([[10, EOS, 11, MASK, MASK, MASK, 12]])
    filled = model.infill(ids, steps=3, stop_on_eos=True)
    assert not (filled == MASK).any() and not (filled[0, 3:6] == 0).any()  # no blank turned into padding
    assert torch.equal(filled, model.infill(ids, steps=3))


def test_infilling_returns_num_return_sequences_fillings_per_input():
    model = build_model(modernbert_config())
    model.generation_config.mask_token_id = MASK
    ids = torch.tensor([[10, MASK, MASK, MASK, MASK, 13], [20, MASK, 21, 22, MASK, 23]])
    out = model.infill(
        ids, num_return_sequences=3, do_sample=True, steps=2, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (6, 6)
    assert out[:3, 0].tolist() == [10] * 3 and out[3:, 0].tolist() == [20] * 3
    assert len({tuple(row) for row in out[:3].tolist()}) > 1


def test_a_setting_that_contradicts_the_passed_scheduler_raises():
    model = build_model(modernbert_config())
    model.generation_config.mask_token_id = MASK
    ids = torch.tensor([[10, 11, 12]])
    with pytest.raises(ValueError, match=r"remasking='random' \(the scheduler's: 'low_confidence'\)"):
        model.generate(ids, remasking="random", scheduler=MaskedDiffusionScheduler(), max_new_tokens=4, steps=2)
    # The scheduler's random remasking is what decodes, so several greedy sequences are not identical: allowed.
    out = model.generate(ids, scheduler=MaskedDiffusionScheduler(remasking="random"), num_return_sequences=3,
                         max_new_tokens=6, steps=6, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.shape == (3, 9) and len({tuple(row) for row in out.tolist()}) > 1


def test_exact_decoding_of_an_eager_model_is_unchanged_while_a_dual_cache_call_has_it_switched():
    # A call without a cache, while another call holds the model switched to the cache's attention, got sdpa's
    # boolean mask in eager attention (which adds its mask): padding was attended.
    torch.manual_seed(0)
    model = AutoModelForMaskedDiffusion.from_config(modernbert_config(), attn_implementation="eager").eval()
    model.generation_config.mask_token_id = MASK
    ids, mask = left_pad([[10, 11, 12, 13, 14, 15], [20]])
    settings = dict(attention_mask=mask, max_new_tokens=8, steps=8)
    alone = model.generate(ids, **settings)
    with dual_cache_attention_enabled(model):
        assert torch.equal(model.generate(ids, **settings), alone)
    assert model.config._attn_implementation == "eager"


def test_the_card_shows_do_sample_and_kv_cache():
    model = build_model(modernbert_config())
    model.generation_config.update(do_sample=True, temperature=0.0, kv_cache="dual")
    card = str(build_model_card(model))
    assert "| `do_sample` | True |" in card and "| `kv_cache` | dual |" in card
