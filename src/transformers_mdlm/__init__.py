"""transformers-mdlm: masked diffusion language models for the Hugging Face ecosystem.

Importing the package registers `AutoModelForMaskedDiffusion`'s architectures and the `masked-diffusion` pipeline.
"""

from __future__ import annotations

from .chat_templates import DIFFUTRON_CHAT_TEMPLATE
from .generation import (
    MaskedDiffusionGenerationConfig,
    MaskedDiffusionGenerationMixin,
    MaskedDiffusionGenerationOutput,
    MaskedDiffusionScheduler,
    MaskedDiffusionSchedulerOutput,
    SamplingParameters,
)
from .modeling_auto import MODEL_FOR_MASKED_DIFFUSION_MAPPING, AutoModelForMaskedDiffusion
from .modeling_base import MaskedDiffusionModelMixin
from .modeling_masked_diffusion import (
    BertForMaskedDiffusion,
    DistilBertForMaskedDiffusion,
    ModernBertForMaskedDiffusion,
    RobertaForMaskedDiffusion,
    XLMRobertaForMaskedDiffusion,
)
from .pipelines import MaskedDiffusionPipeline, register_pipeline
from .presets import GENERATION_PRESETS, MODEL_ALIASES, generation_preset, resolve_model_name
from .training import (
    DataCollatorForMaskedDiffusion,
    DataCollatorForMaskedDiffusionSFT,
    MaskedDiffusionTrainer,
    MaskedDiffusionTrainingArguments,
    diffutron_lora_config,
    format_instruction_dataset,
    mix_corpus_blocks,
    pack_dataset,
    tokenize_line_by_line,
)

register_pipeline()

__version__ = "0.1.0.dev0"

__all__ = [
    "DIFFUTRON_CHAT_TEMPLATE",
    "GENERATION_PRESETS",
    "MODEL_ALIASES",
    "MODEL_FOR_MASKED_DIFFUSION_MAPPING",
    "AutoModelForMaskedDiffusion",
    "BertForMaskedDiffusion",
    "DataCollatorForMaskedDiffusion",
    "DataCollatorForMaskedDiffusionSFT",
    "DistilBertForMaskedDiffusion",
    "MaskedDiffusionGenerationConfig",
    "MaskedDiffusionGenerationMixin",
    "MaskedDiffusionGenerationOutput",
    "MaskedDiffusionModelMixin",
    "MaskedDiffusionPipeline",
    "MaskedDiffusionScheduler",
    "MaskedDiffusionSchedulerOutput",
    "MaskedDiffusionTrainer",
    "MaskedDiffusionTrainingArguments",
    "ModernBertForMaskedDiffusion",
    "RobertaForMaskedDiffusion",
    "SamplingParameters",
    "XLMRobertaForMaskedDiffusion",
    "__version__",
    "diffutron_lora_config",
    "format_instruction_dataset",
    "generation_preset",
    "mix_corpus_blocks",
    "pack_dataset",
    "register_pipeline",
    "resolve_model_name",
    "tokenize_line_by_line",
]
