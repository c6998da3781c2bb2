"""The model call of one denoising step, plain or wrapped with `torch.compile` (see `static_shapes`, `compile_config`).

With `static_shapes` the loop hands this call tensors of one shape per block (all rows, the block's width of head
positions), which is what `torch.compile(mode="reduce-overhead")` (CUDA graphs) needs to capture it once and replay it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch


def logits_at_slots(
    model: Any,
    tokens: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    slots: torch.LongTensor,
) -> torch.Tensor:
    """The model call of a step: the encoder over whole rows, the output head only at `slots`."""
    hidden = model.compute_hidden_states(tokens, attention_mask)
    return model.compute_logits(hidden.gather(1, slots[..., None].expand(-1, -1, hidden.shape[-1])))


_LOCK = threading.Lock()
_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def compiled_step(compile_config: Any) -> Callable[..., torch.Tensor]:
    """`logits_at_slots` wrapped with `torch.compile` once per distinct `CompileConfig` (dynamo's own cache then
    keeps one graph per model and shape)."""
    options = compile_config.to_dict()
    key = repr(sorted(options.items()))
    with _LOCK:
        if key not in _COMPILED:
            _COMPILED[key] = torch.compile(logits_at_slots, **options)
        return _COMPILED[key]


__all__ = ["compiled_step", "logits_at_slots"]
