"""Model cards for masked diffusion models, rendered from the package's template through `huggingface_hub.ModelCard`."""

from __future__ import annotations

import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # only Hub dataset ids go into the card's metadata
_HUB_SEGMENTS = re.compile(r"[\w.-]+(/[\w.-]+)?")  # an explicit `hub_id` may be a canonical name ("wikitext")
_DATA_FILE_SUFFIXES = {".json", ".jsonl", ".txt", ".csv", ".tsv", ".parquet", ".arrow", ".gz", ".zip", ".bz2"}

TEMPLATE_PATH = files(__package__).joinpath("templates", "model_card.md")

_GENERATION_KEYS = (
    "max_new_tokens", "min_new_tokens", "steps", "block_length", "do_sample", "temperature", "top_k", "top_p",
    "remasking", "schedule", "stochastic_transfer", "confidence_threshold", "repetition_penalty",
    "no_repeat_ngram_size", "suppress_tokens", "cfg_scale", "stop_on_eos", "stop_strings", "kv_cache", "mask_token_id",
)  # fmt: skip

#: The card's `library_name`: the checkpoint is a plain masked-LM one, but generating text needs this package, so the
#: Hub must not offer transformers' text-generation snippet or widget (they would fail); see the docs' Hub section.
LIBRARY_NAME = "transformers-mdlm"

#: Keyword arguments of `build_model_card` besides the model (what `create_model_card` and `push_to_hub` pass on).
CARD_ARGUMENTS = (
    "repo_id", "model_name", "model_description", "base_model", "language", "license", "datasets", "training",
    "lora", "eval_results", "samples", "limitations", "tags", "generation_notes",
)  # fmt: skip

DEFAULT_LIMITATIONS = (
    "A masked diffusion model can produce fluent-looking text that is wrong; check facts before relying on them. Its "
    "quality depends on the number of denoising steps: fewer steps are faster and worse."
)


def lora_settings(model: Any) -> dict[str, Any] | None:
    """The LoRA settings of a peft model, as the model card lists them (`None` for a plain model)."""
    if not hasattr(model, "peft_config"):
        return None
    active = getattr(model, "active_adapter", None)  # the adapter in use, not the first one loaded
    adapter = model.peft_config.get(active) if isinstance(active, str) else None
    adapter = adapter or next(iter(model.peft_config.values()))
    targets = adapter.target_modules
    return {
        "r": adapter.r,
        "alpha": adapter.lora_alpha,
        "dropout": adapter.lora_dropout,
        # peft takes a list of names or one regular expression (a string), which must not be split into characters
        "target modules": targets if isinstance(targets, str) else ", ".join(sorted(targets)),
    }


def _dataset_entries(datasets: Any) -> list[dict[str, str]]:
    """`datasets` as `{"name", "license", "use"}` dicts: accepts a name, a list of names, or a list of dicts."""
    if datasets is None:
        return []
    if isinstance(datasets, str):
        datasets = [datasets]
    if not isinstance(datasets, (list, tuple)):
        raise TypeError(f"`datasets` must be a name or a list of names or dicts, got {type(datasets).__name__}.")
    entries = []
    for index, item in enumerate(datasets):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise TypeError(f"`datasets[{index}]` must be a name or a dict with a string 'name', got {item!r}.")
        entries.append(item)
    return entries


def _tag_list(tags: Any) -> list[str]:
    """`tags` as a list: one tag as a string (as transformers' `push_to_hub(tags=...)` takes it) or a list of them."""
    if tags is None:
        return []
    if isinstance(tags, str):
        return [tags]
    if not isinstance(tags, (list, tuple, set)) or not all(isinstance(tag, str) for tag in tags):
        raise TypeError(f"`tags` must be a string or a list of strings, got {tags!r}.")
    return list(tags)


def _hub_ids(datasets: list[dict[str, str]]) -> list[str]:
    """The Hub ids among the datasets, for the metadata: an entry's `hub_id` (`"wikitext"` too), or its name when that
    has the `owner/name` form and is not a local path (`data/train.jsonl` is a file, not a Hub dataset)."""
    ids = []
    for item in datasets:
        if "evaluation only" in str(item.get("use", "")).lower():
            continue  # the metadata's `datasets` are the training data, as the Hub reads them
        if item.get("hub_id"):
            if _HUB_SEGMENTS.fullmatch(item["hub_id"]):
                ids.append(item["hub_id"])
        elif _HUB_ID.fullmatch(item["name"]) and not _looks_like_a_path(item["name"]):
            ids.append(item["name"])
    return list(dict.fromkeys(ids))


