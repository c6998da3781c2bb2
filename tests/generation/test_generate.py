"""`generate` and `infill`: behaviour, outputs, hooks, early stopping, parallel decoding and cost."""

from __future__ import annotations

import pytest
import torch

from conftest import EOS, MASK, PAD, VOCAB, build_model, left_pad, modernbert_config, random_prompt
from reference_sampler import reference_generate
from transformers_mdlm import MaskedDiffusionGenerationOutput, MaskedDiffusionScheduler
from transformers_mdlm.generation.stopping import StopStringMatcher, pad_after_eos

SHORT = dict(max_new_tokens=16, steps=8, block_length=8)


def test_greedy_is_deterministic(tiny_modernbert):
    ids = torch.tensor([[10, 20, 30, 40]])
    first = tiny_modernbert.generate(ids, **SHORT)
    assert torch.equal(first, tiny_modernbert.generate(ids, **SHORT))
    assert first.shape == (1, 4 + 16)
    assert not (first == MASK).any()
    assert len(set(first[0, 4:].tolist())) > 3  # the tiny model is not degenerate


@pytest.mark.parametrize(
    "settings",
    [
        SHORT,
        dict(max_new_tokens=13, steps=5, block_length=4, cfg_scale=1.0, repetition_penalty=1.2),
        dict(max_new_tokens=12, steps=12, block_length=12, remasking="margin"),
        dict(max_new_tokens=12, steps=6, block_length=6, confidence_threshold=0.05),
    ],
)
def test_rows_of_a_batch_equal_their_prompt_alone(tiny_modernbert, settings):
    # No empty or one-token prompt here: an (almost) all-mask canvas gives every position (almost) the same hidden
    # state, so its first step is a tie broken by float noise, which padding legitimately changes (the reference
    # behaves the same way).
    g = torch.Generator().manual_seed(1)
    prompts = [random_prompt(g, n) for n in (3, 9, 5, 4)]
    ids, mask = left_pad(prompts)
    batch = tiny_modernbert.generate(ids, attention_mask=mask, **settings)
    for row, prompt in enumerate(prompts):
        alone = tiny_modernbert.generate(torch.tensor([prompt], dtype=torch.long), **settings)
        assert batch[row, ids.shape[1] :].tolist() == alone[0, len(prompt) :].tolist()
        assert batch[row, : ids.shape[1]].tolist() == ids[row].tolist()


def test_right_padding_gives_the_same_new_tokens_as_left_padding(tiny_modernbert):
    prompts = [[11, 12, 13, 14, 15], [21, 22]]
    left_ids, left_mask = left_pad(prompts)
    right_ids = torch.tensor([[11, 12, 13, 14, 15], [21, 22, PAD, PAD, PAD]])
    right_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    left = tiny_modernbert.generate(left_ids, attention_mask=left_mask, **SHORT)
    right = tiny_modernbert.generate(right_ids, attention_mask=right_mask, **SHORT)
    assert torch.equal(left[:, 5:], right[:, 5:])


def test_dict_output_counts_forward_passes_and_keeps_history(tiny_modernbert):
    out = tiny_modernbert.generate(torch.tensor([[10, 11, 12]]), output_history=True, **SHORT)
    assert isinstance(out, MaskedDiffusionGenerationOutput)
    assert out.nfe == 8  # 2 blocks of 8 masks, 4 steps each
    assert len(out.history) == out.nfe + 1
    assert (out.history[0][0, 3:] == MASK).all()
    masks_left = [int((h == MASK).sum()) for h in out.history]
    assert masks_left == [16, 14, 12, 10, 8, 6, 4, 2, 0]
    assert torch.equal(pad_after_eos(out.history[-1], 3, EOS, PAD), out.sequences)  # history: the raw canvas
    plain = tiny_modernbert.generate(torch.tensor([[10, 11, 12]]), return_dict_in_generate=True, **SHORT)
    assert plain.history is None and torch.equal(plain.sequences, out.sequences)


