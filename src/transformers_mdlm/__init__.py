"""transformers-mdlm: masked diffusion language models for the Hugging Face ecosystem.

Importing the package registers `AutoModelForMaskedDiffusion`'s architectures.
"""

from __future__ import annotations

from .generation import (
    MaskedDiffusionGenerationConfig,
    MaskedDiffusionGenerationMixin,
    MaskedDiffusionGenerationOutput,
    MaskedDiffusionScheduler,
    MaskedDiffusionSchedulerOutput,
)
from .modeling_auto import MODEL_FOR_MASKED_DIFFUSION_MAPPING, AutoModelForMaskedDiffusion
from .modeling_masked_diffusion import (
    BertForMaskedDiffusion,
    DistilBertForMaskedDiffusion,
    ModernBertForMaskedDiffusion,
    RobertaForMaskedDiffusion,
    XLMRobertaForMaskedDiffusion,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "MODEL_FOR_MASKED_DIFFUSION_MAPPING",
    "AutoModelForMaskedDiffusion",
    "BertForMaskedDiffusion",
    "DistilBertForMaskedDiffusion",
    "MaskedDiffusionGenerationConfig",
    "MaskedDiffusionGenerationMixin",
    "MaskedDiffusionGenerationOutput",
    "MaskedDiffusionScheduler",
    "MaskedDiffusionSchedulerOutput",
    "ModernBertForMaskedDiffusion",
    "RobertaForMaskedDiffusion",
    "XLMRobertaForMaskedDiffusion",
    "__version__",
]
