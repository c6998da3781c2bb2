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
import os
import platform
from pathlib import Path

import torch

#: The /proc/cpuinfo flags of the bfloat16 instructions oneDNN uses, with the names Intel and AMD give them.
_BFLOAT16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


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


@functools.cache
def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU in words for a measured figure: its name, the kernel level PyTorch runs, its bfloat16 instructions, cores.

    Figures of this package differ by far between CPUs (bfloat16 training is 24x slower without bfloat16 kernels), so
    benchmarks and the embedded model's recipe log record which CPU gave them. The name and the instructions come
    from `cpuinfo` where there is one (Linux), else from `platform.processor()`; cores are those this process may run
    on.

    Example:

    ```python
    >>> from transformers_mdlm.cpu_features import cpu_description
    >>> cpu_description()  # doctest: +SKIP
    'Intel(R) Xeon(R) Processor (AVX512; AMX-BF16, AVX512-BF16), 2 cores'

    ```
    """
    name, flags = None, set()
    if Path(cpuinfo).is_file():
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():  # the first processor's entries
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip() and name is None:
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
            if flags and name:
                break
    name = name or platform.processor() or platform.machine()
    bfloat16 = [label for flag, label in _BFLOAT16_FLAGS.items() if flag in flags]
    if not bfloat16:
        bfloat16 = ["bfloat16 kernels" if cpu_has_native_bfloat16() else "no bfloat16 kernels"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({torch.backends.cpu.get_cpu_capability()}; {', '.join(bfloat16)}), {cores} cores"


__all__ = ["cpu_description", "cpu_has_native_bfloat16"]