def test_a_block_never_takes_more_passes_than_it_has_masks(tiny_modernbert):
    out = tiny_modernbert.generate(
        torch.tensor([[10]]), max_new_tokens=6, steps=100, block_length=3, return_dict_in_generate=True
    )
    assert out.nfe == 6


def test_scheduler_argument_sets_the_policy(tiny_modernbert):
    ids = torch.tensor([[10, 11, 12]])
    by_kwargs = tiny_modernbert.generate(ids, schedule="cosine", **SHORT)
    by_scheduler = tiny_modernbert.generate(ids, scheduler=MaskedDiffusionScheduler(schedule="cosine"), **SHORT)
    assert torch.equal(by_kwargs, by_scheduler)


def test_sampling_is_reproducible_with_a_generator_and_varies_without(tiny_modernbert):
    ids = torch.tensor([[10, 11, 12]])
    a = tiny_modernbert.generate(ids, temperature=1.0, generator=torch.Generator().manual_seed(0), **SHORT)
    b = tiny_modernbert.generate(ids, temperature=1.0, generator=torch.Generator().manual_seed(0), **SHORT)
    c = tiny_modernbert.generate(ids, temperature=1.0, generator=torch.Generator().manual_seed(1), **SHORT)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    greedy = tiny_modernbert.generate(ids, **SHORT)
    top1 = tiny_modernbert.generate(ids, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(5), **SHORT)
    assert torch.equal(top1, greedy)


def test_guidance_changes_the_output_and_zero_guidance_does_not(tiny_modernbert):
    ids = torch.tensor([[10, 11, 12, 13, 14, 15]])
    plain = tiny_modernbert.generate(ids, **SHORT)
    assert torch.equal(plain, tiny_modernbert.generate(ids, cfg_scale=0.0, **SHORT))
    assert not torch.equal(plain, tiny_modernbert.generate(ids, cfg_scale=3.0, **SHORT))


def test_repetition_penalty_reduces_repeats():
    model = build_model(modernbert_config(), seed=3)
    ids = torch.tensor([[10, 11, 12]])
    settings = dict(max_new_tokens=32, steps=32, block_length=32)
    plain = model.generate(ids, repetition_penalty=1.0, **settings)[0, 3:]
    penalised = model.generate(ids, repetition_penalty=3.0, **settings)[0, 3:]
    repeats = lambda t: len(t) - len(set(t.tolist()))  # noqa: E731
    assert repeats(penalised) < repeats(plain)


def _repeated_ngrams(tokens: list[int], size: int) -> int:
    grams = [tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]
    return len(grams) - len(set(grams))


@pytest.mark.parametrize("size", [2, 3])
def test_no_repeat_ngram_size_leaves_no_ngram_twice_with_one_token_per_step(size):
    model = build_model(modernbert_config(), seed=3)
    ids = torch.tensor([[0, 0, 10, 11, 12], [13, 10, 11, 12, 13]])  # left padding in the first row
    attention_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    settings = dict(attention_mask=attention_mask, max_new_tokens=24, steps=24, block_length=8)
    plain = model.generate(ids, **settings)
    banned = model.generate(ids, no_repeat_ngram_size=size, **settings)
    real_rows = [plain[0, 2:].tolist(), plain[1].tolist()]  # prompt and answer, without the padding
    assert sum(_repeated_ngrams(row, size) for row in real_rows) > 0  # the plain decode repeats
    real_rows = [banned[0, 2:].tolist(), banned[1].tolist()]
    assert [_repeated_ngrams(row, size) for row in real_rows] == [0, 0]


def test_no_repeat_ngram_size_holds_with_static_shapes_and_the_dual_cache():
    model = build_model(modernbert_config(), seed=3)
    ids = torch.tensor([[0, 0, 10, 11, 12], [13, 10, 11, 12, 13]])
    settings = dict(attention_mask=torch.tensor([[0, 0, 1, 1, 1], [1] * 5]), max_new_tokens=24, steps=24,
                    block_length=8, no_repeat_ngram_size=2)  # fmt: skip
    default = model.generate(ids, **settings)
    assert torch.equal(
        model.generate(ids, static_shapes=True, **settings), default
    )  # padded head slots change nothing
    cached = model.generate(ids, kv_cache="dual", **settings)
    assert [_repeated_ngrams(row, 2) for row in (cached[0, 2:].tolist(), cached[1].tolist())] == [0, 0]


