"""oneDNN's linear kernel for float32 decoding on a CPU, through a `TorchFunctionMode`.

PyTorch's default float32 `linear` on a CPU goes through MKL, whose kernels run well below the machine's limits for the
shapes of decoding, notably the output head at a few positions: a handful of rows against a `(vocab_size, hidden)`
weight. On the project's AMD EPYC, 16 rows against mmBERT's 256,000 x 768 head take 159 ms through MKL and 65 ms
through oneDNN's linear kernel (the one `torch.compile` uses for CPU linears); the encoder's linears gain 7-20%.
[`OneDNNLinearMode`] is a `torch.overrides.TorchFunctionMode` (PyTorch's extension point for rerouting functions)
that sends `torch.nn.functional.linear` there when the input and weight are float32 on the CPU and autograd is off;
every other call runs unchanged. Decoding enters it for CPU float32 and bfloat16 models (below), and never under
`torch.use_deterministic_algorithms(True)`. The two kernels sum in different orders, so logits may differ in the last
bits and a greedy near-tie may be decided differently (random weights with a large vocabulary have many near-ties).

For bfloat16 the default kernel already is oneDNN's; what it lacks is a weight laid out for it. The mode then routes
the output head and the encoder's larger linears through copies of their weights that oneDNN reordered into its blocked
layout at the start of a decoding call (kept for later calls, below): 16 rows against mmBERT's head take 20 ms instead
of 41, and an mmBERT layer's four linears at 96 rows 2.34 ms instead of 2.73 (same values, bit for bit, on this
machine), for a reorder of about 140 ms (head) plus about 100 ms for the encoder's 88 linears, and copies of those
weights (393 MB for mmBERT's head, 220 MB for its encoder). The copies are kept between decoding calls
([`release_packed_weights`] drops them; `KEEP_PACKED_WEIGHTS = False` packs anew at every call), and a later call
reuses a copy only when its weight still holds the same bytes: same storage, same version counter and the same xxh3-64
digest of its content, computed at every call (about 20 ms for all of mmBERT's packed weights, against about 240 ms of
reorders), so that writes the version counter does not see (`weight.data += delta`, as peft's LoRA merge does) are seen
too.

On a CPU without bfloat16 kernels (AVX2 only) PyTorch emulates a bfloat16 linear, summing in float32 and rounding the
result, 2-7 times slower than its float32 kernel (mmBERT's linears at 96 rows: 17 vs 2.5 ms; its head at 16 rows: 316
vs 86 ms through oneDNN). The mode then does the same arithmetic through oneDNN's float32 kernel: the input and the
weight converted to float32 (the head once per decoding call, a temporary float32 copy, 786 MB for mmBERT's; the others
at each call, 0.1-0.3 ms), the result rounded to bfloat16. Only the order of the sums differs from the emulation, so a
greedy near-tie may again resolve otherwise, and `torch.use_deterministic_algorithms(True)` turns it off. The evidence
bound, under every evaluation, takes the same route ([`emulated_bfloat16_mode`]): 4.9x faster on an mmBERT-shaped
model, the bounds 0.02% apart.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import xxhash
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary
from transformers.utils import logging

from .cpu_features import cpu_has_native_bfloat16

logger = logging.get_logger(__name__)


def _available() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):  # builds without oneDNN
        return False


_ONEDNN_LINEAR = _available()

#: The output head is packed for oneDNN only when it is this large (elements) and decoding runs this many steps:
#: the reorder (about 120 ms for mmBERT's 197M-element head) pays for itself after about six steps.
PACK_MIN_ELEMENTS = 1 << 22
PACK_MIN_STEPS = 8
#: The encoder's bfloat16 linears are packed when they hold at least this many elements (mmBERT's hold 0.59M-1.77M;
#: each saves 0.05-0.2 ms per call at 96 rows, for a reorder of 1-2 ms, so they too pay after about eight steps).
PACK_MIN_LINEAR_ELEMENTS = 1 << 18
#: Keep packed copies between decoding calls (checked against their weights' content at every call). False packs anew
#: at every call and keeps nothing once a call returns.
KEEP_PACKED_WEIGHTS = True


class PackedWeight(NamedTuple):
    """A linear layer's weight and its copy in oneDNN's blocked layout."""

    weight: torch.Tensor
    packed: torch.Tensor


class OneDNNLinearMode(TorchFunctionMode):
    """Route float32 CPU `F.linear` calls without autograd to oneDNN's kernel; leave every other call alone.

    Args:
        float32 (`bool`): route float32 calls (the default).
        packed_weights (sequence of [`PackedWeight`], *optional*): calls with one of these weights use its packed
            copy (any dtype oneDNN packed it in), however `float32` is set.
        bfloat16_in_float32 (`bool`): compute bfloat16 calls in float32 through oneDNN and round the result to
            bfloat16, for CPUs without bfloat16 kernels, where PyTorch's emulated bfloat16 linear is 2-7 times slower.
        float32_copies (sequence of [`PackedWeight`], *optional*): float32 copies of bfloat16 weights, made once, for
            `bfloat16_in_float32` (others are converted at each call, which costs little except for a large head).

    Example:

    ```python
    >>> import torch
    >>> from transformers_mdlm.onednn_linear import OneDNNLinearMode
    >>> layer = torch.nn.Linear(8, 100)
    >>> hidden = torch.randn(3, 8)
    >>> with torch.inference_mode(), OneDNNLinearMode():
    ...     logits = layer(hidden)
    >>> torch.allclose(logits, layer(hidden).detach(), atol=1e-5)
    True

    ```
    """

    def __init__(
        self,
        *,
        float32: bool = True,
        packed_weights: tuple[PackedWeight, ...] = (),
        bfloat16_in_float32: bool = False,
        float32_copies: tuple[PackedWeight, ...] = (),
    ) -> None:
        super().__init__()
        self.float32 = float32
        self.packed = {id(entry.weight): entry for entry in packed_weights}
        self.bfloat16_in_float32 = bfloat16_in_float32
        self.float32_copies = {id(entry.weight): entry for entry in float32_copies}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear and _ONEDNN_LINEAR:
            hidden, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            entry = self.packed.get(id(weight))
            if entry is not None and entry.weight is weight and _suits_onednn(hidden, weight, bias, weight.dtype):
                return _onednn_linear(func, hidden, weight, bias, kernel_weight=entry.packed)
            if self.bfloat16_in_float32 and _suits_onednn(hidden, weight, bias, torch.bfloat16):
                return _bfloat16_in_float32(func, hidden, weight, bias, self.float32_copies.get(id(weight)))
            if self.float32 and _suits_onednn(hidden, weight, bias, torch.float32):
                return _onednn_linear(func, hidden, weight, bias)
        return func(*args, **kwargs)


def _suits_onednn(hidden: Any, weight: Any, bias: Any, dtype: torch.dtype) -> bool:
    return (
        not torch.is_grad_enabled()
        and type(hidden) is torch.Tensor
        and type(weight) in (torch.Tensor, torch.nn.Parameter)
        and hidden.device.type == "cpu"
        and hidden.dtype == dtype
        and weight.dtype == dtype
        and weight.dim() == 2
        and hidden.numel() > 0
        and (bias is None or bias.dtype == dtype)
    )


def _onednn_linear(
    func: Any,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    global _ONEDNN_LINEAR
    flat = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    try:
        output = torch.ops.mkldnn._linear_pointwise(
            flat, weight if kernel_weight is None else kernel_weight, bias, "none", [], ""
        )
    except (RuntimeError, TypeError) as error:  # a private operator: if a PyTorch release changes it, use F.linear
        logger.warning("oneDNN's linear kernel failed (%s); decoding falls back to torch's default.", error)
        _ONEDNN_LINEAR = False
        return func(hidden, weight, bias)
    return output.view(*hidden.shape[:-1], weight.shape[0])


def _bfloat16_in_float32(
    func: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, copy: PackedWeight | None
) -> torch.Tensor:
    """A bfloat16 linear summed in float32 (as PyTorch's emulated kernel does, in another order), rounded to bfloat16."""
    # Only the head is kept in float32 (its conversion costs more than a step's head); the other weights are converted
    # at each call (0.1-0.3 ms each, about 15 ms of a 311 ms mmBERT step) rather than held twice (440 MB for mmBERT's
    # encoder: a bfloat16 checkpoint is often chosen for its memory).
    weight32 = copy.packed if copy is not None and copy.weight is weight else weight.float()
    bias32 = None if bias is None else bias.float()
    return _onednn_linear(func, hidden.float(), weight32, bias32).to(torch.bfloat16)


def onednn_linear_mode(
    model: torch.nn.Module,
    *,
    steps: int = 0,
    rows: int = 1,
    encoder_rows: int | None = None,
    compiled_step: bool = False,
) -> AbstractContextManager:
    """[`OneDNNLinearMode`] for a float32 model on a CPU (when PyTorch has oneDNN). For a bfloat16 model: on a CPU with
    bfloat16 kernels, decoding at least `PACK_MIN_STEPS` steps, the mode with its output head packed (for `rows` rows
    per call) and its other large linears (for `encoder_rows` rows, default `rows`); on a CPU without them, the mode
    computing its linears in float32 (the output head from a float32 copy made once). Else a no-op context.

    Models whose encoder was compiled with `torch.compile`, and decoding whose step is (`compiled_step`, set by a
    `compile_config`), are left to the compiler, which picks its own CPU kernels (oneDNN's among them). Under
    PyTorch's own switch for exact results, `torch.use_deterministic_algorithms(True)`, nothing is substituted: oneDNN
    sums in another order than PyTorch's default kernel, which can flip a greedy near-tie, so exactness there means
    PyTorch's kernels.
    """
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type != "cpu":
        return nullcontext()
    emulated = parameter.dtype == torch.bfloat16 and not cpu_has_native_bfloat16()
    if not _substitutable(model) or compiled_step:
        if emulated:
            logger.warning_once(
                "Decoding a bfloat16 model on a CPU without bfloat16 kernels (AVX512-BF16 or AMX) with PyTorch's own "
                "kernels (under `torch.use_deterministic_algorithms(True)`) or the compiler's: PyTorch emulates "
                "bfloat16 there, and decoding runs several times slower than in float32 "
                "(4.5x for an mmBERT-shaped model on an AVX2 CPU, see docs/performance.md). Loading the model with "
                "`dtype=torch.float32` is faster; greedy near-ties may then resolve differently."
            )
        return nullcontext()
    if parameter.dtype == torch.float32:
        return OneDNNLinearMode()
    if emulated:
        return emulated_bfloat16_mode(model)
    if parameter.dtype == torch.bfloat16 and steps >= PACK_MIN_STEPS:
        packed = _packed_weights(model, rows, encoder_rows or rows)
        if packed:
            return OneDNNLinearMode(float32=False, packed_weights=packed)
    return nullcontext()


def emulated_bfloat16_mode(model: torch.nn.Module) -> AbstractContextManager:
    """For forward passes outside decoding (the evidence bound and every evaluation built on it): a bfloat16 model on
    a CPU without bfloat16 kernels computes its linears in float32 ([`OneDNNLinearMode`] with `bfloat16_in_float32`),
    as decoding does; anything else runs unchanged (float32 gains nothing there: the evidence bound of an
    mmBERT-shaped model took 8.9 s through oneDNN's route against 7.7-8.2 s without; in emulated bfloat16 it took
    50 s, 10.5 s with the float32 route). Off under `torch.use_deterministic_algorithms(True)` and for a compiled
    model."""
    parameter = next(model.parameters(), None)
    if (
        parameter is None
        or parameter.device.type != "cpu"
        or parameter.dtype != torch.bfloat16
        or cpu_has_native_bfloat16()
        or not _substitutable(model)
    ):
        return nullcontext()
    return OneDNNLinearMode(float32=False, bfloat16_in_float32=True, float32_copies=_float32_head(model))


def _substitutable(model: torch.nn.Module) -> bool:
    """Whether kernels may be substituted: oneDNN is there, exact results are not asked, the compiler has no say."""
    compiled = getattr(getattr(model, "base_model", model), "_compiled_call_impl", None) is not None
    return _ONEDNN_LINEAR and not torch.are_deterministic_algorithms_enabled() and not compiled


def _float32_head(model: torch.nn.Module) -> tuple[PackedWeight, ...]:
    """A float32 copy of a bfloat16 output head, made once per decoding call: converting mmBERT's 197M-element head
    takes about 400 ms on 2 cores, more than a step's head computes in float32."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if not isinstance(head, torch.nn.Linear) or weight.dtype != torch.bfloat16:
        return ()
    return (PackedWeight(weight, weight.detach().float()),)


def _packed_weights(model: torch.nn.Module, head_rows: int, rows: int) -> tuple[PackedWeight, ...]:
    """The bfloat16 linears worth packing: the output head (`PACK_MIN_ELEMENTS`), the others (`PACK_MIN_LINEAR_ELEMENTS`)."""
    if not cpu_has_native_bfloat16():  # no bfloat16 kernels on this CPU
        return ()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    chosen: dict[int, tuple[torch.Tensor, int]] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear) or weight.dtype != torch.bfloat16 or id(weight) in chosen:
            continue
        is_head = module is head
        if weight.numel() >= (PACK_MIN_ELEMENTS if is_head else PACK_MIN_LINEAR_ELEMENTS):
            chosen[id(weight)] = (weight, head_rows if is_head else rows)
    packed = []
    for weight, weight_rows in chosen.values():
        try:
            packed.append(PackedWeight(weight, _packed_copy(weight, weight_rows)))
        except (AttributeError, RuntimeError, TypeError) as error:  # a private operator: if it changes, use F.linear
            logger.warning("oneDNN could not pack a linear layer (%s); decoding uses torch's default.", error)
            return ()
    return tuple(packed)


@dataclass(frozen=True)
class _KeptCopy:
    """A packed copy of a weight, with the weight's state when it was packed: `(data_ptr, shape, stride, dtype,
    version)` and the digest of its bytes."""

    state: tuple
    digest: int
    packed: torch.Tensor


#: Packed copies kept between calls, by weight (an entry goes when its weight is garbage-collected).
_KEPT: WeakIdKeyDictionary = WeakIdKeyDictionary()
_KEPT_LOCK = threading.Lock()


def _version(weight: torch.Tensor) -> int | None:
    try:
        return weight._version
    except RuntimeError:  # inference tensors keep no version counter: the digest alone decides
        return None


def _content_digest(weight: torch.Tensor) -> int:
    """xxh3-64 of the weight's bytes (a weight written through `.data` keeps its version counter, not its bytes)."""
    data = weight.detach().contiguous().reshape(-1)
    return xxhash.xxh3_64_intdigest(data.view(torch.uint8).numpy())


def _packed_copy(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """`weight` reordered for oneDNN (for about `rows` rows per call): the kept copy when the weight still holds what
    was packed, else a new one (kept when `KEEP_PACKED_WEIGHTS`).

    The rows are a hint for oneDNN's layout only: every packed copy computes the same values at any row count (tested),
    so a copy packed for other rows is reused as it is.
    """
    if not KEEP_PACKED_WEIGHTS:
        with _KEPT_LOCK:
            _KEPT.pop(weight, None)  # a copy kept before the switch was turned off goes too
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), max(1, rows))
    # Taken before any packing, so that a copy is never recorded with a state newer than the bytes it was made from.
    state = (weight.data_ptr(), weight.shape, weight.stride(), weight.dtype, _version(weight))
    digest = _content_digest(weight)
    with _KEPT_LOCK:
        kept = _KEPT.get(weight)
        if kept is not None and kept.state == state and kept.digest == digest:
            return kept.packed
        _KEPT.pop(weight, None)  # stale: dropped before the new copy is made (the cache never holds both)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), max(1, rows))
    with _KEPT_LOCK:
        _KEPT[weight] = _KeptCopy(state, digest, packed)
    return packed


def release_packed_weights(model: torch.nn.Module | None = None) -> int:
    """Drop the packed copies that bfloat16 decoding on a CPU keeps between calls: those of `model`'s weights, or
    every model's. Returns how many were dropped. The next decoding call packs anew.

    Example:

    ```python
    >>> import torch
    >>> from transformers_mdlm.onednn_linear import release_packed_weights
    >>> release_packed_weights(torch.nn.Linear(4, 4))  # nothing was kept for this layer
    0

    ```
    """
    with _KEPT_LOCK:
        if model is None:
            count = len(_KEPT)
            _KEPT.clear()
            return count
        weights = [parameter for parameter in model.parameters() if parameter in _KEPT]
        for weight in weights:
            del _KEPT[weight]
        return len(weights)


__all__ = [
    "OneDNNLinearMode",
    "PackedWeight",
    "emulated_bfloat16_mode",
    "onednn_linear_mode",
    "release_packed_weights",
]
