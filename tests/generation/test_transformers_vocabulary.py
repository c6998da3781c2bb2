"""transformers' generation vocabulary on masked diffusion decoding: the same names do the same things."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from conftest import EOS, MASK, PAD, build_model, make_tiny_tokenizer, modernbert_config
from transformers_mdlm import MaskedDiffusionGenerationConfig

SHORT = dict(max_new_tokens=8, steps=4, block_length=8)


def test_do_sample(tiny_modernbert):
    ids = torch.tensor([[10, 11, 12]])
    greedy = tiny_modernbert.generate(ids, **SHORT)
    assert torch.equal(tiny_modernbert.generate(ids, do_sample=False, temperature=0.9, **SHORT), greedy)

    def sample(seed, **kwargs):
        return tiny_modernbert.generate(ids, generator=torch.Generator().manual_seed(seed), **kwargs, **SHORT)

    # do_sample=True at temperature 0 samples at 1.0, exactly as temperature=1.0 does
    assert torch.equal(sample(3, do_sample=True), sample(3, temperature=1.0))
    assert torch.equal(sample(3, do_sample=True, temperature=0.5), sample(3, temperature=0.5))
    assert any(not torch.equal(sample(seed, do_sample=True), greedy) for seed in range(4))
    assert MaskedDiffusionGenerationConfig().do_sample is None
    with pytest.raises(TypeError, match="`do_sample` must be True, False or None"):
        MaskedDiffusionGenerationConfig(do_sample="yes")


def test_num_return_sequences_repeats_each_prompt(tiny_modernbert):
    ids = torch.tensor([[10, 11, 12], [20, 21, 22]])
    out = tiny_modernbert.generate(
        ids, num_return_sequences=3, do_sample=True, generator=torch.Generator().manual_seed(0), **SHORT
    )
    assert out.shape == (6, 11)
    assert out[:3, :3].tolist() == [[10, 11, 12]] * 3 and out[3:, :3].tolist() == [[20, 21, 22]] * 3
    assert len({tuple(row) for row in out[:3, 3:].tolist()}) > 1  # samples differ
    # Fully greedy decoding would repeat one answer: refused, as transformers refuses greedy decoding with n > 1.
    with pytest.raises(ValueError, match="`num_return_sequences=2` with greedy decoding"):
        tiny_modernbert.generate(ids, num_return_sequences=2, **SHORT)
    with pytest.raises(ValueError, match="identical answers"):
        tiny_modernbert.generate(ids, num_return_sequences=2, do_sample=False, temperature=0.7, **SHORT)
    # Greedy tokens in a random order are not one answer: allowed, each row with its own order.
    orders = tiny_modernbert.generate(
        ids, num_return_sequences=3, remasking="random", generator=torch.Generator().manual_seed(0), **SHORT
    )
    assert orders.shape == (6, 11) and orders[:3, :3].tolist() == [[10, 11, 12]] * 3
    assert len({tuple(row) for row in orders[:3, 3:].tolist()}) > 1  # the orders, and so the answers, differ


def test_a_plain_generation_config_is_honoured(fresh_modernbert):
    model = fresh_modernbert
    ids = torch.tensor([[10, 11, 12]])
    plain = GenerationConfig(max_new_tokens=6, do_sample=False, repetition_penalty=1.3)
    out = model.generate(ids, generation_config=plain, steps=3)
    assert torch.equal(out, model.generate(ids, max_new_tokens=6, steps=3, repetition_penalty=1.3))
    banned = GenerationConfig(max_new_tokens=12, no_repeat_ngram_size=1)
    out = model.generate(ids, generation_config=banned, steps=12)
    assert torch.equal(out, model.generate(ids, max_new_tokens=12, steps=12, no_repeat_ngram_size=1))
    assert len(set(out[0].tolist())) == 15  # prompt and new tokens all distinct: the setting was honoured
    with torch.no_grad():
        model.decoder.bias[EOS] = 100.0  # every answer would end at once, unless `min_new_tokens` is honoured
    short = GenerationConfig(max_new_tokens=12, min_new_tokens=12)
    out = model.generate(ids, generation_config=short, steps=12)
    assert EOS not in out[0].tolist()
    assert torch.equal(out, model.generate(ids, max_new_tokens=12, steps=12, suppress_tokens=[EOS]))
    with pytest.raises(TypeError, match="num_beams"):
        model.generate(ids, generation_config=GenerationConfig(num_beams=4))


def test_special_ids_of_a_passed_config_come_from_the_model(fresh_modernbert):
    """As transformers fills them: a config without ids takes the model's (the mask id above all)."""
    config = MaskedDiffusionGenerationConfig(max_new_tokens=4, steps=4)
    assert config.mask_token_id is None
    out = fresh_modernbert.generate(torch.tensor([[10, 11]]), generation_config=config)
    assert out.shape == (1, 6) and not (out == MASK).any()
    assert config.mask_token_id is None  # the caller's object is not modified


