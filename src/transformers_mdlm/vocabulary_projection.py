"""The output projection onto the vocabulary, with a faster CPU kernel for inference.

Decoding computes the vocabulary projection at a few positions per step (the masks that compete), so on a CPU it is
a skinny matrix product: a handful of rows against a `(vocab_size, hidden_size)` weight. PyTorch's default float32
`linear` on CPU goes through MKL, whose kernels for this shape run well below the machine's bandwidth and arithmetic
limits (on the project's AMD EPYC, 16 rows against mmBERT's 256,000 x 768 head: 159 ms, against 65 ms for oneDNN's
linear kernel, the one `torch.compile` itself uses for CPU linears). `project_to_vocabulary` sends float32 CPU
inference through oneDNN and everything else (training, GPUs, other dtypes, wrapped or quantised layers) through the
module itself. The two kernels sum in different orders, so logits may differ in the last bits, as between batch
sizes; greedy tokens agree with the reference loop in the test suite and the benchmark.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.utils import logging

logger = logging.get_logger(__name__)


def _onednn_linear_available() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):  # builds without oneDNN
        return False


_ONEDNN_LINEAR = _onednn_linear_available()


def uses_onednn_kernel(hidden_states: torch.Tensor, decoder: nn.Module) -> bool:
    """Whether [`project_to_vocabulary`] takes oneDNN's kernel for these inputs.

    Only for a plain float32 `nn.Linear` on CPU, outside autograd (the kernel has no backward), when the PyTorch build
    has oneDNN.
    """
    return (
        _ONEDNN_LINEAR
        and type(decoder) is nn.Linear
        and not torch.is_grad_enabled()
        and hidden_states.device.type == "cpu"
        and hidden_states.dtype == torch.float32
        and decoder.weight.dtype == torch.float32
        and decoder.weight.device.type == "cpu"
        and hidden_states.numel() > 0
    )


def project_to_vocabulary(hidden_states: torch.Tensor, decoder: nn.Module) -> torch.Tensor:
    """`decoder(hidden_states)`, through oneDNN's linear kernel for float32 CPU inference.

    Args:
        hidden_states (`torch.Tensor` of shape `(..., hidden_size)`): the head's transformed hidden states.
        decoder (`nn.Module`): the output embedding (a `nn.Linear` from `hidden_size` to `vocab_size`).

    Returns:
        `torch.Tensor` of shape `(..., vocab_size)`: the logits.

    Example:

    ```python
    >>> import torch
    >>> from torch import nn
    >>> from transformers_mdlm.vocabulary_projection import project_to_vocabulary
    >>> decoder = nn.Linear(8, 100)
    >>> hidden = torch.randn(3, 8)
    >>> with torch.inference_mode():
    ...     logits = project_to_vocabulary(hidden, decoder)
    >>> logits.shape, torch.allclose(logits, decoder(hidden), atol=1e-5)
    (torch.Size([3, 100]), True)

    ```
    """
    global _ONEDNN_LINEAR
    if not uses_onednn_kernel(hidden_states, decoder):
        return decoder(hidden_states)
    flat = hidden_states.reshape(-1, hidden_states.shape[-1]).contiguous()
    try:
        logits = torch.ops.mkldnn._linear_pointwise(flat, decoder.weight, decoder.bias, "none", [], "")
    except (RuntimeError, TypeError) as error:  # a private operator: if a PyTorch release changes it, use the module
        logger.warning("oneDNN's linear kernel failed (%s); the output projection falls back to the module.", error)
        _ONEDNN_LINEAR = False
        return decoder(hidden_states)
    return logits.view(*hidden_states.shape[:-1], logits.shape[-1])


__all__ = ["project_to_vocabulary", "uses_onednn_kernel"]