def test_bans_that_leave_no_token_fail_clearly(tiny_modernbert):
    ids = torch.tensor([[10, 11, 12]])
    # 3 prompt tokens + 100 new ones, all distinct, cannot fit a 100-token vocabulary (the mask id suppressed, or it
    # would stay free: it never counts as a token of the row).
    with pytest.raises(ValueError, match=r"No token is left.*\(1 ids\) and `no_repeat_ngram_size=1` ban all 100"):
        tiny_modernbert.generate(ids, max_new_tokens=100, steps=100, no_repeat_ngram_size=1, suppress_tokens=[MASK])
    with pytest.raises(ValueError, match=r"No token is left.*\(100 ids\)"):
        tiny_modernbert.generate(ids, max_new_tokens=4, steps=4, suppress_tokens=list(range(VOCAB)))
    out = tiny_modernbert.generate(ids, max_new_tokens=4, steps=4, suppress_tokens=list(range(VOCAB - 1)))
    assert out[0, 3:].tolist() == [VOCAB - 1] * 4  # one token left: proposed everywhere, no error


def test_no_repeat_ngram_size_one_gives_new_tokens_unlike_the_prompt_and_each_other():
    model = build_model(modernbert_config(), seed=3)
    out = model.generate(torch.tensor([[13, 10, 11, 12, 13]]), max_new_tokens=24, steps=24, no_repeat_ngram_size=1)
    new = out[0, 5:].tolist()
    assert len(set(new)) == 24 and not set(new) & {10, 11, 12, 13}


def test_stop_on_eos_ends_a_row_at_the_step_its_eos_and_the_tokens_before_it_are_committed(fresh_modernbert):
    model = fresh_modernbert
    with torch.no_grad():
        model.decoder.bias[EOS] = 100.0  # the model now always proposes EOS
    ids = torch.tensor([[10, 11]])
    settings = dict(max_new_tokens=24, steps=24, block_length=8, return_dict_in_generate=True)
    full = model.generate(ids, output_history=True, **settings)
    stopped = model.generate(ids, stop_on_eos=True, **settings)
    # The step that commits the first new position (an EOS): from then on the answer is final, mid-block or not.
    first = next(step for step, canvas in enumerate(full.history) if canvas[0, 2] != MASK)
    assert full.nfe == 24 and 1 <= first < 8 and stopped.nfe == first
    assert stopped.sequences[0, 2:].tolist() == [EOS] + [PAD] * 23  # padded after EOS, as transformers does
    assert torch.equal(full.sequences, stopped.sequences)  # the same answer, a fraction of the passes


def test_stop_on_eos_in_a_batch_stops_only_finished_rows(fresh_modernbert):
    model = fresh_modernbert
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    with torch.no_grad():
        model.decoder.bias[EOS] = 5.0
    ids, mask = left_pad([[10, 11], [EOS, EOS, EOS, EOS]])
    # Prompt 2 primes repeated EOS; stop_on_eos must not change what any row generates before it stops.
    out = model.generate(ids, attention_mask=mask, max_new_tokens=16, steps=16, block_length=4, stop_on_eos=True)
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=16, steps=16, block_length=4)
    for row in range(2):
        new, full = out[row, 4:].tolist(), ref[row, 4:].tolist()
        if EOS in new:  # the answer up to its first EOS is the unstopped one; after it, only padding
            cut = new.index(EOS) + 1
            assert new[:cut] == full[:cut] and set(new[cut:]) <= {PAD}
        else:
            assert new == full


