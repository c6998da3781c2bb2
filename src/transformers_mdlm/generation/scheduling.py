"""`MaskedDiffusionScheduler`: the unmasking policy of masked diffusion decoding, as a diffusers scheduler."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..validation import check_bool, check_choice, check_int, check_number
from .canvas import pack_to_front
from .configuration import (
    ALPHA_SCHEDULES,
    REMASKING_STRATEGIES,
    MaskedDiffusionGenerationConfig,
    check_threshold_remasking,
)
from .logits import confidence_scores, filter_logits, propose_tokens


@dataclass(frozen=True)
class SamplingParameters:
    """How a step draws its proposals: the mask id, and the sampling settings of the generation config.

    Held apart from the scheduler's config so that one scheduler serves calls with different sampling settings
    (`generate(temperature=...)` overrides them per call), as diffusers schedulers take them at `step` time.

    Args:
        mask_token_id (`int`): id of the mask token; positions of `sample` holding it compete.
        temperature (`float`): `0` takes the argmax; above `0`, Gumbel-max sampling at that temperature.
        top_k (`int`, *optional*), top_p (`float`, *optional*): filtering before sampling (`None` = off).
    """

    mask_token_id: int
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        check_int("mask_token_id", self.mask_token_id, minimum=0)
        check_number("temperature", self.temperature, "a finite number >= 0", lambda v: v >= 0)
        check_int("top_k", self.top_k, minimum=0, optional=True)
        check_number("top_p", self.top_p, "a number in (0, 1]", lambda v: 0 < v <= 1, optional=True)

    @classmethod
    def from_generation_config(cls, config: MaskedDiffusionGenerationConfig) -> SamplingParameters:
        """The sampling settings of a (checked) generation config."""
        return cls(config.mask_token_id, config.sampling_temperature, config.top_k, config.top_p)


@dataclass
class MaskedDiffusionSchedulerOutput(BaseOutput):
    """
    Output of [`MaskedDiffusionScheduler.step`].

    Args:
        prev_sample (`torch.LongTensor` of shape `(batch_size, length)`):
            The tokens after this step: `sample` with the committed positions filled in.
        transfer_index (`torch.BoolTensor` of shape `(batch_size, length)`):
            Positions committed at this step.
        sampled_tokens (`torch.LongTensor` of shape `(batch_size, length)`):
            The proposal `x0` at every position (committed or not).
        confidence (`torch.Tensor` of shape `(batch_size, length)`):
            Confidence of each masked position's proposal; `-inf` where `sample` is not masked.
        pred_logits (`torch.Tensor` of shape `(batch_size, length, vocab_size)`):
            The logits the proposals were drawn from (after top-k / top-p filtering).
    """

    prev_sample: torch.LongTensor
    transfer_index: torch.BoolTensor
    sampled_tokens: torch.LongTensor
    confidence: torch.Tensor
    pred_logits: torch.Tensor


class MaskedDiffusionScheduler(SchedulerMixin, ConfigMixin):
    r"""
    Unmasking policy of masked diffusion decoding: how many masked tokens each step commits and which ones.

    Time runs from `t = 1` (everything masked) to `t = 0` (nothing masked). With `S` steps, step `j` goes from
    `t = (S - j) / S` to `s = (S - j - 1) / S`; a masked token stays masked with probability
    `(1 - alpha(s)) / (1 - alpha(t))`, so of the `n` tokens still masked the step commits
    `round(n * (1 - (1 - alpha(s)) / (1 - alpha(t))))` (rounding half to even, computed in float32 as the reference),
    or a binomial draw with that mean when `stochastic_transfer=True`. The last step commits everything left. Which
    tokens: the masked positions whose proposal has the highest confidence (`remasking`), or with
    `confidence_threshold`, every masked position whose confidence exceeds it, and at least one (Fast-dLLM).

    Like diffusers' discrete schedulers, `timesteps` lie in `(0, 1]`, `step()` returns a dataclass holding the
    logits it used, and the scheduler owns logit shaping (temperature, top-k, top-p) and the confidence rule.
    The configuration round-trips through `scheduler_config.json` (`save_pretrained` / `from_pretrained`).

    Args:
        schedule (`str`, defaults to `"linear"`):
            `"linear"` (`alpha(t) = 1 - t`, the reference) or `"cosine"` (`alpha(t) = 1 - cos(pi / 2 * (1 - t))`).
        remasking (`str`, defaults to `"low_confidence"`):
            Confidence rule: `"low_confidence"`, `"random"`, `"margin"` or `"entropy"`.
        stochastic_transfer (`bool`, defaults to `False`):
            Draw the number of tokens per step from a binomial distribution.
        confidence_threshold (`float`, *optional*):
            Commit every masked position whose confidence exceeds this value (at least one per step) instead of
            following the fixed schedule.

    Example:

    ```python
    >>> import torch
    >>> from transformers_mdlm import MaskedDiffusionScheduler

    >>> scheduler = MaskedDiffusionScheduler()
    >>> scheduler.get_num_transfer_tokens(torch.tensor([32, 5]), num_inference_steps=4)
    tensor([[8, 8, 8, 8],
            [1, 1, 2, 1]])

    ```
    """

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(
        self,
        schedule: str = "linear",
        remasking: str = "low_confidence",
        stochastic_transfer: bool = False,
        confidence_threshold: float | None = None,
    ) -> None:
        # The same checks (and messages) as the generation config's.
        check_choice("schedule", schedule, ALPHA_SCHEDULES)
        check_choice("remasking", remasking, REMASKING_STRATEGIES)
        check_bool("stochastic_transfer", stochastic_transfer)
        check_number(
            "confidence_threshold", confidence_threshold, "a number in (0, 1] or None", lambda v: 0 < v <= 1,
            optional=True,
        )  # fmt: skip
        check_threshold_remasking(remasking, confidence_threshold)
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None

    @classmethod
    def from_generation_config(cls, generation_config: MaskedDiffusionGenerationConfig) -> MaskedDiffusionScheduler:
        """The scheduler that applies a generation config's `schedule`, `remasking`, transfer and threshold."""
        return cls(
            schedule=generation_config.schedule,
            remasking=generation_config.remasking,
            stochastic_transfer=generation_config.stochastic_transfer,
            confidence_threshold=generation_config.confidence_threshold,
        )

    # ------------------------------------------------------------------ the noise schedule

    def alpha(self, t: torch.Tensor | float) -> torch.Tensor:
        """Probability that a token is still clean at time `t` (float32, as the reference computes it)."""
        t = torch.as_tensor(t, dtype=torch.float32)
        if self.config.schedule == "linear":
            return 1 - t
        return 1 - torch.cos((math.pi / 2) * (1 - t))

    def loss_weight(self, t: torch.Tensor | float) -> torch.Tensor:
        """The ELBO weight of the masked diffusion objective at time `t`: `-alpha'(t) / (1 - alpha(t))`.

        `1 / t` for the linear schedule; `(pi / 2) * tan(pi / 2 * (1 - t))` for the cosine one.
        """
        t = torch.as_tensor(t, dtype=torch.float32)
        if self.config.schedule == "linear":
            return 1 / t
        return (math.pi / 2) * torch.tan((math.pi / 2) * (1 - t))

    def transfer_fraction(self, step_index: int, num_inference_steps: int) -> float:
        """Expected fraction of the still-masked tokens that step `step_index` of `num_inference_steps` commits."""
        t = (num_inference_steps - step_index) / num_inference_steps
        s = (num_inference_steps - step_index - 1) / num_inference_steps
        stay_masked = ((1 - self.alpha(s)) / (1 - self.alpha(t))).item()
        return 1 - stay_masked

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Set the `num_inference_steps` times `t_j = (S - j) / S` of a block, in `(0, 1]`, in decreasing order."""
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, int)
            or num_inference_steps < 1
        ):
            raise ValueError(f"`num_inference_steps` must be an integer >= 1, got {num_inference_steps!r}.")
        self.num_inference_steps = num_inference_steps
        steps = torch.arange(num_inference_steps, 0, -1, dtype=torch.float32, device=device)
        self.timesteps = steps / num_inference_steps

    def get_num_transfer_tokens(
        self,
        num_masked: torch.LongTensor,
        num_inference_steps: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.LongTensor:
        """How many tokens each step commits, for rows holding `num_masked` masked tokens.

        Steps that would commit nothing are dropped (each row's counts are moved to the front and the tail padded with
        zeros), so a block never takes more forward passes than it has masks.

        Args:
            num_masked (`torch.LongTensor` of shape `(batch_size,)`): masked tokens of each row's block.
            num_inference_steps (`int`, *optional*): steps of the block; defaults to the one set by `set_timesteps`.
            generator (`torch.Generator`, *optional*): for `stochastic_transfer`.

        Returns:
            `torch.LongTensor` of shape `(batch_size, effective_steps)`; each row sums to its `num_masked`.
        """
        if num_inference_steps is None:
            if self.num_inference_steps is None:
                raise ValueError("Pass `num_inference_steps` or call `set_timesteps` first.")
            num_inference_steps = self.num_inference_steps
        left = num_masked.to(torch.int64).clone()
        counts = torch.zeros(left.shape[0], num_inference_steps, dtype=torch.int64, device=left.device)
        for j in range(num_inference_steps):
            fraction = self.transfer_fraction(j, num_inference_steps)
            if self.config.stochastic_transfer:
                prob = torch.full(left.shape, fraction, dtype=torch.float64, device=left.device)
                k = torch.binomial(left.to(torch.float64), prob, generator=generator).to(torch.int64)
            else:
                k = torch.round(left.to(torch.float64) * fraction).to(torch.int64)
            k = torch.minimum(k, left)
            counts[:, j] = k
            left -= k
            if not bool(left.any()):
                break
        # Drop the steps that commit nothing: each row's non-zero counts move to the front, in order.
        counts = counts.gather(1, pack_to_front(counts > 0))
        return counts[:, : int((counts > 0).sum(dim=1).max().item()) if counts.numel() else 0]

    # ------------------------------------------------------------------ one denoising step

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.LongTensor,
        *,
        sampling: SamplingParameters,
        num_transfer_tokens: torch.LongTensor | None = None,
        positions: torch.LongTensor | None = None,
        sequence_length: int | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> MaskedDiffusionSchedulerOutput | tuple[torch.Tensor, ...]:
        """Commit the most confident proposals among the masked positions of `sample`.

        Args:
            model_output (`torch.Tensor` of shape `(batch_size, length, vocab_size)`):
                Logits at the positions of `sample`.
            timestep (`float` or `torch.Tensor`):
                Time `t` in `(0, 1]` of this step, one of `timesteps` (any other time raises a `ValueError`). Used
                only when `num_transfer_tokens` is `None`, to derive the count from the schedule and the number of
                masks still in `sample`.
            sample (`torch.LongTensor` of shape `(batch_size, length)`):
                Current tokens; positions equal to `sampling.mask_token_id` compete, the others are kept.
            sampling ([`SamplingParameters`]):
                The mask id and how proposals are drawn (temperature, top-k, top-p).
            num_transfer_tokens (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                How many positions each row commits (from [`get_num_transfer_tokens`]). Ignored with a
                `confidence_threshold`.
            positions (`torch.LongTensor` of shape `(batch_size, length)`, *optional*), sequence_length (`int`):
                Where the entries of `sample` sit in sequences of `sequence_length` tokens. When given, the most
                confident entries are chosen by `torch.topk` over the whole sequence (the others at `-inf`), exactly
                as the reference implementation does, so that exact ties in confidence are broken the same way.
            generator (`torch.Generator`, *optional*):
                Random source for sampling and for `remasking="random"`.
            return_dict (`bool`):
                Return a [`MaskedDiffusionSchedulerOutput`] (default) or a tuple.
        """
        if positions is not None and sequence_length is None:
            raise ValueError("`positions` needs `sequence_length` (the length of the sequences they index).")
        masked = sample == sampling.mask_token_id
        logits = filter_logits(model_output, temperature=sampling.temperature, top_k=sampling.top_k,
                               top_p=sampling.top_p)  # fmt: skip
        proposals = propose_tokens(logits, temperature=sampling.temperature, generator=generator)
        # Confidence is judged on the unfiltered logits, as the reference does.
        confidence = confidence_scores(model_output, proposals, self.config.remasking, generator=generator)
        confidence = torch.where(masked, confidence, torch.full_like(confidence, float("-inf")))

        if self.config.confidence_threshold is not None:
            transfer_index = masked & (confidence > self.config.confidence_threshold)
            best = confidence.argmax(dim=-1, keepdim=True)
            transfer_index.scatter_(1, best, masked.gather(1, best))
        else:
            if num_transfer_tokens is None:
                num_transfer_tokens = self._count_from_timestep(timestep, masked)
            k = torch.minimum(num_transfer_tokens.to(torch.int64), masked.sum(dim=1))
            if positions is None:
                transfer_index = _top_k_mask(confidence, k)
            else:
                transfer_index = _top_k_mask_in_sequence(confidence, k, positions, sequence_length)

        prev_sample = torch.where(transfer_index, proposals, sample)
        if not return_dict:
            return prev_sample, transfer_index, proposals, confidence, logits
        return MaskedDiffusionSchedulerOutput(
            prev_sample=prev_sample,
            transfer_index=transfer_index,
            sampled_tokens=proposals,
            confidence=confidence,
            pred_logits=logits,
        )

    def _count_from_timestep(self, timestep: float | torch.Tensor, masked: torch.BoolTensor) -> torch.LongTensor:
        if self.num_inference_steps is None:
            raise ValueError("Call `set_timesteps` first, or pass `num_transfer_tokens` to `step`.")
        steps = self.num_inference_steps
        time = float(timestep)
        step_index = round((1 - time) * steps)
        # One of `timesteps` (float32: within 1e-6 of the grid), as diffusers' `index_for_timestep` looks the time up;
        # a time between two steps would otherwise take the nearer step's count silently.
        if not 0 <= step_index < steps or abs(time - (steps - step_index) / steps) > 1e-6:
            raise ValueError(f"`timestep` must be one of `scheduler.timesteps` (in (0, 1]), got {time}.")
        return torch.round(masked.sum(dim=1).to(torch.float64) * self.transfer_fraction(step_index, steps)).long()

    def add_noise(
        self,
        original_samples: torch.LongTensor,
        timesteps: torch.Tensor,
        *,
        mask_token_id: int,
        maskable: torch.BoolTensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.LongTensor, torch.BoolTensor]:
        """The forward process: mask each maskable token of row `i` with probability `1 - alpha(timesteps[i])`.

        Returns the noised tokens and the boolean map of masked positions.
        """
        mask_prob = (1 - self.alpha(timesteps)).to(original_samples.device)
        draws = torch.rand(original_samples.shape, device=original_samples.device, generator=generator)
        masked = draws < mask_prob.reshape(-1, *([1] * (original_samples.dim() - 1)))
        if maskable is not None:
            masked &= maskable
        return torch.where(masked, torch.full_like(original_samples, mask_token_id), original_samples), masked

    def __len__(self) -> int:
        return self.num_inference_steps or 0


def _top_k_mask_in_sequence(
    scores: torch.Tensor, k: torch.LongTensor, positions: torch.LongTensor, sequence_length: int
) -> torch.BoolTensor:
    """`_top_k_mask` computed the reference's way: `topk(k)` over whole sequences (one call per distinct `k`)."""
    full = torch.full((scores.shape[0], sequence_length), float("-inf"), dtype=scores.dtype, device=scores.device)
    full.scatter_(1, positions, scores)
    chosen = torch.zeros_like(full, dtype=torch.bool)
    for value in torch.unique(k).tolist():
        if value == 0:
            continue
        rows = (k == value).nonzero().flatten()
        top = full[rows].topk(value, dim=-1).indices
        chosen[rows] = chosen[rows].scatter(1, top, True)
    return chosen.gather(1, positions)


def _top_k_mask(scores: torch.Tensor, k: torch.LongTensor) -> torch.BoolTensor:
    """Boolean map of each row's `k[row]` highest `scores` (rows may ask for different `k`)."""
    selected = torch.zeros_like(scores, dtype=torch.bool)
    k_max = int(k.max().item()) if k.numel() else 0
    if k_max == 0:
        return selected
    top = scores.topk(k_max, dim=-1).indices
    keep = torch.arange(k_max, device=scores.device)[None, :] < k[:, None]
    return selected.scatter_(1, top, keep)


__all__ = [
    "ALPHA_SCHEDULES",
    "REMASKING_STRATEGIES",
    "MaskedDiffusionScheduler",
    "MaskedDiffusionSchedulerOutput",
    "SamplingParameters",
]
