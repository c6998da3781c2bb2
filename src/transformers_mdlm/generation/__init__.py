"""Masked diffusion decoding: configuration, scheduler, denoising loop and the model mixin."""

from __future__ import annotations

from .configuration import MaskedDiffusionGenerationConfig
from .mixin import MaskedDiffusionGenerationMixin
from .outputs import MaskedDiffusionGenerationOutput
from .scheduling import MaskedDiffusionScheduler, MaskedDiffusionSchedulerOutput

__all__ = [
    "MaskedDiffusionGenerationConfig",
    "MaskedDiffusionGenerationMixin",
    "MaskedDiffusionGenerationOutput",
    "MaskedDiffusionScheduler",
    "MaskedDiffusionSchedulerOutput",
]