@pytest.mark.parametrize("block_length", [4, 16])
def test_min_new_tokens_bans_eos_only_in_the_first_new_positions_of_each_row(fresh_modernbert, block_length):
    model = fresh_modernbert
    with torch.no_grad():
        model.decoder.bias[EOS] = 100.0  # the model proposes EOS wherever it may
    ids, mask = left_pad([[10, 11], [12, 13, 14, 15, 16]])  # rows whose new tokens start at different columns
    settings = dict(max_new_tokens=16, steps=16, block_length=block_length)
    unbanned = model.generate(ids, attention_mask=mask, **settings)
    assert unbanned[:, 5].tolist() == [EOS, EOS]  # answers end at once (padding after the EOS, as transformers)
    out = model.generate(ids, attention_mask=mask, min_new_tokens=5, **settings)
    for row in range(2):
        new = out[row, 5:].tolist()
        assert not {EOS, PAD} & set(new[:5])
        assert new[5:] == [EOS] + [PAD] * 10  # the first position allowed takes it
    stopped = model.generate(ids, attention_mask=mask, min_new_tokens=5, stop_on_eos=True, **settings)
    assert torch.equal(stopped, out)


def test_min_new_tokens_as_long_as_the_canvas_equals_suppressing_eos(fresh_modernbert):
    model = fresh_modernbert
    with torch.no_grad():
        model.decoder.bias[EOS] = 3.0  # EOS now wins at some positions, not all
    ids = torch.tensor([[10, EOS, 11, 12]])
    settings = dict(max_new_tokens=12, steps=12, block_length=4, repetition_penalty=1.2)
    free = model.generate(ids, **settings)[0, 4:].tolist()
    assert EOS in free[:6]  # so the comparisons below can fail
    suppressed = model.generate(ids, suppress_tokens=[EOS], **settings)
    assert torch.equal(model.generate(ids, min_new_tokens=12, **settings), suppressed)
    assert model.generate(ids, min_new_tokens=0, **settings)[0, 4:].tolist() == free
    later = model.generate(ids, min_new_tokens=6, **settings)[0, 4:].tolist()
    assert EOS not in later[:6] and EOS in later[6:]  # EOS still ends the answer, just not before position 6


def test_min_new_tokens_leaves_prompt_masks_free_to_take_eos(fresh_modernbert):
    model = fresh_modernbert
    with torch.no_grad():
        model.decoder.bias[EOS] = 100.0
    out = model.generate(torch.tensor([[10, MASK, 11]]), max_new_tokens=4, steps=4, min_new_tokens=4)
    assert out[0, 1] == EOS and EOS not in out[0, 3:].tolist()


def test_min_new_tokens_without_an_eos_id_fails_before_any_forward_pass(counted_model):
    counted_model.config.eos_token_id = counted_model.generation_config.eos_token_id = None
    with pytest.raises(ValueError, match=r"`min_new_tokens=3`.*no `eos_token_id`"):
        counted_model.generate(torch.tensor([[10, 11]]), min_new_tokens=3)
    with pytest.raises(ValueError, match=r"`stop_on_eos=True`.*no `eos_token_id`"):  # it would never stop
        counted_model.generate(torch.tensor([[10, 11]]), stop_on_eos=True)
    assert counted_model.forward_calls == []


def test_confidence_threshold_decodes_in_fewer_passes(tiny_modernbert):
    ids = torch.tensor([[10, 11, 12]])
    settings = dict(max_new_tokens=16, steps=16, block_length=8, return_dict_in_generate=True)
    fixed = tiny_modernbert.generate(ids, **settings)
    eager = tiny_modernbert.generate(ids, confidence_threshold=1e-9, **settings)
    strict = tiny_modernbert.generate(ids, confidence_threshold=1.0, **settings)
    assert fixed.nfe == 16
    assert eager.nfe == 2  # everything above the threshold: one pass per block
    assert strict.nfe == 16  # nothing above it: one token per pass
    assert torch.equal(strict.sequences, fixed.sequences)  # one-per-step by confidence = the fixed schedule here
    mid = tiny_modernbert.generate(ids, confidence_threshold=0.05, **settings)
    assert 2 <= mid.nfe <= 16 and not (mid.sequences == MASK).any()


