"""Model cards for masked diffusion models, rendered from the package's template through `huggingface_hub.ModelCard`."""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # only Hub dataset ids go into the card's metadata

TEMPLATE_PATH = files(__package__).joinpath("templates", "model_card.md")

_GENERATION_KEYS = (
    "max_new_tokens", "steps", "block_length", "temperature", "top_k", "top_p", "remasking", "schedule",
    "stochastic_transfer", "confidence_threshold", "repetition_penalty", "cfg_scale", "stop_on_eos", "mask_token_id",
)  # fmt: skip

DEFAULT_LIMITATIONS = (
    "A masked diffusion model can produce fluent-looking text that is wrong; check facts before relying on them. Its "
    "quality depends on the number of denoising steps: fewer steps are faster and worse."
)


def lora_settings(model: Any) -> dict[str, Any] | None:
    """The LoRA settings of a peft model, as the model card lists them (`None` for a plain model)."""
    if not hasattr(model, "peft_config"):
        return None
    adapter = next(iter(model.peft_config.values()))
    return {
        "r": adapter.r,
        "alpha": adapter.lora_alpha,
        "dropout": adapter.lora_dropout,
        "target modules": ", ".join(sorted(adapter.target_modules)),
    }


def build_model_card(
    model: Any,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    model_description: str | None = None,
    base_model: str | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
    datasets: list[dict[str, str]] | None = None,
    training: dict[str, Any] | None = None,
    lora: dict[str, Any] | None = None,
    eval_results: list[dict[str, Any]] | None = None,
    samples: list[dict[str, str]] | None = None,
    limitations: str | None = None,
    tags: list[str] | None = None,
) -> ModelCard:
    """Render a model card for a masked diffusion model (or a peft model on one).

    Args:
        model: the model; its config, size, generation config and (for a peft model) LoRA settings are read from it.
        repo_id (`str`, *optional*): the Hub id shown in the usage example (`""`: none, for the embedded model).
        datasets (`list[dict]`, *optional*): `{"name", "license", "use"}` per dataset.
        training (`dict`, *optional*): training settings to list (stage, steps, learning rate, wall time, ...).
        lora (`dict`, *optional*): LoRA settings; read from a peft model when not given.
        eval_results (`list[dict]`, *optional*): `{"task", "metric", "value"}` rows.
        samples (`list[dict]`, *optional*): `{"prompt", "output"}` sample generations.

    Returns:
        A `huggingface_hub.ModelCard` (save it with `.save(path)`, push it with `.push_to_hub(repo_id)`).
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = inner.config
    if lora is None:
        lora = lora_settings(model)
    generation = inner.generation_config
    if repo_id is None:  # "" means the package's default model: the usage example then names no model
        repo_id = model_name or getattr(inner, "name_or_path", None) or "path/to/model"
    card_data = ModelCardData(
        language=language,
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        base_model=base_model,
        datasets=[item["name"] for item in datasets or [] if _HUB_ID.fullmatch(item["name"])] or None,
        tags=sorted({"masked-diffusion", "mdlm", "transformers-mdlm", *(tags or [])}),
    )
    chat = getattr(generation, "mask_token_id", None) is not None
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name or repo_id.split("/")[-1] or "model",
        repo_id=repo_id,
        model_description=model_description or f"A masked diffusion language model ({config.model_type}).",
        usage_input='[{"role": "user", "content": "..."}]' if chat else '"..."',
        architecture=f"{type(inner).__name__} ({config.model_type}, {config.num_hidden_layers} layers, hidden "
        f"{config.hidden_size})",
        parameters=f"{sum(p.numel() for p in inner.parameters()):,}",
        vocab_size=f"{config.vocab_size:,}",
        max_positions=inner.max_sequence_length() if hasattr(inner, "max_sequence_length") else "n/a",
        base_model=base_model,
        training=training or {},
        lora=lora,
        datasets=datasets or [],
        generation={key: getattr(generation, key) for key in _GENERATION_KEYS if hasattr(generation, key)},
        eval_results=eval_results or [],
        samples=samples or [],
        limitations=limitations or DEFAULT_LIMITATIONS,
    )
