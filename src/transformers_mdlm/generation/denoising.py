"""The denoising loop shared by `generate` and `infill`: block plan, one step, step hooks, stop check.

[`denoise`] decodes every mask of a [`Canvas`] block by block. Each step runs the encoder once over the rows that
still have work, computes the output head only at the positions that compete this step (the masked positions of the
current block), shapes the logits (repetition penalty, suppressed tokens) and lets the scheduler choose which
positions to commit. The loop knows nothing of kernels or caches beyond what it is handed: the caller enters any
context (oneDNN linears, the dual cache's attention) around it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .canvas import Canvas, pack_to_front
from .compiled_step import compiled_step, logits_at_slots
from .configuration import MaskedDiffusionGenerationConfig
from .dual_cache import DualCache, attention_implementation_held
from .logits import apply_repetition_penalty, ban_repeated_ngrams, token_presence
from .scheduling import MaskedDiffusionScheduler, SamplingParameters
from .stopping import StopStringMatcher, output_padding_id

#: What `callback_on_step_end` may receive in its `callback_kwargs` (`callback_on_step_end_tensor_inputs`).
CALLBACK_TENSOR_INPUTS = ("sequences", "committed", "block_index")

StepCallback = Callable[[Any, int, float, dict[str, Any]], "dict[str, Any] | None"]


class MaskedDiffusionBackbone(Protocol):
    """What the loop needs from a model: the encoder's hidden states and the output head, separately."""

    def compute_hidden_states(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, **kwargs: Any
    ) -> torch.Tensor: ...

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor: ...


@dataclass
class StepHooks:
    """Who hears about each step: the history, a streamer, and a diffusers-style `callback_on_step_end`.

    The callback is called as `callback(model, step, timestep, callback_kwargs)` with the entries of
    `tensor_inputs` in `callback_kwargs`; it may return a dict whose `"sequences"` replaces the canvas (in the
    caller's layout), as diffusers' callbacks return replacement latents.
    """

    keep_history: bool = False
    streamer: Any | None = None
    callback: StepCallback | None = None
    tensor_inputs: Sequence[str] = CALLBACK_TENSOR_INPUTS


@dataclass
class BlockPlan:
    """One block of every row: its columns, the positions that compete, and how many tokens each step commits."""

    index: int
    start: torch.LongTensor
    end: torch.LongTensor
    in_window: torch.BoolTensor
    schedule: torch.LongTensor | None
    num_steps: int
    query_positions: torch.LongTensor | None
    slot_width: int | None = None


@dataclass
class DenoisingResult:
    """The final canvas (decoding layout), the forward passes run, and the history (caller's layout)."""

    tokens: torch.LongTensor
    nfe: int
    history: list[torch.LongTensor] | None


def denoise(
    model: MaskedDiffusionBackbone,
    canvas: Canvas,
    config: MaskedDiffusionGenerationConfig,
    scheduler: MaskedDiffusionScheduler,
    *,
    hooks: StepHooks | None = None,
    generator: torch.Generator | None = None,
    cache: DualCache | None = None,
    stop_strings: StopStringMatcher | None = None,
) -> DenoisingResult:
    """Decode every mask of `canvas` with a checked `config`; see the module documentation.

    With a dual `cache`, only the first step of a block runs the encoder over whole rows; the others reuse its keys
    and values outside the block (the caller switches the model's attention to the cache's; see `dual_cache`). With
    `stop_strings` (or `stop_on_eos`), a row whose committed tokens hold one (an EOS) takes no more passes, from the
    step that commits the last mask before it.
    """
    return _Denoiser(model, canvas, config, scheduler, hooks or StepHooks(), generator, cache, stop_strings).run()


