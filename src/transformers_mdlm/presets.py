"""Presets and aliases: short model names, the decoding settings recommended for known models, the default model.

The generic [`MaskedDiffusionGenerationConfig`] carries plain masked diffusion defaults. A model's own settings live
in its `generation_config.json`; Diffutron's published checkpoints have none, so loading one applies
[`GENERATION_PRESETS`]`["diffutron"]`, its authors' recommendation. The embedded model writes its tuned settings into
its own `generation_config.json`.
"""

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

DIFFUTRON_REPOSITORIES = frozenset(MODEL_ALIASES.values())

#: Named sets of generation settings.
#:
#: - `"diffutron"`: the Diffutron authors' recommendation for long answers (blocks of 32, temperature 0.1, their
#:   repetition penalty 1.2), with its end of answer `[/Answer]` as a stop string; applied to Diffutron checkpoints
#:   that have no `generation_config.json`.
#: - `"diffutron-sampler"`: the defaults of the authors' sampling function (128 tokens in 128 steps, one block of
#:   128, greedy, penalty 1.2): pass these to get their tokens where their script leaves a setting out.
GENERATION_PRESETS: dict[str, dict[str, Any]] = {
    "diffutron": {
        "max_new_tokens": 128,
        "steps": 128,
        "block_length": 32,
        "temperature": 0.1,
        "repetition_penalty": 1.2,
        "remasking": "low_confidence",
        "stochastic_transfer": False,
        "cfg_scale": 0.0,
        "stop_strings": ["[/Answer]"],
    },
    "diffutron-sampler": {
        "max_new_tokens": 128,
        "steps": 128,
        "block_length": 128,
        "temperature": 0.0,
        "repetition_penalty": 1.2,
        "remasking": "low_confidence",
        "cfg_scale": 0.0,
    },
}


#: The alias of the package's embedded model: adapters trained on it record this name, not a machine path.
EMBEDDED_MODEL_ALIAS = "turkish-mdlm-embedded"


def resolve_model_name(name: str) -> str:
    """The Hub id behind an alias (case-insensitive; the embedded model's alias gives its folder); any other name is
    returned unchanged.

    Example:

    ```python
    >>> resolve_model_name("diffutron")
    'diffutron/DiffutronLM-0.3B-Instruct'
    >>> resolve_model_name("./my-model")
    './my-model'

    ```
    """
    if not isinstance(name, str):
        return name
    if name.lower() == EMBEDDED_MODEL_ALIAS and default_model_path() is not None:
        return default_model_path()
    return MODEL_ALIASES.get(name.lower(), name)


def check_model_reference(name: str) -> None:
    """Refuse a name that is meant as a local path (absolute, or starting with `.` or `~`) but does not exist, with a
    `FileNotFoundError` naming it, instead of the Hub's "Repo id must be in the form ..." for a typo in a path."""
    if not isinstance(name, str) or name.lower() in MODEL_ALIASES or name.lower() == EMBEDDED_MODEL_ALIAS:
        return
    looks_local = name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or Path(name).drive != ""
    if looks_local and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"No model folder at {name!r}: the path does not exist.")


def portable_model_name(name_or_path: str | None) -> str | None:
    """The name to record for a base model: the embedded model's alias instead of its folder; others unchanged."""
    if name_or_path is None or default_model_path() is None:
        return name_or_path
    try:
        same = Path(name_or_path).resolve() == DEFAULT_MODEL_DIR
    except (OSError, ValueError):
        return name_or_path
    return EMBEDDED_MODEL_ALIAS if same else name_or_path


def generation_preset(name: str) -> dict[str, Any]:
    """A copy of the named preset of [`GENERATION_PRESETS`].

    Example:

    ```python
    >>> generation_preset("diffutron")["block_length"]
    32
    >>> generation_preset("llada")
    Traceback (most recent call last):
    ...
    ValueError: Unknown generation preset 'llada'; known presets: 'diffutron', 'diffutron-sampler'.

    ```
    """
    if name not in GENERATION_PRESETS:
        known = ", ".join(repr(key) for key in GENERATION_PRESETS)
        raise ValueError(f"Unknown generation preset {name!r}; known presets: {known}.")
    return dict(GENERATION_PRESETS[name])


def preset_for_model(name_or_path: str | None) -> dict[str, Any]:
    """Decoding settings recommended for a known model (by Hub id or alias); empty for any other model."""
    if name_or_path is None or resolve_model_name(str(name_or_path)) not in DIFFUTRON_REPOSITORIES:
        return {}
    return generation_preset("diffutron")


#: Where the package's embedded model lives (installed with the package).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


def default_model_path() -> str | None:
    """The model `pipeline("masked-diffusion")` uses when none is given: the package's embedded model, if shipped."""
    return str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / "config.json").is_file() else None


__all__ = [
    "DEFAULT_MODEL_DIR",
    "EMBEDDED_MODEL_ALIAS",
    "GENERATION_PRESETS",
    "MODEL_ALIASES",
    "check_model_reference",
    "default_model_path",
    "generation_preset",
    "portable_model_name",
    "preset_for_model",
    "resolve_model_name",
]
