"""Fast-dLLM's dual cache: partial passes reproduce full passes exactly when nothing changed, and decoding with it
recomputes only the block after each block's first, exact, step."""

from __future__ import annotations

import pytest
import torch

from conftest import ARCHITECTURE_CONFIGS, MASK, build_model, left_pad, random_prompt
from transformers_mdlm.generation.dual_cache import DualCache, dual_cache_attention_enabled

CACHED_ARCHITECTURES = ["modernbert", "bert"]


@pytest.mark.parametrize("arch", CACHED_ARCHITECTURES)
def test_partial_pass_reproduces_the_full_pass(arch):
    model = build_model(ARCHITECTURE_CONFIGS[arch]())
    generator = torch.Generator().manual_seed(0)
    # Canvas layout: rows start at column 0, the shorter row is padded on the right. 30 columns > the local window (8).
    tokens = torch.randint(5, 100, (2, 30), generator=generator)
    tokens[:, 12:20] = MASK
    attention = torch.ones(2, 30, dtype=torch.long)
    attention[1, 26:] = 0
    positions = torch.tensor([list(range(12, 20)), list(range(10, 18))])
    with torch.inference_mode(), dual_cache_attention_enabled(model):
        cache = DualCache().start_recording(0, torch.tensor([0, 1]), positions)
        full = model.compute_hidden_states(tokens, attention, dual_cache=cache)
        selected = cache.select(0, torch.tensor([1]))  # a subset of the recorded rows
        partial = model.compute_hidden_states(
            tokens[1:].gather(1, selected), None, position_ids=selected, dual_cache=cache
        )
    assert torch.equal(selected, positions[1:])
    torch.testing.assert_close(partial[0], full[1, 10:18], rtol=1e-5, atol=1e-5)


def test_cache_refuses_rows_or_blocks_it_did_not_record(tiny_modernbert):
    tokens = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), dual_cache_attention_enabled(tiny_modernbert):
        cache = DualCache().start_recording(3, torch.tensor([1]), torch.tensor([[4, 5]]))
        tiny_modernbert.compute_hidden_states(tokens[1:], None, dual_cache=cache)
    assert cache.select(3, torch.tensor([0])) is None  # row 0 did not run
    assert cache.select(4, torch.tensor([1])) is None  # another block
    assert torch.equal(cache.select(3, torch.tensor([1])), torch.tensor([[4, 5]]))


def test_dual_cache_equals_exact_decoding_when_every_step_starts_a_block(tiny_modernbert):
    ids, mask = left_pad([[10, 11, 12, 13, 14], [20, 21]])
    settings = dict(max_new_tokens=24, steps=3, block_length=8, repetition_penalty=1.0)  # one step per block
    exact = tiny_modernbert.generate(ids, attention_mask=mask, **settings)
    cached = tiny_modernbert.generate(ids, attention_mask=mask, kv_cache="dual", **settings)
    assert torch.equal(cached, exact)


def test_dual_cache_recomputes_only_the_block_after_its_first_step(fresh_modernbert):
    model = fresh_modernbert
    widths = []
    model.model.embeddings.register_forward_hook(lambda module, args, output: widths.append(output.shape[1]))
    prompt = torch.tensor([list(range(10, 30))])
    out = model.generate(prompt, max_new_tokens=16, steps=16, block_length=8, kv_cache="dual",
                         return_dict_in_generate=True)  # fmt: skip
    assert out.nfe == 16 and not (out.sequences == MASK).any()
    assert widths == [36] + [8] * 7 + [36] + [8] * 7
    assert model.config._attn_implementation == "sdpa"  # restored after decoding


@pytest.mark.parametrize("extra", [{"cfg_scale": 1.0}, {"confidence_threshold": 0.2}, {"repetition_penalty": 1.2}])
def test_dual_cache_decodes_uneven_batches_with_other_options(tiny_modernbert, extra):
    extra = {**extra, "suppress_tokens": [MASK]}  # a random model may propose the mask id itself
    generator = torch.Generator().manual_seed(2)
    ids, mask = left_pad([random_prompt(generator, 7), random_prompt(generator, 3), random_prompt(generator, 5)])
    out = tiny_modernbert.generate(ids, attention_mask=mask, max_new_tokens=16, steps=16, block_length=8,
                                   kv_cache="dual", return_dict_in_generate=True, **extra)  # fmt: skip
    new = out.sequences[:, ids.shape[1] :]
    assert new.shape == (3, 16) and not (new == MASK).any()
    # Each row on its own gives the same tokens: rows stay independent with the cache.
    for row in range(3):
        prompt = ids[row : row + 1, mask[row].bool()]
        alone = tiny_modernbert.generate(prompt, max_new_tokens=16, steps=16, block_length=8, kv_cache="dual", **extra)
        assert torch.equal(alone[0, prompt.shape[1] :], new[row])


def test_dual_cache_rejects_unsupported_models_before_decoding():
    distilbert = build_model(ARCHITECTURE_CONFIGS["distilbert"]())
    with pytest.raises(ValueError, match=r"kv_cache=.dual.*DistilBert"):
        distilbert.generate(torch.tensor([[10, 11]]), max_new_tokens=4, steps=4, kv_cache="dual")
    with pytest.raises(ValueError, match="`kv_cache` must be one of 'dual', None; got 'prefix'"):
        build_model(ARCHITECTURE_CONFIGS["modernbert"]()).generate(torch.tensor([[10]]), kv_cache="prefix")


