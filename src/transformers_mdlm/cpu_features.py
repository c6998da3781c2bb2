"""Whether this CPU computes in bfloat16 natively, and what that means for training and decoding on it.

oneDNN, PyTorch's CPU kernel library for bfloat16 matrix products, has native kernels only on CPUs with the AVX512-BF16
or AMX instructions (recent Xeon and EPYC server parts). Elsewhere (AVX2-only CPUs, as in many laptops, desktops and
older servers) PyTorch still runs bfloat16, but through slow emulation. Measured on an AMD EPYC with AVX2 only, 2 cores
(`docs/performance.md`): a training step of the embedded model's shape (6 layers, hidden 320, 32 rows of 128
tokens) takes 45.5 s under bfloat16 autocast against 1.9 s in float32, and greedy decoding of an mmBERT-shaped model
took 1,060 ms per token in emulated bfloat16 against 236 in float32. `MaskedDiffusionTrainer` warns in that case,
since nothing in transformers does; decoding computes bfloat16 linears in float32 there (`onednn_linear`), and warns
where it cannot (under `torch.use_deterministic_algorithms(True)` or a compiled step).
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX512-BF16 or AMX); `False` where it cannot tell.

    Example:

    ```python
    >>> from transformers_mdlm.cpu_features import cpu_has_native_bfloat16
    >>> isinstance(cpu_has_native_bfloat16(), bool)
    True

    ```
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private operator, or a build without oneDNN
        return False


__all__ = ["cpu_has_native_bfloat16"]
