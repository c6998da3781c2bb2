"""The `masked-diffusion` pipeline task, registered with transformers when `transformers_mdlm` is imported."""

from __future__ import annotations

import functools
from typing import Any

import transformers
from transformers.pipelines import PIPELINE_REGISTRY

from ..modeling_auto import AutoModelForMaskedDiffusion
from ..presets import check_model_reference, default_model_path, resolve_model_name
from .masked_diffusion import MaskedDiffusionPipeline

TASK = "masked-diffusion"


def register_pipeline() -> None:
    """Register the task with transformers and let `transformers.pipeline` resolve this package's model aliases.

    transformers resolves a model name (reading its config) before any class of ours is called, and has no hook for
    aliases or for a default model shipped inside a package; so `transformers.pipeline` is wrapped, and the wrapper
    changes only calls for the `masked-diffusion` task: `model="diffutron"` becomes the Hub id, and no model means
    the embedded default model.
    """
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        # The embedded model is also the task's registered default, so that `pipeline("masked-diffusion")` works even
        # through a `pipeline` imported before this package.
        default = {"model": (default_model_path(), None)} if default_model_path() else None
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=MaskedDiffusionPipeline, pt_model=AutoModelForMaskedDiffusion, default=default
        )
    if getattr(transformers.pipeline, "__wrapped_by_transformers_mdlm__", False):
        return
    original = transformers.pipeline

    @functools.wraps(original)
    def pipeline(task: str | None = None, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        if task == TASK:
            if model is None:
                # transformers refuses a tokenizer without a model (it may not match the default); filling in the
                # embedded model first would skip that check and pair the two silently.
                tokenizer = kwargs.get("tokenizer", args[1] if len(args) > 1 else None)
                if tokenizer is not None:
                    raise RuntimeError(
                        "Impossible to instantiate a pipeline with tokenizer specified but not the model: the "
                        "tokenizer may not match the embedded default model. Pass the model too "
                        '(pipeline("masked-diffusion", model=..., tokenizer=...)), or no tokenizer.'
                    )
                model = default_model_path()
                if model is None:
                    raise ValueError(
                        "No default model for the masked-diffusion task is installed yet. Pass one: "
                        'pipeline("masked-diffusion", model="diffutron") (the Hub id diffutron/DiffutronLM-0.3B-Instruct), '
                        "a local folder, or a model instance with its tokenizer."
                    )
            elif isinstance(model, str):
                check_model_reference(model)
                model = resolve_model_name(model)
        return original(task, model, *args, **kwargs)

    pipeline.__wrapped_by_transformers_mdlm__ = True
    transformers.pipeline = pipeline
    transformers.pipelines.pipeline = pipeline


__all__ = ["TASK", "MaskedDiffusionPipeline", "register_pipeline"]
