"""`MaskedDiffusionTrainingArguments`: transformers' `TrainingArguments` plus the masked diffusion objective."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..generation.configuration import ALPHA_SCHEDULES
from ..validation import check_bool, check_choice, check_number

LOSS_WEIGHTINGS = ("elbo", "none")
LOSS_NORMALIZATIONS = ("sequence", "token")
#: The masked diffusion settings and their defaults (what a plain `TrainingArguments` trains with).
DIFFUSION_DEFAULTS = {
    "time_epsilon": 1e-3,
    "noise_schedule": "linear",
    "loss_weighting": "elbo",
    "loss_normalization": "sequence",
    "stop_on_nonfinite": True,
}


def diffusion_setting(args: TrainingArguments, name: str) -> object:
    """A masked diffusion setting of `args`, or its default for a plain `transformers.TrainingArguments`."""
    return getattr(args, name, DIFFUSION_DEFAULTS[name])


@dataclass
class MaskedDiffusionTrainingArguments(TrainingArguments):
    r"""
    [`transformers.TrainingArguments`] plus the settings of the masked diffusion (MDLM) objective.

    Each sequence draws a time `t = time_epsilon + (1 - time_epsilon) * U`, masks each maskable token with probability
    `1 - alpha(t)` (`t` itself for the linear schedule), and is scored by cross-entropy on its masked tokens, weighted
    by the ELBO weight `-alpha'(t) / (1 - alpha(t))` (`1 / t` for linear).

    Args:
        time_epsilon (`float`, defaults to 1e-3):
            Smallest diffusion time, keeping the `1 / t` weight finite.
        noise_schedule (`str`, defaults to `"linear"`):
            `"linear"` (`alpha(t) = 1 - t`, Diffutron's) or `"cosine"`.
        loss_weighting (`str`, defaults to `"elbo"`):
            `"elbo"`: the schedule's ELBO weight; `"none"`: plain cross-entropy on the masked tokens.
        loss_normalization (`str`, defaults to `"sequence"`):
            `"sequence"` (Diffutron's fork): each sequence's weighted sum divided by its number of maskable tokens,
            then averaged over sequences. `"token"` (upstream dllm): the batch's weighted sum divided by the batch's
            number of maskable tokens. Both count over the whole accumulated batch (gradient accumulation) and, with
            `average_tokens_across_devices`, across processes.
        stop_on_nonfinite (`bool`, defaults to `True`):
            Stop training with an error naming the step when the loss or the gradient norm is NaN or infinite,
            before the optimizer applies it, so that no NaN model is ever saved. (transformers' own logging hides such
            losses behind `logging_nan_inf_filter`.) Mixed precision with a gradient scaler skips such steps by
            design, so only the loss is checked there.

    Example:

    ```python
    >>> from transformers_mdlm import MaskedDiffusionTrainingArguments
    >>> args = MaskedDiffusionTrainingArguments(output_dir="out", loss_normalization="token", report_to=[])
    >>> args.noise_schedule, args.loss_weighting
    ('linear', 'elbo')

    ```
    """

    time_epsilon: float = field(default=1e-3, metadata={"help": "Smallest diffusion time t (keeps 1/t finite)."})
    noise_schedule: str = field(default="linear", metadata={"help": "Noise schedule: linear or cosine."})
    loss_weighting: str = field(default="elbo", metadata={"help": "elbo (1/t for linear) or none."})
    loss_normalization: str = field(
        default="sequence", metadata={"help": "sequence (per-sequence mean, Diffutron) or token (per-token, dllm)."}
    )
    stop_on_nonfinite: bool = field(
        default=True, metadata={"help": "Stop with an error when the loss or the gradient norm is NaN or infinite."}
    )

    def __post_init__(self) -> None:
        check_number("time_epsilon", self.time_epsilon, "a number in [0, 1)", lambda v: 0 <= v < 1)
        check_choice("noise_schedule", self.noise_schedule, ALPHA_SCHEDULES)
        check_choice("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        check_choice("loss_normalization", self.loss_normalization, LOSS_NORMALIZATIONS)
        check_bool("stop_on_nonfinite", self.stop_on_nonfinite)
        launched_processes = int(os.environ.get("WORLD_SIZE", "1"))
        if launched_processes > 1 and not torch.cuda.is_available() and not self.use_cpu:
            # Under torchrun/accelerate launch on a machine without CUDA, transformers would train each process alone
            # on all the data; the distributed run it was launched for needs the CPU backend.
            self.use_cpu = True
            self.ddp_backend = self.ddp_backend or "gloo"
        super().__post_init__()
