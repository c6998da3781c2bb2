"""The denoising loop shared by `generate` and `infill`: blocks, guidance, penalty, callbacks, early stop."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..onednn_linear import onednn_linear_mode
from .configuration import MaskedDiffusionGenerationConfig
from .dual_cache import DualCache, dual_cache_attention_enabled
from .logits import apply_repetition_penalty, token_presence
from .scheduling import MaskedDiffusionScheduler


class MaskedDiffusionBackbone(Protocol):
    """What the loop needs from a model: the encoder's hidden states and the output head, separately."""

    def compute_hidden_states(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, **kwargs: Any
    ) -> torch.Tensor: ...

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Canvas:
    """A batch laid out for decoding: every row starts at column 0 (padding, if any, is on the right).

    Attributes:
        tokens: `(batch, width)` token ids; positions to decode hold the mask id.
        real: positions that belong to the row (prompt, canvas, or infill input).
        attend: positions the encoder attends to.
        given: positions replaced by masks in the unconditional pass of classifier-free guidance.
        region_start: first column of each row's decoded region (the prompt length, or 0 for infilling).
        region_length: length of each row's decoded region (`max_new_tokens`, or the input length for infilling).
        candidates_from_start: whether masks before the current block also compete (the reference `generate` lets
            mask tokens inside a prompt compete in every block; `infill` restricts each step to the block).
        to_output: maps `tokens` back to the caller's layout.
    """

    tokens: torch.LongTensor
    real: torch.BoolTensor
    attend: torch.BoolTensor
    given: torch.BoolTensor
    region_start: torch.LongTensor
    region_length: torch.LongTensor
    candidates_from_start: bool
    to_output: Callable[[torch.LongTensor], torch.LongTensor]


StepCallback = Callable[[Any, int, float, dict[str, Any]], Any]


def denoise(
    model: MaskedDiffusionBackbone,
    canvas: Canvas,
    config: MaskedDiffusionGenerationConfig,
    scheduler: MaskedDiffusionScheduler,
    *,
    generator: torch.Generator | None = None,
    callback_on_step_end: StepCallback | None = None,
    streamer: Any | None = None,
) -> tuple[torch.LongTensor, int, list[torch.LongTensor] | None]:
    """Decode every mask of `canvas` block by block; return the final tokens, the forward passes run and the history.

    Each step runs the encoder once over the rows that still have work, computes the output head only at the positions
    that compete this step (the masked positions of the current block), and lets `scheduler.step` choose which of them
    to commit. Float32 models on a CPU run their linears through oneDNN (`onednn_linear`). With
    `config.kv_cache == "dual"`, only the first step of a block runs the encoder over whole rows; the
    others reuse its keys and values outside the block (see `dual_cache`).
    """
    cache = DualCache() if config.kv_cache == "dual" else None
    with (
        dual_cache_attention_enabled(model) if cache is not None else nullcontext(),
        onednn_linear_mode(model),  # float32 on a CPU: oneDNN's linear kernel (same tokens, faster)
    ):
        return _denoise(model, canvas, config, scheduler, generator, callback_on_step_end, streamer, cache)


