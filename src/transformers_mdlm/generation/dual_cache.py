"""Fast-dLLM's dual cache for bidirectional encoders: an approximate key/value cache for block decoding.

A bidirectional encoder has no exact key/value cache: committing a token changes the keys and values of every position.
Fast-dLLM (Wu et al., 2025) observes that within a block they change little outside the block, and reuses them: at the
first step of each block the whole canvas runs (exactly as without a cache) and every layer's keys and values are
kept; the block's other steps run the encoder only over the block's positions (and any other position that competes),
whose queries attend to the kept keys and values of the prompt and of the later blocks together with the block's own
fresh ones. Each block therefore starts from exact states, and the saving grows with the canvas outside the block.

The cache works through transformers' attention interface: during decoding the model's attention implementation is
switched to `"mdlm_dual_cache"` (registered below), which records keys, values and the attention mask in the full pass
and splices the fresh keys and values of the block into the recorded ones in the partial passes, then calls PyTorch's
scaled-dot-product attention as `"sdpa"` does. It needs a model whose attention goes through that interface and whose
encoder takes the columns of the recomputed positions as `position_ids`: ModernBERT/mmBERT (Diffutron) and BERT
declare it with `supports_dual_cache = True` (RoBERTa-style encoders number positions from the padding index, and
DistilBERT has no attention interface, so they decode without it).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

ATTENTION_IMPLEMENTATION = "mdlm_dual_cache"
#: Attention implementations the cache can stand in for (it computes attention as `"sdpa"`, which equals `"eager"`).
SUPPORTED_IMPLEMENTATIONS = ("sdpa", "eager")


class DualCache:
    """Per-layer keys, values and attention masks of the last full pass, for the rows that ran in it.

    Attributes:
        block (`int` or `None`): the block whose first step recorded the cache.
        rows (`torch.LongTensor`): batch rows (of the tensor the encoder saw) that the recorded states belong to.
        query_positions (`torch.LongTensor` of shape `(len(rows), num_queries)`): the columns recomputed in the partial
            passes, per recorded row (the block and the other competing positions; rows with fewer repeat their last).
    """

    def __init__(self) -> None:
        self.block: int | None = None
        self.rows: torch.LongTensor | None = None
        self.query_positions: torch.LongTensor | None = None
        self._layers: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self._recording = False
        self._selected: torch.LongTensor | None = None
        self._positions: torch.LongTensor | None = None

    def start_recording(self, block: int, rows: torch.LongTensor, query_positions: torch.LongTensor) -> DualCache:
        """Prepare a full pass over `rows` whose states the block's later steps will reuse."""
        self.block, self.rows, self.query_positions = block, rows, query_positions
        self._layers = {}
        self._recording = True
        return self

    def select(self, block: int, rows: torch.LongTensor) -> torch.LongTensor | None:
        """Prepare a partial pass over `rows` and return their query positions; `None` if the cache cannot serve them
        (another block, or a row that did not run in the recorded pass): then a full pass must record it again."""
        if self.block != block or self.rows is None or not self._layers:
            return None
        index = torch.searchsorted(self.rows, rows).clamp(max=len(self.rows) - 1)
        if not bool((self.rows[index] == rows).all()):
            return None
        self._recording = False
        self._selected = index
        self._positions = self.query_positions[index]
        return self._positions

    def update(
        self, layer: int, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Record this layer's states (full pass) or splice the fresh ones into the recorded states (partial pass)."""
        if self._recording:
            self._layers[layer] = (key, value, attention_mask)
            return key, value, attention_mask
        recorded_key, recorded_value, recorded_mask = self._layers[layer]
        index, positions = self._selected, self._positions
        heads, head_dim = key.shape[1], key.shape[-1]
        scatter_index = positions[:, None, :, None].expand(-1, heads, -1, head_dim)
        key = recorded_key[index].scatter(2, scatter_index, key)
        value = recorded_value[index].scatter(2, scatter_index, value)
        if recorded_mask is not None:
            mask = recorded_mask.expand(len(self.rows), -1, -1, -1)[index]
            rows_index = positions[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[-1])
            recorded_mask = mask.gather(2, rows_index)
        return key, value, recorded_mask


#: Models switched to the cache's attention: `id(model.config)` -> (decoding calls using it, original implementation).
#: A model stays switched while any call on it decodes with the cache, so concurrent calls never see it switched
#: back under them; calls without a cache meanwhile run the original implementation's function.
_SWITCHED: dict[int, tuple[int, str]] = {}
_SWITCH_LOCK = threading.Lock()
#: A forward pass reads the implementation twice (to build its masks, then in every attention layer), so a switch must
#: not happen inside one: exact decoding's passes are counted per model (`_FORWARDS`), a switch waits for them to end,
#: and new passes wait while a switch is pending (`_PENDING`), so that a busy model cannot starve it.
_CONDITION = threading.Condition(_SWITCH_LOCK)
_FORWARDS: dict[int, int] = {}
_PENDING: dict[int, int] = {}
_HELD = threading.local()  # per thread: the models whose implementation this thread holds (nested passes skip waits)


def dual_cache_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dual_cache: DualCache | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention function registered as `"mdlm_dual_cache"`: `"sdpa"` over the recorded and fresh keys and values.

    A call without a cache (another thread decoding the same model exactly) runs the model's original attention.
    """
    if dual_cache is None:
        original = _original_attention(module)
        if (
            attention_mask is not None
            and attention_mask.dtype == torch.bool
            and original is not ALL_ATTENTION_FUNCTIONS["sdpa"]
        ):
            # The switched model builds sdpa's boolean masks; eager attention adds its mask to the scores, so it gets
            # the additive form its own mask function (transformers' `eager_mask`) would have built.
            attention_mask = torch.where(attention_mask, 0.0, torch.finfo(query.dtype).min).to(query.dtype)
        return original(module, query, key, value, attention_mask, **kwargs)
    key, value, attention_mask = dual_cache.update(id(module), key, value, attention_mask)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)


def _original_attention(module: torch.nn.Module) -> Any:
    config = getattr(module, "config", None)
    _, original = _SWITCHED.get(id(config), (0, "sdpa"))
    if original in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[original]
    # "eager" is each model file's own function.
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    return eager if eager is not None else ALL_ATTENTION_FUNCTIONS["sdpa"]


AttentionInterface.register(ATTENTION_IMPLEMENTATION, dual_cache_attention)
AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)


def check_dual_cache_support(model: Any) -> None:
    """Raise a `ValueError` naming what is missing when `model` cannot decode with `kv_cache="dual"`."""
    if not getattr(model, "supports_dual_cache", False):
        raise ValueError(
            f"`kv_cache='dual'` is available for ModernBERT/mmBERT and BERT models, not {type(model).__name__}; "
            "decode it with `kv_cache=None`."
        )
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in (*SUPPORTED_IMPLEMENTATIONS, ATTENTION_IMPLEMENTATION):
        raise ValueError(
            f"`kv_cache='dual'` needs a model whose attention goes through transformers' attention interface with "
            f"attn_implementation in {SUPPORTED_IMPLEMENTATIONS}; {type(model).__name__} uses {implementation!r}. "
            "Load it with `attn_implementation='sdpa'` or decode with `kv_cache=None`."
        )


@contextmanager
def attention_implementation_held(model: Any) -> Iterator[None]:
    """Keep `model`'s attention implementation fixed during one forward pass (of exact decoding).

    A dual-cache call on another thread switches the implementation of the whole model; a pass that built its masks
    for one implementation and then ran the other's attention would compute wrong states silently. The switch waits
    for the passes inside this context to end. Free for models that cannot use the dual cache (never switched).
    """
    if not getattr(model, "supports_dual_cache", False):
        yield
        return
    key = id(model.config)
    held = getattr(_HELD, "keys", None)
    if held is None:
        held = _HELD.keys = {}
    nested = held.get(key, 0) > 0  # waiting for a pending switch here would deadlock: the switch waits for us
    with _CONDITION:
        if not nested:
            _CONDITION.wait_for(lambda: not _PENDING.get(key))
        _FORWARDS[key] = _FORWARDS.get(key, 0) + 1
    held[key] = held.get(key, 0) + 1
    try:
        yield
    finally:
        held[key] -= 1
        with _CONDITION:
            _FORWARDS[key] -= 1
            if not _FORWARDS[key]:
                del _FORWARDS[key]
            _CONDITION.notify_all()


def _wait_for_forwards(key: int) -> None:
    """With `_CONDITION` held: wait until no forward pass holds the model's implementation (new ones wait meanwhile)."""
    _PENDING[key] = _PENDING.get(key, 0) + 1
    try:
        _CONDITION.wait_for(lambda: not _FORWARDS.get(key))
    finally:
        _PENDING[key] -= 1
        if not _PENDING[key]:
            del _PENDING[key]
        _CONDITION.notify_all()


@contextmanager
def dual_cache_attention_enabled(model: Any) -> Iterator[None]:
    """Switch `model` to the `"mdlm_dual_cache"` attention while decoding, restoring it after the last such call.

    Thread-safe: concurrent calls on one model count their uses under a lock, and the first to start switches while
    the last to finish restores, so no call sees the implementation change under it; a switch waits for the forward
    passes of exact decoding in flight on other threads (see [`attention_implementation_held`]).
    """
    check_dual_cache_support(model)
    key = id(model.config)
    with _CONDITION:
        count, original = _SWITCHED.get(key, (0, model.config._attn_implementation))
        if count == 0 and original != ATTENTION_IMPLEMENTATION:
            _wait_for_forwards(key)
            # Read again: another call may have switched the model while this one waited.
            count, original = _SWITCHED.get(key, (0, model.config._attn_implementation))
            if count == 0 and original != ATTENTION_IMPLEMENTATION:
                model.set_attn_implementation(ATTENTION_IMPLEMENTATION)
        _SWITCHED[key] = (count + 1, original)
    try:
        yield
    finally:
        with _CONDITION:
            count, original = _SWITCHED[key]
            if count == 1 and original != ATTENTION_IMPLEMENTATION:
                _wait_for_forwards(key)
                count, original = _SWITCHED[key]  # another call may have started meanwhile
            if count > 1:
                _SWITCHED[key] = (count - 1, original)
            else:
                del _SWITCHED[key]
                if original != ATTENTION_IMPLEMENTATION:
                    model.set_attn_implementation(original)


__all__ = [
    "DualCache",
    "attention_implementation_held",
    "check_dual_cache_support",
    "dual_cache_attention",
    "dual_cache_attention_enabled",
]
