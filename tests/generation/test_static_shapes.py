"""`static_shapes` and `compile_config`: one shape per block for the step's model call, the same greedy tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import CompileConfig

from conftest import EOS, MASK, left_pad
from transformers_mdlm.generation import compiled_step as compiled_step_module

SETTINGS = dict(max_new_tokens=24, steps=24, block_length=8, repetition_penalty=1.2, suppress_tokens=[MASK])
CASES = {
    "fixed schedule": {},
    "confidence threshold": {"confidence_threshold": 0.2},
    "guidance": {"cfg_scale": 1.0},
    "stop on eos": {"stop_on_eos": True},
    "entropy remasking, cosine schedule": {"remasking": "entropy", "schedule": "cosine"},
}


def _record_shapes(model) -> list[tuple]:
    """The (tokens, head positions) shapes of every step's model call."""
    shapes: list[tuple] = []
    original_hidden, original_logits = model.compute_hidden_states, model.compute_logits
    model.compute_hidden_states = lambda ids, mask, **kw: (shapes.append(("encoder", tuple(ids.shape))),
                                                            original_hidden(ids, mask, **kw))[1]  # fmt: skip
    model.compute_logits = lambda hidden: (shapes.append(("head", tuple(hidden.shape[:2]))), original_logits(hidden))[
        1
    ]
    return shapes


@pytest.mark.parametrize("case", sorted(CASES))
def test_static_shapes_give_the_default_paths_greedy_tokens(fresh_modernbert, case):
    model = fresh_modernbert
    if case == "stop on eos":
        with torch.no_grad():
            model.decoder.bias[EOS] += 2.0  # some rows end early, others not: finished rows ride along
    ids, mask = left_pad([[10, 11, 12, 13], [20, 21], [30, 31, 32]])
    settings = {**SETTINGS, **CASES[case], "return_dict_in_generate": True}
    default = model.generate(ids, attention_mask=mask, **settings)
    static = model.generate(ids, attention_mask=mask, static_shapes=True, **settings)
    assert torch.equal(static.sequences, default.sequences)
    assert static.nfe == default.nfe
    assert not (static.sequences == MASK).any()


def test_static_shapes_keep_one_shape_for_every_step(fresh_modernbert):
    model = fresh_modernbert
    ids, mask = left_pad([[10, 11, 12, 13], [20, 21]])
    shapes = _record_shapes(model)
    model.generate(ids, attention_mask=mask, **SETTINGS)
    dynamic = set(shapes)
    shapes.clear()
    model.generate(ids, attention_mask=mask, static_shapes=True, **SETTINGS)
    assert set(shapes) == {("encoder", (2, 28)), ("head", (2, 8))}  # all rows; the 8 positions of a block
    assert len(dynamic) > 2  # the default path shrinks the head (and the batch) as masks are committed


def test_compile_config_compiles_the_step_once(fresh_modernbert):
    """dynamo compiles one graph for a whole call (3 blocks, 24 steps); the default path's shapes recompile."""
    torch._dynamo.reset()
    compiled_step_module._COMPILED.clear()
    model = fresh_modernbert
    ids = torch.tensor([[10, 11, 12, 13]])
    plain = model.generate(ids, **SETTINGS)
    config = CompileConfig(backend="eager", fullgraph=False, dynamic=False, mode=None)
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = model.generate(ids, compile_config=config, **SETTINGS)
    assert torch.equal(compiled, plain)
    graphs_first_call = counters["stats"]["unique_graphs"]
    model.generate(ids, compile_config=config, **SETTINGS)
    assert graphs_first_call >= 1
    assert counters["stats"]["unique_graphs"] == graphs_first_call  # the second call recompiles nothing


@pytest.mark.slow
def test_compile_config_with_inductor_on_cpu(fresh_modernbert):
    """The default compiler (inductor, CUDA graphs asked for) on a CPU float32 model: decoding bypasses the oneDNN route
    (inductor cannot lower its call; it crashed here before) and gives the eager path's tokens."""
    torch._dynamo.reset()
    compiled_step_module._COMPILED.clear()
    model = fresh_modernbert
    ids = torch.tensor([[10, 11, 12, 13]])
    plain = model.generate(ids, **SETTINGS)
    config = CompileConfig(mode="reduce-overhead", fullgraph=False, dynamic=False)
    assert torch.equal(model.generate(ids, compile_config=config, **SETTINGS), plain)


def test_compile_config_warns_under_the_deterministic_switch(fresh_modernbert, caplog):
    """The compiler's kernels are outside the exactness guarantee: asking for both says so (once), and still decodes."""
    from transformers.utils import logging as hf_logging

    torch._dynamo.reset()
    compiled_step_module._COMPILED.clear()
    config = CompileConfig(backend="eager", fullgraph=False, dynamic=False, mode=None)
    ids = torch.tensor([[10, 11, 12, 13]])
    hf_logging.enable_propagation()
    torch.use_deterministic_algorithms(True)
    try:
        out = fresh_modernbert.generate(ids, compile_config=config, **SETTINGS)
    finally:
        torch.use_deterministic_algorithms(False)
    assert "round differently" in caplog.text
    assert out.shape == (1, 4 + SETTINGS["max_new_tokens"])


def test_compile_config_is_checked():
    from transformers_mdlm import MaskedDiffusionGenerationConfig

    with pytest.raises(TypeError, match="compile_config"):
        MaskedDiffusionGenerationConfig(compile_config={"backend": "eager"})
    with pytest.raises(ValueError, match="kv_cache"):
        MaskedDiffusionGenerationConfig(compile_config=CompileConfig(), kv_cache="dual")
    with pytest.raises(TypeError, match="static_shapes"):
        MaskedDiffusionGenerationConfig(static_shapes="yes")