def _denoise(
    model: MaskedDiffusionBackbone,
    canvas: Canvas,
    config: MaskedDiffusionGenerationConfig,
    scheduler: MaskedDiffusionScheduler,
    generator: torch.Generator | None,
    callback_on_step_end: StepCallback | None,
    streamer: Any | None,
    cache: DualCache | None,
) -> tuple[torch.LongTensor, int, list[torch.LongTensor] | None]:
    x = canvas.tokens.clone()
    mask_id = config.mask_token_id
    eos_id = config.eos_token_id
    batch, width = x.shape
    device = x.device
    columns = torch.arange(width, device=device)
    rows = torch.arange(batch, device=device)
    vocab_size = None
    attend = None if bool(canvas.attend.all()) else canvas.attend.long()
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    fill_id = config.pad_token_id if config.pad_token_id is not None else eos_id

    block_length = config.block_length
    num_blocks = math.ceil(int(canvas.region_length.max()) / block_length) if batch else 0
    steps_per_block = math.ceil(config.steps / num_blocks) if num_blocks else 0
    scheduler.set_timesteps(max(steps_per_block, 1), device=device)
    threshold_mode = scheduler.config.confidence_threshold is not None

    history = [canvas.to_output(x)] if config.output_history else None
    nfe = 0

    for block in range(num_blocks):
        block_start = canvas.region_start + block * block_length
        block_end = canvas.region_start + torch.clamp(canvas.region_length, max=(block + 1) * block_length)
        in_block = (columns >= block_start[:, None]) & (columns < block_end[:, None]) & canvas.real
        window_start = torch.zeros_like(block_start) if canvas.candidates_from_start else block_start
        in_window = (columns >= window_start[:, None]) & (columns < block_end[:, None]) & canvas.real

        num_masked = ((x == mask_id) & in_block).sum(dim=1).masked_fill(finished, 0)
        if threshold_mode:
            # Every step commits at least one competing position of each active row.
            schedule = None
            max_steps = int(((x == mask_id) & in_window).sum(dim=1).masked_fill(finished, 0).max())
        else:
            schedule = scheduler.get_num_transfer_tokens(num_masked, steps_per_block, generator=generator)
            max_steps = schedule.shape[1]
        # Columns the dual cache recomputes after the block's first step: the block and any other competing mask.
        query_positions = None
        if cache is not None:
            query_positions = _packed_positions(in_block | ((x == mask_id) & in_window))

        for step in range(max_steps):
            masked = (x == mask_id) & canvas.real
            if not bool(masked.any()):
                break
            candidates = masked & in_window
            if schedule is None:
                todo = candidates.any(dim=1) & ~finished
            else:
                todo = (schedule[:, step] > 0) & candidates.any(dim=1)
            if not bool(todo.any()):
                if schedule is None:
                    break
                continue
            active = rows[todo]

            # Pack each active row's competing positions to the front, in order.
            cand = candidates[active]
            counts = cand.sum(dim=1)
            num_slots = int(counts.max())
            slots = torch.sort((~cand).to(torch.int8), dim=1, stable=True).indices[:, :num_slots]
            valid = torch.arange(num_slots, device=device)[None, :] < counts[:, None]

            x_active = x[active]
            attn_active = attend[active] if attend is not None else None
            logits = _logits_at(
                model, x_active, attn_active, canvas.given[active], slots, config, mask_id,
                cache=cache, block=block, rows=active, batch=batch, query_positions=query_positions,
            )  # fmt: skip
            if vocab_size is None:
                vocab_size = logits.shape[-1]
            if config.repetition_penalty != 1.0:
                presence = token_presence(x_active, canvas.real[active], vocab_size, exclude=(mask_id, eos_id))
                # In place, on the columns of the row's tokens only (`logits` are this step's own tensor).
                logits = apply_repetition_penalty(
                    logits, presence, config.repetition_penalty, token_ids=x_active.clamp(max=vocab_size - 1)
                )

            if config.suppress_tokens:
                logits[..., list(config.suppress_tokens)] = float("-inf")

            sample = torch.where(valid, x_active.gather(1, slots), torch.full_like(slots, -1))
            timestep = float(scheduler.timesteps[min(step, len(scheduler.timesteps) - 1)])
            out = scheduler.step(
                logits,
                timestep,
                sample,
                mask_token_id=mask_id,
                num_transfer_tokens=None if schedule is None else schedule[active, step],
                temperature=config.temperature,
                top_k=config.top_k,
                top_p=config.top_p,
                generator=generator,
                positions=slots,
                sequence_length=width,
            )
            committed = out.transfer_index & valid
            x[active] = x_active.scatter(1, slots, torch.where(committed, out.prev_sample, x_active.gather(1, slots)))
            nfe += 1

            if history is not None:
                history.append(canvas.to_output(x))
            if streamer is not None and hasattr(streamer, "put_draft"):
                streamer.put_draft(_block_tokens(x, block_start, block_length).cpu())
            if callback_on_step_end is not None:
                committed_map = torch.zeros_like(x, dtype=torch.bool)
                committed_map[active] = committed_map[active].scatter(1, slots, committed)
                callback_on_step_end(
                    model,
                    nfe - 1,
                    timestep,
                    {"sequences": canvas.to_output(x), "committed": committed_map, "block_index": block},
                )

        if streamer is not None:
            streamer.put(_block_tokens(x, block_start, block_length).cpu())
        if config.stop_on_eos and eos_id is not None:
            done_region = (columns >= canvas.region_start[:, None]) & (columns < block_end[:, None]) & canvas.real
            newly = ~finished & ((x == eos_id) & done_region).any(dim=1)
            if bool(newly.any()):
                rest = newly[:, None] & (x == mask_id) & canvas.real & (columns >= block_end[:, None])
                x = x.masked_fill(rest, fill_id)
                finished |= newly
                if bool(finished.all()):
                    break
    if streamer is not None:
        streamer.end()
    return x, nfe, history