class _Denoiser:
    """The state of one decoding call (nothing is kept on the model, so concurrent calls do not interfere)."""

    def __init__(
        self,
        model: MaskedDiffusionBackbone,
        canvas: Canvas,
        config: MaskedDiffusionGenerationConfig,
        scheduler: MaskedDiffusionScheduler,
        hooks: StepHooks,
        generator: torch.Generator | None,
        cache: DualCache | None,
        stop_strings: StopStringMatcher | None = None,
    ) -> None:
        self.model, self.canvas, self.config, self.scheduler = model, canvas, config, scheduler
        self.hooks, self.generator, self.cache, self.stop_strings = hooks, generator, cache, stop_strings
        self.x = canvas.tokens.clone()
        batch, width = self.x.shape
        device = self.x.device
        self.columns = torch.arange(width, device=device)
        self.rows = torch.arange(batch, device=device)
        self.attend = None if bool(canvas.attend.all()) else canvas.attend.long()
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        # Per row, how many committed tokens of its region were searched for a stop string already.
        self.checked_prefix = torch.zeros(batch, dtype=torch.long, device=device)
        self.sampling = SamplingParameters.from_generation_config(config)
        region = int(canvas.region_length.max()) if batch else 0
        self.block_length = config.block_length or max(region, 1)
        self.num_blocks = math.ceil(region / self.block_length)
        self.steps_per_block = math.ceil(config.steps / self.num_blocks) if self.num_blocks else 0
        scheduler.set_timesteps(max(self.steps_per_block, 1), device=device)
        self.timesteps = scheduler.timesteps.tolist()  # read once: a step reads its time without a device sync
        self.threshold_mode = scheduler.config.confidence_threshold is not None
        self.static = config.static_shapes or config.compile_config is not None
        self.project = logits_at_slots if config.compile_config is None else compiled_step(config.compile_config)
        self.nfe = 0
        self.history = [canvas.to_output(self.x)] if hooks.keep_history else None

    # ------------------------------------------------------------------ the loop

    def run(self) -> DenoisingResult:
        for block in range(self.num_blocks):
            plan = self.plan_block(block)
            step, all_finished = 0, False
            while step < plan.num_steps and not all_finished and self.step(plan, step):
                step += 1
                all_finished = self.stop_finished_rows(plan)
            if self.hooks.streamer is not None:
                self.hooks.streamer.put(self._block_tokens(plan).cpu())
            if all_finished or self.stop_finished_rows(plan):
                break
        if self.hooks.streamer is not None:
            self.hooks.streamer.end()
        return DenoisingResult(self.x, self.nfe, self.history)

    def plan_block(self, block: int) -> BlockPlan:
        """The block's columns per row, the positions that compete, and its step schedule."""
        canvas, columns, mask_id = self.canvas, self.columns, self.config.mask_token_id
        start = canvas.region_start + block * self.block_length
        end = canvas.region_start + torch.clamp(canvas.region_length, max=(block + 1) * self.block_length)
        in_block = (columns >= start[:, None]) & (columns < end[:, None]) & canvas.real
        window_start = torch.zeros_like(start) if canvas.candidates_from_start else start
        in_window = (columns >= window_start[:, None]) & (columns < end[:, None]) & canvas.real
        competing = self._budget(in_block)
        if self.threshold_mode:  # every step commits at least one competing position of each active row
            schedule, num_steps = None, int(competing.max())
        else:
            schedule = self.scheduler.get_num_transfer_tokens(
                competing, self.steps_per_block, generator=self.generator
            )
            num_steps = schedule.shape[1]
        query_positions = None
        if self.cache is not None:  # the columns the dual cache recomputes: the block and any other competing mask
            selected = in_block | ((self.x == mask_id) & in_window)
            query_positions = _repeat_last(pack_to_front(selected), selected.sum(dim=1))
        plan = BlockPlan(block, start, end, in_window, schedule, num_steps, query_positions)
        plan.slot_width = self._slot_width(plan, in_block) if self.static else None
        return plan

    def _slot_width(self, plan: BlockPlan, in_block: torch.BoolTensor) -> int:
        """Static shapes: head positions per row for the whole block, the block's columns plus any other mask that
        competes (prompt masks); the candidates only decrease during the block."""
        competing = in_block | ((self.x == self.config.mask_token_id) & plan.in_window)
        return max(int(competing.sum(dim=1).max()), 1)

    def _budget(self, in_block: torch.BoolTensor) -> torch.LongTensor:
        """How many tokens a block commits: its masks, plus any mask still inside the prompt.

        The reference counts the block's masks only, although prompt masks compete too, and so leaves masks in the
        output when a prompt holds some; counting them decodes every one. A prompt without masks never gets one (its
        other tokens never compete), so the counts, and the tokens, equal the reference's there.
        """
        masked = self.x == self.config.mask_token_id
        budget = (masked & in_block).sum(dim=1)
        if self.canvas.candidates_from_start:
            in_prompt = (self.columns[None, :] < self.canvas.region_start[:, None]) & self.canvas.real
            budget = budget + (masked & in_prompt).sum(dim=1)
        return budget.masked_fill(self.finished, 0)

    def step(self, plan: BlockPlan, step: int) -> bool:
        """One denoising step; `False` when the block has nothing left to do."""
        x, mask_id = self.x, self.config.mask_token_id
        # The window holds only the rows' own positions; a finished row's masks are padding, except prompt masks.
        candidates = (x == mask_id) & plan.in_window & ~self.finished[:, None]
        if not bool(candidates.any()):
            return False
        if plan.schedule is None:
            todo = candidates.any(dim=1) & ~self.finished
        else:
            todo = (plan.schedule[:, step] > 0) & candidates.any(dim=1)
        if not bool(todo.any()):
            return plan.schedule is not None  # a fixed schedule may skip a step for these rows; the threshold ends
        # Pack each active row's competing positions to the front, in order. With static shapes every row is active
        # (rows with nothing to do commit nothing: their budget is 0 or they have no candidates) and the width is the
        # block's, so the model call sees the same shapes at every step of the block.
        active = self.rows if self.static else self.rows[todo]
        competing = candidates[active]
        counts = competing.sum(dim=1)
        slots = pack_to_front(competing, plan.slot_width if self.static else int(counts.max()))
        valid = torch.arange(slots.shape[1], device=x.device)[None, :] < counts[:, None]

        x_active = x[active]
        logits = self._shape_logits(self._logits_at(x_active, active, slots, plan), x_active, active, slots, valid)
        sample = torch.where(valid, x_active.gather(1, slots), torch.full_like(slots, -1))
        timestep = self.timesteps[min(step, len(self.timesteps) - 1)]
        out = self.scheduler.step(
            logits, timestep, sample,
            sampling=self.sampling,
            num_transfer_tokens=None if plan.schedule is None else plan.schedule[active, step],
            positions=slots, sequence_length=x.shape[1], generator=self.generator,
        )  # fmt: skip
        committed = out.transfer_index & valid
        x[active] = x_active.scatter(1, slots, torch.where(committed, out.prev_sample, x_active.gather(1, slots)))
        self.nfe += 1
        self._after_step(plan, step, timestep, active, slots, committed)
        return True

    def stop_finished_rows(self, plan: BlockPlan) -> bool:
        """Rows whose answer has ended take no more passes: their remaining masks, and the tokens after a stop
        string, become padding. Returns whether every row is finished.

        A row has ended when its committed prefix (the decoded region up to its first mask) holds an EOS (with
        `stop_on_eos`) or a stop string. Committed tokens never change, so the row's tokens up to the stop are final
        even in the middle of a block: the passes saved are those that would only have filled the positions after it.
        """
        config, canvas, columns = self.config, self.canvas, self.columns
        if not canvas.new_tokens:  # infilling fills every mask: an EOS or stop string in the text ends nothing
            return False
        check_eos = config.stop_on_eos and config.eos_token_id is not None
        if not check_eos and self.stop_strings is None:
            return False
        x, mask_id = self.x, config.mask_token_id
        region = (columns >= canvas.region_start[:, None]) & (columns < plan.end[:, None]) & canvas.real
        # The committed prefix: region columns before the row's first mask (masks outside the region do not count).
        committed = region & ((x == mask_id) & region).long().cumsum(dim=1).eq(0)
        fill_id = output_padding_id(config)  # the same id as the padding after EOS
        newly = torch.zeros_like(self.finished)
        if check_eos:
            newly |= ~self.finished & ((x == config.eos_token_id) & committed).any(dim=1)
        if self.stop_strings is not None:
            prefix_lengths = committed.sum(dim=1)
            grown = ~self.finished & ~newly & (prefix_lengths > self.checked_prefix)
            for row in grown.nonzero().flatten().tolist():
                start, length = int(canvas.region_start[row]), int(prefix_lengths[row])
                cut = self.stop_strings.end_index(x[row, start : start + length].tolist())
                if cut is not None:  # the tokens after the one completing the stop string become padding
                    x[row, start + cut + 1 : int(plan.end[row])] = fill_id
                    newly[row] = True
            self.checked_prefix = torch.maximum(self.checked_prefix, prefix_lengths)
        if bool(newly.any()):
            rest = newly[:, None] & (x == mask_id) & canvas.real & (columns >= canvas.region_start[:, None])
            self.x = x.masked_fill(rest, fill_id)
            self.finished |= newly
        return bool(self.finished.all())

    # ------------------------------------------------------------------ parts of a step

    def _logits_at(
        self, tokens: torch.LongTensor, rows: torch.LongTensor, slots: torch.LongTensor, plan: BlockPlan
    ) -> torch.Tensor:
        """Encoder over whole rows, head only at `slots`; with guidance, the unconditional copy rides in the same
        pass. With a dual cache, only the block's first step runs whole rows (recording keys and values)."""
        model, config, cache = self.model, self.config, self.cache
        attention_mask = self.attend[rows] if self.attend is not None else None
        guided = config.cfg_scale > 0
        if guided:
            unconditional = tokens.masked_fill(self.canvas.given[rows], config.mask_token_id)
            tokens = torch.cat([tokens, unconditional])
            attention_mask = torch.cat([attention_mask, attention_mask]) if attention_mask is not None else None
            slots = torch.cat([slots, slots])
        if cache is None:
            # A dual-cache call on another thread must not switch the attention implementation inside this pass.
            with attention_implementation_held(model):
                logits = self.project(model, tokens, attention_mask, slots)
        else:
            row_ids = torch.cat([rows, rows + len(self.rows)]) if guided else rows
            hidden = _cached_hidden_states(model, cache, plan, tokens, attention_mask, rows, row_ids)
            logits = model.compute_logits(hidden.gather(1, slots[..., None].expand(-1, -1, hidden.shape[-1])))
        if guided:
            conditional, unconditional = logits.chunk(2)
            logits = unconditional + (config.cfg_scale + 1) * (conditional - unconditional)
        return logits

    def _shape_logits(
        self,
        logits: torch.Tensor,
        tokens: torch.LongTensor,
        rows: torch.LongTensor,
        slots: torch.LongTensor,
        valid: torch.BoolTensor,
    ) -> torch.Tensor:
        """Repetition penalty (in place, on the columns of the row's tokens only), n-gram bans, suppressed tokens and
        `min_new_tokens`' early EOS."""
        config = self.config
        vocab_size = logits.shape[-1]
        if config.repetition_penalty != 1.0:
            exclude = (config.mask_token_id, config.eos_token_id)
            presence = token_presence(tokens, self.canvas.real[rows], vocab_size, exclude=exclude)
            logits = apply_repetition_penalty(
                logits, presence, config.repetition_penalty, token_ids=tokens.clamp(max=vocab_size - 1)
            )
        if config.no_repeat_ngram_size:
            known = (tokens != config.mask_token_id) & self.canvas.real[rows]
            logits = ban_repeated_ngrams(logits, tokens, known, slots, config.no_repeat_ngram_size)
        if config.suppress_tokens:
            logits[..., list(config.suppress_tokens)] = float("-inf")
        if config.min_new_tokens and self.canvas.new_tokens:
            # transformers' `min_new_tokens`, by position: no EOS among the first new positions (prompt masks are not
            # new tokens and keep theirs).
            offset = slots - self.canvas.region_start[rows, None]
            early = (offset >= 0) & (offset < config.min_new_tokens)
            logits[..., config.eos_token_id].masked_fill_(early, float("-inf"))
        self._check_some_token_allowed(logits, tokens.shape[1], valid)
        return logits

    def _check_some_token_allowed(self, logits: torch.Tensor, length: int, valid: torch.BoolTensor) -> None:
        """Refuse to propose from all-`-inf` logits. An n-gram ban of size n removes at most n * (length + n) tokens at
        a position, so the check (a pass over the logits) runs only when the bans could cover the vocabulary."""
        size, suppressed = self.config.no_repeat_ngram_size, len(set(self.config.suppress_tokens or ()))
        suppressed += 1 if self.config.min_new_tokens else 0
        vocab_size = logits.shape[-1]
        if size * (length + size) + suppressed < vocab_size:
            return
        if bool((torch.isneginf(logits).all(dim=-1) & valid).any()):
            raise ValueError(
                f"No token is left to propose at a position: `suppress_tokens` ({suppressed} ids) and "
                f"`no_repeat_ngram_size={size}` ban all {vocab_size} tokens of the vocabulary there. Suppress fewer "
                "tokens, or use a larger n-gram size or fewer new tokens."
            )

    def _after_step(
        self,
        plan: BlockPlan,
        step: int,
        timestep: float,
        active: torch.LongTensor,
        slots: torch.LongTensor,
        committed: torch.BoolTensor,
    ) -> None:
        """History, streamer draft, and the callback (whose returned `sequences` replace the canvas)."""
        hooks, canvas = self.hooks, self.canvas
        if self.history is not None:
            self.history.append(canvas.to_output(self.x))
        if hooks.streamer is not None and hasattr(hooks.streamer, "put_draft"):
            hooks.streamer.put_draft(self._block_tokens(plan).cpu())
        if hooks.callback is None:
            return
        callback_kwargs: dict[str, Any] = {}
        if "sequences" in hooks.tensor_inputs:
            callback_kwargs["sequences"] = canvas.to_output(self.x)
        if "committed" in hooks.tensor_inputs:
            committed_map = torch.zeros_like(self.x, dtype=torch.bool)
            committed_map[active] = committed_map[active].scatter(1, slots, committed)
            callback_kwargs["committed"] = canvas.to_output(committed_map, padding=False)
        if "block_index" in hooks.tensor_inputs:
            callback_kwargs["block_index"] = plan.index
        returned = hooks.callback(self.model, self.nfe - 1, timestep, callback_kwargs)
        if isinstance(returned, dict) and returned.get("sequences") is not None:
            self._replace_canvas(returned["sequences"], plan, step)

    def _replace_canvas(self, sequences: torch.LongTensor, plan: BlockPlan, step: int) -> None:
        """Take a callback's canvas; the block's remaining steps are re-planned for the masks it now holds."""
        self.x = self.canvas.from_output(sequences, self.x)
        if self.static:  # the callback may have added masks: widen the block's positions to hold them
            plan.slot_width = max(plan.slot_width, self._slot_width(plan, torch.zeros_like(plan.in_window)))
        if plan.schedule is not None:
            competing = (
                ((self.x == self.config.mask_token_id) & plan.in_window).sum(dim=1).masked_fill(self.finished, 0)
            )  # after a replacement: every mask that competes in the block
            remaining = max(plan.num_steps - step - 1, 1)
            rest = self.scheduler.get_num_transfer_tokens(competing, remaining, generator=self.generator)
            head = plan.schedule[:, : step + 1]
            plan.schedule = torch.cat([head, rest], dim=1)
            plan.num_steps = plan.schedule.shape[1]

    def _block_tokens(self, plan: BlockPlan) -> torch.LongTensor:
        """The block's columns: as wide as the block really is (a last block may be shorter than `block_length`), so
        that a streamer receives exactly the output's new tokens."""
        width = max(int((plan.end - plan.start).max()), 0)
        index = (plan.start[:, None] + torch.arange(width, device=self.x.device)).clamp(max=self.x.shape[1] - 1)
        return self.x.gather(1, index)