def _looks_like_a_path(name: str) -> bool:
    return os.path.exists(name) or name.startswith(".") or Path(name).suffix.lower() in _DATA_FILE_SUFFIXES


def _eval_results(rows: Any) -> list[EvalResult]:
    """`{"task", "metric", "value"}` rows (optionally `dataset`, `task_type`, `split`) as huggingface_hub results."""
    results = []
    for index, row in enumerate(rows or []):
        missing = [key for key in ("task", "metric", "value") if key not in row] if isinstance(row, dict) else ["row"]
        if missing:
            raise ValueError(f"`eval_results[{index}]` needs 'task', 'metric' and 'value'; missing {missing}.")
        results.append(
            EvalResult(
                task_type=row.get("task_type", "text-generation"),
                dataset_type=row.get("dataset", row["task"]),
                dataset_name=row["task"],
                dataset_split=row.get("split"),
                metric_type=row["metric"],
                metric_value=row["value"],
            )
        )
    return results


def build_model_card(
    model: Any,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    model_description: str | None = None,
    base_model: str | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
    datasets: str | list[str] | list[dict[str, str]] | None = None,
    training: dict[str, Any] | None = None,
    lora: dict[str, Any] | None = None,
    eval_results: list[dict[str, Any]] | None = None,
    samples: list[dict[str, str]] | None = None,
    limitations: str | None = None,
    tags: list[str] | None = None,
    generation_notes: str | None = None,
) -> ModelCard:
    """Render a model card for a masked diffusion model (or a peft model on one).

    Args:
        model: the model; its config, size, generation config and (for a peft model) LoRA settings are read from it.
        repo_id (`str`, *optional*): the Hub id shown in the usage example (`""`: none, for the embedded model).
        datasets (`str`, `list[str]` or `list[dict]`, *optional*): dataset names, or `{"name", "license", "use",
            "hub_id"}` per dataset; Hub ids among them (or their `hub_id`) go into the metadata, except those whose
            `use` says "evaluation only" (the Hub reads the metadata's `datasets` as training data).
        training (`dict`, *optional*): training settings to list (stage, steps, learning rate, wall time, ...).
        lora (`dict`, *optional*): LoRA settings; read from a peft model when not given.
        eval_results (`list[dict]`, *optional*): `{"task", "metric", "value"}` rows (optionally `dataset`,
            `task_type`, `split`); written as the card's `model-index` through `huggingface_hub.EvalResult`.
        samples (`list[dict]`, *optional*): `{"prompt", "output"}` sample generations.
        generation_notes (`str`, *optional*): Markdown shown under the generation defaults (how they were chosen).

    Returns:
        A `huggingface_hub.ModelCard` (save it with `.save(path)`, push it with `.push_to_hub(repo_id)`).
    """
    datasets = _dataset_entries(datasets)
    results = _eval_results(eval_results)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = inner.config
    if lora is None:
        lora = lora_settings(model)
    generation = inner.generation_config
    if repo_id is None:  # "" means the package's default model: the usage example then names no model
        repo_id = model_name or getattr(inner, "name_or_path", None) or "path/to/model"
    name = model_name or repo_id.split("/")[-1] or "model"
    card_data = ModelCardData(
        language=language,
        license=license,
        library_name=LIBRARY_NAME,
        pipeline_tag="text-generation",
        base_model=base_model,
        datasets=_hub_ids(datasets) or None,
        tags=sorted({"masked-diffusion", "mdlm", "transformers-mdlm", *_tag_list(tags)}),
        model_name=name if results else None,
        eval_results=results or None,
    )
    chat = getattr(generation, "mask_token_id", None) is not None
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=name,
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
        datasets=datasets,
        generation={key: getattr(generation, key) for key in _GENERATION_KEYS if hasattr(generation, key)},
        eval_results=eval_results or [],
        generation_notes=generation_notes,
        samples=samples or [],
        limitations=limitations or DEFAULT_LIMITATIONS,
    )
