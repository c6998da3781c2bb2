"""Model aliases (`"diffutron"` and friends), their recommended decoding settings, and the default model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Short names accepted wherever a model id is.
MODEL_ALIASES: dict[str, str] = {
    "diffutron": "diffutron/DiffutronLM-0.3B-Instruct",
    "diffutron-instruct": "diffutron/DiffutronLM-0.3B-Instruct",
    "diffutron-1st-stage": "diffutron/DiffutronLM-0.3B-1st-Stage",
    "diffutron-base": "diffutron/DiffutronLM-0.3B-Base",
}

#: The Diffutron authors' recommended settings (long answers), applied when a Diffutron checkpoint has no
#: `generation_config.json` of its own.
DIFFUTRON_GENERATION_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 128,
    "steps": 128,
    "block_length": 32,
    "temperature": 0.1,
    "repetition_penalty": 1.2,
    "remasking": "low_confidence",
    "stochastic_transfer": False,
    "cfg_scale": 0.0,
}

DIFFUTRON_REPOSITORIES = frozenset(MODEL_ALIASES.values())


def resolve_model_name(name: str) -> str:
    """The Hub id behind an alias (case-insensitive); any other name is returned unchanged.

    Example:

    ```python
    >>> resolve_model_name("diffutron")
    'diffutron/DiffutronLM-0.3B-Instruct'
    >>> resolve_model_name("./my-model")
    './my-model'

    ```
    """
    return MODEL_ALIASES.get(name.lower(), name) if isinstance(name, str) else name


def recommended_generation_settings(name_or_path: str | None) -> dict[str, Any]:
    """Decoding settings recommended for a known model (by Hub id or alias); empty for any other model."""
    if name_or_path is None:
        return {}
    return dict(DIFFUTRON_GENERATION_DEFAULTS) if resolve_model_name(name_or_path) in DIFFUTRON_REPOSITORIES else {}


#: Where the package's embedded model lives (installed with the package).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


def default_model_path() -> str | None:
    """The model `pipeline("masked-diffusion")` uses when none is given: the package's embedded model, if shipped."""
    return str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / "config.json").is_file() else None