def _cached_hidden_states(
    model: MaskedDiffusionBackbone,
    cache: DualCache,
    plan: BlockPlan,
    tokens: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    rows: torch.LongTensor,
    row_ids: torch.LongTensor,
) -> torch.Tensor:
    """Hidden states through the dual cache: a full, recording pass at the block's first step (or for rows the
    recorded pass did not run), else a pass over the recorded query positions only."""
    positions = cache.select(plan.index, row_ids)
    if positions is None:
        own_positions = plan.query_positions[rows]
        if len(row_ids) > len(rows):  # guidance: the unconditional copy recomputes the same columns
            own_positions = torch.cat([own_positions, own_positions])
        cache.start_recording(plan.index, row_ids, own_positions)
        return model.compute_hidden_states(tokens, attention_mask, dual_cache=cache)
    partial = model.compute_hidden_states(tokens.gather(1, positions), None, position_ids=positions, dual_cache=cache)
    hidden = partial.new_zeros(*tokens.shape, partial.shape[-1])
    return hidden.scatter_(1, positions[..., None].expand(-1, -1, partial.shape[-1]), partial)


def _repeat_last(positions: torch.LongTensor, counts: torch.LongTensor) -> torch.LongTensor:
    """The first `counts[row]` columns of each row, rows with fewer repeating their last one (width >= 1)."""
    width = max(int(counts.max()), 1)
    positions = positions[:, :width]
    last = positions.gather(1, (counts - 1).clamp(min=0)[:, None])
    return torch.where(torch.arange(width, device=positions.device)[None, :] < counts[:, None], positions, last)


__all__ = ["CALLBACK_TENSOR_INPUTS", "BlockPlan", "DenoisingResult", "StepHooks", "denoise"]