def _logits_at(
    model: MaskedDiffusionBackbone,
    tokens: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    given: torch.BoolTensor,
    slots: torch.LongTensor,
    config: MaskedDiffusionGenerationConfig,
    mask_id: int,
    *,
    cache: DualCache | None = None,
    block: int = 0,
    rows: torch.LongTensor | None = None,
    batch: int = 0,
    query_positions: torch.LongTensor | None = None,
) -> torch.Tensor:
    """Encoder over whole rows, head only at `slots`; with guidance, the unconditional copy runs in the same pass.

    With a dual `cache`, the encoder runs over whole rows at the block's first step (recording keys and values) and
    only over `query_positions` afterwards; `rows` are the batch rows of `tokens`, out of `batch`.
    """
    guided = config.cfg_scale > 0
    if guided:
        unconditional = tokens.masked_fill(given, mask_id)
        tokens = torch.cat([tokens, unconditional])
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask])
        slots = torch.cat([slots, slots])
    if cache is None:
        hidden = model.compute_hidden_states(tokens, attention_mask)
    else:
        row_ids = torch.cat([rows, rows + batch]) if guided else rows
        positions = cache.select(block, row_ids)
        if positions is None:  # the block's first step (or rows the recorded pass did not run): a full, exact pass
            own_positions = query_positions[rows]
            own_positions = torch.cat([own_positions, own_positions]) if guided else own_positions
            cache.start_recording(block, row_ids, own_positions)
            hidden = model.compute_hidden_states(tokens, attention_mask, dual_cache=cache)
        else:
            partial = model.compute_hidden_states(
                tokens.gather(1, positions), None, position_ids=positions, dual_cache=cache
            )
            hidden = partial.new_zeros(*tokens.shape, partial.shape[-1])
            hidden.scatter_(1, positions[..., None].expand(-1, -1, partial.shape[-1]), partial)
    picked = hidden.gather(1, slots[..., None].expand(-1, -1, hidden.shape[-1]))
    logits = model.compute_logits(picked)
    if guided:
        conditional, unconditional = logits.chunk(2)
        logits = unconditional + (config.cfg_scale + 1) * (conditional - unconditional)
    return logits


def _packed_positions(selected: torch.BoolTensor) -> torch.LongTensor:
    """The columns of `selected` per row, in order, packed to the front; rows with fewer repeat their last column."""
    counts = selected.sum(dim=1)
    width = max(int(counts.max()), 1)
    positions = torch.sort((~selected).to(torch.int8), dim=1, stable=True).indices[:, :width]
    last = positions.gather(1, (counts - 1).clamp(min=0)[:, None])
    return torch.where(torch.arange(width, device=selected.device)[None, :] < counts[:, None], positions, last)


def _block_tokens(x: torch.LongTensor, block_start: torch.LongTensor, block_length: int) -> torch.LongTensor:
    index = (block_start[:, None] + torch.arange(block_length, device=x.device)).clamp(max=x.shape[1] - 1)
    return x.gather(1, index)