def test_output_head_runs_only_at_competing_positions(fresh_modernbert):
    model = fresh_modernbert
    rows_seen = []
    model.head.register_forward_hook(lambda module, args, output: rows_seen.append(args[0].shape[:-1].numel()))
    model.generate(torch.tensor([list(range(10, 40))]), max_new_tokens=32, steps=16, block_length=8)
    assert len(rows_seen) == 16
    assert max(rows_seen) <= 8  # never the 62-position sequence, at most the 8 masks of the block
    assert rows_seen[:4] == [8, 6, 4, 2]


def test_infill_fills_masks_and_keeps_the_rest(tiny_modernbert):
    ids = torch.tensor([[10, MASK, 12, MASK, MASK, 15, 16, MASK]])
    out = tiny_modernbert.infill(ids, steps=4, block_length=4, return_dict_in_generate=True)
    given = ids != MASK
    assert torch.equal(out.sequences[given], ids[given])
    assert not (out.sequences == MASK).any()
    assert out.nfe == 4  # blocks [0, 4) and [4, 8): 3 + 1 masks, two steps each at most


def test_mask_tokens_inside_a_prompt_are_all_decoded(tiny_modernbert):
    """Prompt masks compete in every block, as in the reference, but are also counted in the first block's budget:
    the reference spends only the block's own masks' budget, so it leaves masks in the output here."""
    prompt = [10, MASK, 12, 13, MASK, 15]
    settings = dict(max_new_tokens=12, steps=6, block_length=4, repetition_penalty=1.2)
    expected = reference_generate(tiny_modernbert, [prompt], mask_id=MASK, eos_id=EOS, **settings)
    assert int((expected == MASK).sum()) >= 1  # the reference's defect this test guards against
    # The random model also proposes the mask id itself; `suppress_tokens` forbids that, so every mask must go.
    out = tiny_modernbert.generate(torch.tensor([prompt]), suppress_tokens=[MASK], **settings)
    assert not (out == MASK).any()
    assert [out[0, i].item() for i in (0, 2, 3, 5)] == [10, 12, 13, 15]


def test_model_generation_config_supplies_defaults(fresh_modernbert):
    model = fresh_modernbert
    model.generation_config.max_new_tokens = 5
    model.generation_config.steps = 5
    assert model.generate(torch.tensor([[10]])).shape == (1, 6)
    assert model.generate(torch.tensor([[10]]), max_new_tokens=3).shape == (1, 4)
    assert model.generation_config.max_new_tokens == 5


def test_tokenizer_supplies_a_missing_mask_id(fresh_modernbert, tiny_tokenizer):
    model = fresh_modernbert
    model.generation_config.mask_token_id = None
    with pytest.raises(ValueError, match="mask token"):
        model.generate(torch.tensor([[10]]), max_new_tokens=2, steps=2)
    out = model.generate(torch.tensor([[10]]), max_new_tokens=2, steps=2, tokenizer=tiny_tokenizer)
    assert out.shape == (1, 3) and not (out == MASK).any()


# --------------------------------------------------------------------------- bad input, before any forward pass


