from __future__ import annotations

import pytest
import torch
from torch import nn

from transformers_mdlm.vocabulary_projection import project_to_vocabulary, uses_onednn_kernel


@pytest.fixture
def decoder():
    torch.manual_seed(0)
    return nn.Linear(32, 1000)


@pytest.mark.parametrize("shape", [(1, 32), (2, 32), (3, 5, 32), (17, 32)])
def test_inference_projection_matches_the_module(decoder, shape):
    hidden = torch.randn(shape)
    with torch.inference_mode():
        logits = project_to_vocabulary(hidden, decoder)
        expected = decoder(hidden)
    assert logits.shape == (*shape[:-1], 1000)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_the_fast_kernel_is_used_only_for_float32_cpu_inference(decoder):
    hidden = torch.randn(4, 32)
    with torch.inference_mode():
        assert uses_onednn_kernel(hidden, decoder) == torch.backends.mkldnn.is_available()
        assert not uses_onednn_kernel(hidden.bfloat16(), decoder)
        assert not uses_onednn_kernel(hidden[:0], decoder)
    assert not uses_onednn_kernel(hidden, decoder)  # autograd on: the module itself, so training keeps gradients


def test_training_projection_keeps_gradients(decoder):
    hidden = torch.randn(4, 32, requires_grad=True)
    project_to_vocabulary(hidden, decoder).sum().backward()
    assert hidden.grad is not None and decoder.weight.grad is not None
    torch.testing.assert_close(decoder.bias.grad, torch.full((1000,), 4.0))


def test_wrapped_layers_run_their_own_forward(decoder):
    class Scaled(nn.Linear):  # e.g. a quantised or adapter-wrapped linear: its forward may differ from F.linear
        def forward(self, x):
            return 2 * super().forward(x)

    scaled = Scaled(32, 1000)
    scaled.load_state_dict(decoder.state_dict())
    hidden = torch.randn(3, 32)
    with torch.inference_mode():
        assert not uses_onednn_kernel(hidden, scaled)
        torch.testing.assert_close(project_to_vocabulary(hidden, scaled), 2 * decoder(hidden))


def test_a_failing_kernel_falls_back_to_the_module(decoder, monkeypatch):
    import transformers_mdlm.vocabulary_projection as projection

    def broken(*args, **kwargs):
        raise RuntimeError("operator changed")

    monkeypatch.setattr(projection, "_ONEDNN_LINEAR", True)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken, raising=False)
    hidden = torch.randn(3, 32)
    with torch.inference_mode():
        torch.testing.assert_close(project_to_vocabulary(hidden, decoder), decoder(hidden))
        assert not uses_onednn_kernel(hidden, decoder)  # disabled for the rest of the process