def test_attention_implementation_is_restored_after_an_error(fresh_modernbert):
    def fail(*args, **kwargs):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        fresh_modernbert.generate(torch.tensor([[10, 11]]), max_new_tokens=8, steps=8, block_length=4,
                                  kv_cache="dual", callback_on_step_end=fail)  # fmt: skip
    assert fresh_modernbert.config._attn_implementation == "sdpa"


def test_dual_cache_infills_and_equals_exact_with_one_step_per_block(tiny_modernbert):
    ids = torch.tensor([[10, MASK, MASK, 13, MASK, 15, MASK, MASK, 18, 19, MASK, MASK]])
    settings = dict(block_length=4, repetition_penalty=1.0, suppress_tokens=[MASK])
    cached = tiny_modernbert.infill(ids, steps=12, kv_cache="dual", **settings)
    assert not (cached == MASK).any() and torch.equal(cached[ids != MASK], ids[ids != MASK])
    one_step = tiny_modernbert.infill(ids, steps=3, kv_cache="dual", **settings)
    assert torch.equal(one_step, tiny_modernbert.infill(ids, steps=3, **settings))


def test_eager_attention_models_use_the_cache_and_get_eager_back(fresh_modernbert):
    fresh_modernbert.set_attn_implementation("eager")
    ids = torch.tensor([[10, 11, 12]])
    settings = dict(max_new_tokens=8, steps=2, block_length=4, repetition_penalty=1.0)  # one step per block
    assert torch.equal(
        fresh_modernbert.generate(ids, kv_cache="dual", **settings), fresh_modernbert.generate(ids, **settings)
    )
    assert fresh_modernbert.config._attn_implementation == "eager"


def test_flash_attention_is_refused_with_the_fix():
    from types import SimpleNamespace

    from transformers_mdlm.generation.dual_cache import check_dual_cache_support

    model = SimpleNamespace(supports_dual_cache=True, config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    with pytest.raises(ValueError, match=r"attn_implementation='sdpa'.*kv_cache=None"):
        check_dual_cache_support(model)


def test_concurrent_calls_on_one_model_equal_sequential_ones(tiny_modernbert):
    """Four threads decode with the dual cache (and two exactly) at once: each gets its sequential answer, and the
    model's attention implementation is restored after the last one."""
    from concurrent.futures import ThreadPoolExecutor

    g = torch.Generator().manual_seed(5)
    jobs = [(random_prompt(g, 4 + i), "dual" if i < 4 else None) for i in range(6)]
    settings = dict(max_new_tokens=24, steps=12, block_length=8)

    def run(job):
        prompt, cache = job
        return tiny_modernbert.generate(torch.tensor([prompt]), kv_cache=cache, **settings).tolist()

    expected = [run(job) for job in jobs]
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            assert list(pool.map(run, jobs)) == expected
    assert tiny_modernbert.config._attn_implementation == "sdpa"


def test_a_dual_cache_call_does_not_switch_the_attention_inside_a_concurrent_exact_pass():
    # An exact call on an eager model built its masks while another thread's dual-cache call had the model switched,
    # then ran eager attention (adding sdpa's boolean mask) after that call switched it back: wrong tokens, silently.
    import threading

    from conftest import modernbert_config
    from transformers_mdlm.generation import dual_cache

    model = build_model(modernbert_config())
    model.set_attn_implementation("eager")
    prompt = torch.tensor([[10, 11, 12, 13, 14]])
    settings = dict(max_new_tokens=16, steps=16)
    reference = model.generate(prompt, **settings)

    in_pass, other_done, errors = threading.Event(), threading.Event(), []

    def hold_dual_call(model, step, timestep, callback_kwargs):
        in_pass.wait(timeout=30)  # the dual call stays switched until the exact pass has built its masks

    def dual_call():
        try:
            model.generate(torch.tensor([[20, 21, 22]]), max_new_tokens=8, steps=8, block_length=4, kv_cache="dual",
                           callback_on_step_end=hold_dual_call)  # fmt: skip
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            other_done.set()

    main, first = threading.current_thread(), [True]
    key = id(model.config)

    def in_first_layer(module, args):
        if threading.current_thread() is main and first[0]:
            first[0] = False
            in_pass.set()
            # Give the dual call the chance to switch back inside this pass: it either ends (the race) or waits for
            # this pass (the fix), which shows as a pending switch.
            for _ in range(3000):
                if other_done.wait(0.01) or getattr(dual_cache, "_PENDING", {}).get(key):
                    break

    handle = model.model.layers[0].register_forward_pre_hook(in_first_layer)
    thread = threading.Thread(target=dual_call)
    thread.start()
    try:
        for _ in range(3000):  # wait (at most 30 s) until the dual call has switched the model
            if model.config._attn_implementation == dual_cache.ATTENTION_IMPLEMENTATION:
                break
            other_done.wait(0.01)
        out = model.generate(prompt, **settings)
    finally:
        in_pass.set()
        thread.join(timeout=60)
        handle.remove()
    assert not errors and not thread.is_alive()
    assert torch.equal(out, reference)
    assert model.config._attn_implementation == "eager"