def test_stop_strings_end_a_row_and_pad_the_rest():
    model = build_model(modernbert_config())
    tokenizer = make_tiny_tokenizer()
    with torch.no_grad():
        model.decoder.bias[tokenizer.convert_tokens_to_ids("[/Answer]")] = 50.0  # the model ends every answer at once
    ids = torch.tensor([[20, 21]])
    settings = dict(max_new_tokens=12, steps=12, block_length=4, return_dict_in_generate=True)
    plain = model.generate(ids, output_history=True, **settings)
    stopped = model.generate(ids, stop_strings=["[/Answer]"], tokenizer=tokenizer, **settings)
    end = stopped.sequences[0, 2:].tolist()
    cut = end.index(tokenizer.convert_tokens_to_ids("[/Answer]"))
    assert cut < 4 and end[cut + 1 :] == [PAD] * (11 - cut)  # the stop string is kept, the rest padded
    assert plain.sequences[0, 2 : 2 + cut + 1].tolist() == end[: cut + 1]
    # The row ends at the step that commits the last of its tokens up to the stop string, inside the first block.
    done = next(step for step, canvas in enumerate(plain.history) if (canvas[0, 2 : 3 + cut] != MASK).all())
    assert stopped.nfe == done <= 4 < plain.nfe
    one = model.generate(ids, stop_strings="[/Answer]", tokenizer=tokenizer, **settings)  # one string, as transformers
    assert torch.equal(one.sequences, stopped.sequences) and one.nfe == stopped.nfe
    with pytest.raises(ValueError, match="`stop_strings` needs the model's tokenizer"):
        model.generate(ids, stop_strings=["x"], **SHORT)


def test_tokens_after_eos_come_back_as_padding(fresh_modernbert):
    model = fresh_modernbert
    with torch.no_grad():
        model.decoder.bias[EOS] = 6.0
    out = model.generate(torch.tensor([[10, 11]]), max_new_tokens=12, steps=12, block_length=12)
    new = out[0, 2:].tolist()
    assert EOS in new
    assert new[new.index(EOS) + 1 :] == [PAD] * (len(new) - new.index(EOS) - 1)


def test_generate_takes_a_bert_tokenizers_output(tiny_modernbert):
    """`model.generate(**tokenizer(text, return_tensors="pt"))`: zero segment ids are accepted, as transformers does."""
    ids = torch.tensor([[10, 11, 12]])
    encoded = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    assert torch.equal(tiny_modernbert.generate(**encoded, **SHORT), tiny_modernbert.generate(ids, **SHORT))
    with pytest.raises(ValueError, match="`token_type_ids` other than 0"):
        tiny_modernbert.generate(**{**encoded, "token_type_ids": torch.ones_like(ids)}, **SHORT)


def test_a_calls_max_length_replaces_a_saved_max_new_tokens(fresh_modernbert, caplog):
    # A model whose generation_config saves `max_new_tokens` (as the embedded model's does) used to ignore the call's
    # `max_length`; now the call's total length is what it generates to.
    model = fresh_modernbert
    model.generation_config.max_new_tokens = 8
    ids = torch.tensor([[10, 11, 12]])
    assert model.generate(ids, max_length=7, steps=4).shape == (1, 7)
    assert model.generate(ids, steps=4).shape == (1, 11)  # the saved default otherwise
    with pytest.raises(ValueError, match="Nothing to generate"):
        model.generate(ids, max_length=3, steps=4)  # no room after the prompt
    assert model.generate(ids, max_length=7, max_new_tokens=2, steps=2).shape == (1, 5)  # as transformers: it wins
    assert "`max_new_tokens` takes precedence" in caplog.text