@pytest.fixture
def counted_model(fresh_modernbert):
    calls = []
    fresh_modernbert.model.register_forward_hook(lambda *args: calls.append(1))
    fresh_modernbert.forward_calls = calls
    return fresh_modernbert


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"steps": 0}, "`steps`.*>= 1"),
        ({"block_length": 0}, "`block_length`.*>= 1"),
        ({"max_new_tokens": -1}, "`max_new_tokens`.*>= 0"),
        ({"max_new_tokens": 0}, "Nothing to generate"),
        ({"temperature": -1.0}, "`temperature`.*>= 0"),
        ({"top_p": 0.0}, r"`top_p`.*\(0, 1\]"),
        ({"top_p": 1.2}, r"`top_p`.*\(0, 1\]"),
        ({"remasking": "confident"}, "`remasking`.*'low_confidence', 'random', 'margin', 'entropy'"),
        ({"cfg_scale": -0.5}, "`cfg_scale`.*>= 0"),
        ({"no_repeat_ngram_size": -1}, "`no_repeat_ngram_size`.*>= 0"),
        ({"no_repeat_ngram_size": 2.5}, "`no_repeat_ngram_size`"),
        ({"min_new_tokens": -1}, "`min_new_tokens`.*>= 0"),
        ({"min_new_tokens": 1.5}, "`min_new_tokens`"),
        ({"confidence_threshold": 0.0}, r"`confidence_threshold`.*\(0, 1\]"),
        ({"confidence_threshold": 2.0}, r"`confidence_threshold`.*\(0, 1\]"),
        ({"max_new_tokens": 200}, "128 positions"),
        ({"mask_token_id": VOCAB}, r"`mask_token_id` must hold token ids in \[0, 100\)"),
        ({"num_beams": 2}, "num_beams"),
    ],
)
def test_bad_generation_arguments_fail_before_any_forward_pass(counted_model, kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        counted_model.generate(torch.tensor([[10, 11]]), **kwargs)
    assert counted_model.forward_calls == []


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "pattern"),
    [
        (([[10, 11]],), {}, TypeError, "`input_ids` must be a LongTensor"),
        ((torch.tensor([[1.0, 2.0]]),), {}, TypeError, "`input_ids` must be a LongTensor"),
        ((torch.zeros(2, 3, 4, dtype=torch.long),), {}, ValueError, "shape"),
        ((torch.tensor([[10, 11]]),), {"attention_mask": torch.tensor([[1, 1, 1]])}, ValueError, "attention_mask"),
        ((torch.tensor([[10, 11]]),), {"attention_mask": torch.tensor([[2, 1]])}, ValueError, "attention_mask"),
        ((torch.tensor([[10, 500]]),), {}, ValueError, "token ids"),
        ((torch.tensor([[10, 11]]),), {"generation_config": "fast"}, TypeError, "generation_config"),
        ((torch.tensor([[10, 11]]),), {"scheduler": "cosine"}, TypeError, "scheduler"),
    ],
)
def test_bad_prompts_fail_before_any_forward_pass(counted_model, args, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        counted_model.generate(*args, max_new_tokens=4, steps=4, **kwargs)
    assert counted_model.forward_calls == []


def test_model_without_mask_token_fails_clearly(counted_model):
    counted_model.generation_config.mask_token_id = None
    with pytest.raises(ValueError, match="mask token"):
        counted_model.generate(torch.tensor([[10]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="mask token"):
        counted_model.infill(torch.tensor([[10, MASK]]))
    assert counted_model.forward_calls == []


def test_infill_without_masks_and_too_long_inputs_fail_clearly(counted_model):
    with pytest.raises(ValueError, match="Nothing to fill"):
        counted_model.infill(torch.tensor([[10, 11, 12]]))
    with pytest.raises(ValueError, match="128 positions"):
        counted_model.infill(torch.full((1, 130), MASK))
    assert counted_model.forward_calls == []


@pytest.mark.slow
def test_a_compiled_encoder_gives_the_same_tokens(fresh_modernbert):
    """`torch.compile` is opt-in (`model.model.compile(dynamic=True)`, docs/performance.md) and exact."""
    ids, mask = left_pad([[10, 11, 12, 13, 14], [20, 21]])
    settings = dict(max_new_tokens=16, steps=16, block_length=8, repetition_penalty=1.0)
    exact = fresh_modernbert.generate(ids, attention_mask=mask, **settings)
    fresh_modernbert.model.compile(dynamic=True)
    assert torch.equal(fresh_modernbert.generate(ids, attention_mask=mask, **settings), exact)


def _eos_everywhere_model():
    model = build_model(modernbert_config())
    with torch.no_grad():
        model.decoder.bias[EOS] += 50.0  # the model proposes EOS at every position
    return model


@pytest.mark.parametrize("stop_on_eos", [False, True])
def test_the_call_s_pad_token_id_pads_finished_rows(stop_on_eos):
    # The model config's pad id (0) used to win over the call's and the generation config's, as transformers'
    # does not.
    from transformers_mdlm import MaskedDiffusionGenerationConfig

    model = _eos_everywhere_model()
    ids = torch.tensor([[10, 11, 12]])
    expected = [[10, 11, 12, EOS, 7, 7, 7, 7, 7]]
    settings = dict(max_new_tokens=6, steps=6, stop_on_eos=stop_on_eos)
    assert model.generate(ids, pad_token_id=7, **settings).tolist() == expected
    config = MaskedDiffusionGenerationConfig(pad_token_id=7, mask_token_id=MASK, eos_token_id=EOS, **settings)
    assert model.generate(ids, generation_config=config).tolist() == expected
    assert model.generate(ids, **settings).tolist() == [[10, 11, 12, EOS, PAD, PAD, PAD, PAD, PAD]]


def test_stop_strings_and_eos_pad_with_the_same_id(tiny_tokenizer):
    model = build_model(modernbert_config())
    ids = torch.tensor([[10, 11, 12]])
    settings = dict(max_new_tokens=12, steps=12, block_length=4)
    base = model.generate(ids, **settings)[0, 3:].tolist()
    word = tiny_tokenizer.decode([base[5]])
    cut = StopStringMatcher(tiny_tokenizer, [word]).end_index(base)
    out = model.generate(ids, stop_strings=[word], tokenizer=tiny_tokenizer, pad_token_id=7, **settings)
    assert out[0, 3:].tolist() == base[: cut + 1] + [7] * (11 - cut)


@pytest.mark.parametrize("max_new_tokens, block_length", [(10, 4), (5, 8)])
def test_a_streamer_receives_exactly_the_new_tokens(tiny_modernbert, max_new_tokens, block_length):
    # A partial last block (or a block wider than the canvas) used to stream its last column repeatedly.
    class Recorder:
        def __init__(self):
            self.puts, self.drafts, self.ended = [], [], False

        def put(self, value):
            self.puts.append(value)

        def put_draft(self, value):
            self.drafts.append(value)

        def end(self):
            self.ended = True

    ids = torch.tensor([[10, 11, 12]])
    recorder = Recorder()
    out = tiny_modernbert.generate(
        ids, max_new_tokens=max_new_tokens, steps=max_new_tokens, block_length=block_length, streamer=recorder
    )
    assert recorder.ended and torch.equal(recorder.puts[0], ids)
    assert torch.equal(torch.cat(recorder.puts[1:], dim=1), out[:, 3:])
    assert all(draft.shape[1] <= min(block_length, max_new_tokens) for draft in recorder.drafts)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(generator=42), r"`generator` must be a torch.Generator or None, got int"),
        (dict(generator=42, do_sample=True), r"`generator` must be a torch.Generator"),
        (dict(streamer=object()), r"`streamer` must be None or a streamer with `put` and `end`"),
    ],
)
def test_generate_checks_generator_and_streamer(tiny_modernbert, kwargs, message):
    with pytest.raises(TypeError, match=message):
        tiny_modernbert.generate(torch.tensor([[10, 11, 12]]), max_new_tokens=4, steps=4, **kwargs)


def test_infill_checks_the_generator(tiny_modernbert):
    with pytest.raises(TypeError, match=r"`generator` must be a torch.Generator"):
        tiny_modernbert.infill(torch.tensor([[10, MASK, 12]]), steps=1, generator=42)


def test_without_attention_mask_the_pad_tokens_are_inferred_as_padding(tiny_modernbert):
    # transformers infers `input_ids != pad_token_id` when the pad occurs and differs from EOS; the pads used to be
    # decoded as prompt tokens.
    ids, mask = left_pad([[10, 11, 12, 13], [20, 21]])
    settings = dict(max_new_tokens=6, steps=6)
    assert torch.equal(tiny_modernbert.generate(ids, **settings), tiny_modernbert.generate(ids, mask, **settings))
    # With pad == EOS nothing is inferred (a pad may be a real EOS), as in transformers.
    rows = torch.tensor([[10, EOS, 12], [20, 21, 22]])
    ones = torch.ones_like(rows)
    same = dict(pad_token_id=EOS, **settings)
    assert torch.equal(tiny_modernbert.generate(rows, **same), tiny_modernbert.generate(rows, ones, **same))
