"""Masked diffusion decoding: configuration, scheduler, canvas, denoising loop and the `generate`/`infill` mixin.

Nothing here knows about training, pipelines or the Hub; it depends only on torch, transformers and diffusers.
"""

from __future__ import annotations

from .configuration import MaskedDiffusionGenerationConfig
from .mixin import MaskedDiffusionGenerationMixin
from .outputs import MaskedDiffusionGenerationOutput
from .scheduling import MaskedDiffusionScheduler, MaskedDiffusionSchedulerOutput, SamplingParameters

__all__ = [
    "MaskedDiffusionGenerationConfig",
    "MaskedDiffusionGenerationMixin",
    "MaskedDiffusionGenerationOutput",
    "MaskedDiffusionScheduler",
    "MaskedDiffusionSchedulerOutput",
    "SamplingParameters",
]
