from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import transformers_mdlm.onednn_linear as onednn
from conftest import build_model, modernbert_config
from transformers_mdlm.onednn_linear import OneDNNLinearMode, onednn_linear_mode

needs_onednn = pytest.mark.skipif(not onednn._ONEDNN_LINEAR, reason="this PyTorch build has no oneDNN linear kernel")


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return nn.Linear(32, 1000)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts calls of oneDNN's linear kernel."""
    calls = []
    original = torch.ops.mkldnn._linear_pointwise

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", counting)
    return calls


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 32), (2, 32), (3, 5, 32), (17, 32)])
def test_the_mode_matches_the_module(layer, kernel_calls, shape):
    hidden = torch.randn(shape)
    with torch.inference_mode():
        expected = layer(hidden)
        with OneDNNLinearMode():
            logits = layer(hidden)
    assert kernel_calls == [torch.Size([torch.Size(shape[:-1]).numel(), 32])]
    assert logits.shape == (*shape[:-1], 1000)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_the_mode_leaves_autograd_other_dtypes_and_other_functions_alone(layer, kernel_calls):
    hidden = torch.randn(4, 32, requires_grad=True)
    with OneDNNLinearMode():
        layer(hidden).sum().backward()  # autograd on: torch's own linear, so gradients flow
        torch.testing.assert_close(layer.bias.grad, torch.full((1000,), 4.0))
        with torch.inference_mode():
            layer.to(torch.bfloat16)(hidden.detach().bfloat16())
            assert torch.equal(F.relu(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
    assert kernel_calls == []


@needs_onednn
def test_a_failing_kernel_falls_back_to_torch(layer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("operator changed")

    monkeypatch.setattr(onednn, "_ONEDNN_LINEAR", True)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken)
    hidden = torch.randn(3, 32)
    with torch.inference_mode():
        with OneDNNLinearMode():
            logits = layer(hidden)
        torch.testing.assert_close(logits, layer(hidden))
    assert onednn._ONEDNN_LINEAR is False  # disabled for the rest of the process


@needs_onednn
def test_cpu_float32_decoding_uses_the_kernel_and_others_do_not(kernel_calls):
    model = build_model(modernbert_config())
    ids = torch.tensor([[10, 11, 12]])
    out = model.generate(ids, max_new_tokens=8, steps=8, block_length=4, repetition_penalty=1.0)
    assert len(kernel_calls) > 8 and not (out == 4).all()
    kernel_calls.clear()
    model.to(torch.bfloat16).generate(ids, max_new_tokens=8, steps=8, block_length=4)
    assert kernel_calls == []
    assert isinstance(onednn_linear_mode(model), type(onednn_linear_mode(nn.Identity())))  # both no-op contexts


def test_deterministic_mode_decodes_with_pytorchs_own_kernels(kernel_calls):
    """Under `torch.use_deterministic_algorithms(True)` nothing is substituted, and greedy tokens equal the
    authors' loop (which runs PyTorch's kernels) bit for bit."""
    from conftest import EOS, MASK
    from reference_sampler import reference_generate

    model = build_model(modernbert_config())
    prompt = [10, 11, 12, 13]
    settings = dict(max_new_tokens=16, steps=16, block_length=8, repetition_penalty=1.2)
    expected = reference_generate(model, [prompt], mask_id=MASK, eos_id=EOS, **settings)[0, 4:20].tolist()
    torch.use_deterministic_algorithms(True)
    try:
        out = model.generate(torch.tensor([prompt]), output_history=True, **settings)
    finally:
        torch.use_deterministic_algorithms(False)
    assert kernel_calls == []
    assert out.history[-1][0, 4:].tolist() == expected
    model.generate(torch.tensor([prompt]), **settings)
    assert kernel_calls  # outside the switch, float32 CPU decoding does take the oneDNN route
