"""`evaluate_model`: run a list of tasks on one model and return `mdlm eval`'s JSON document."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .likelihood import corpus_evidence_bound
from .tasks import (
    MULTIPLE_CHOICE_TASKS,
    generic_multiple_choice_task,
    load_xquad,
    score_multiple_choice,
    score_xquad,
)

TASKS = ("perplexity", "xcopa_tr", "exams_tr", "xquad_tr")


def evaluate_model(
    model: str | None = None,
    tasks: list[str] | tuple[str, ...] = ("perplexity",),
    *,
    data_dir: str | Path = "../shared/data/turkish/eval",
    split: str = "validation",
    text_file: str | Path | None = None,
    limit: int | None = None,
    num_samples: int = 32,
    seed: int = 0,
    generation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a model on `tasks`; returns `{"results": {task: {metric: value, ..., "n": count}}, "config": {...}}`.

    Tasks: `perplexity` (evidence bound of the lines of `text_file`), `xcopa_tr`, `exams_tr` (multiple choice),
    `xquad_tr` (generative QA through the pipeline), or the name of any `{name}_{split}.jsonl` in `data_dir` with
    `context`, `choices` and `label` columns.
    """
    import transformers

    from .. import register_pipeline
    from ..presets import default_model_path

    register_pipeline()
    if model is None:
        model = default_model_path()
        if model is None:
            raise ValueError("No model given and no embedded default model installed: pass `model`.")
    for task in tasks:
        if task not in TASKS and not (Path(data_dir) / f"{task}_{split}.jsonl").is_file():
            raise ValueError(
                f"Unknown task {task!r}: known tasks are {', '.join(TASKS)}, or a {task}_{split}.jsonl file in {data_dir}."
            )
    if "perplexity" in tasks and (text_file is None or not Path(text_file).is_file()):
        raise ValueError("The perplexity task reads `text_file` (one text per line); pass an existing file.")
    pipe = transformers.pipeline("masked-diffusion", model=model, dtype=torch.float32)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for task in tasks:
        start = time.perf_counter()
        if task == "perplexity":
            texts = Path(text_file).read_text(encoding="utf-8").splitlines()[:limit]
            bound = corpus_evidence_bound(pipe.model, pipe.tokenizer, texts, num_samples=num_samples, seed=seed)
            results[task] = bound.as_dict()
        elif task == "xquad_tr":
            rows = load_xquad(data_dir, split, limit)
            results[task] = score_xquad(pipe, rows, **(generation or {}))
        else:
            spec = MULTIPLE_CHOICE_TASKS.get(task) or generic_multiple_choice_task(task)
            items = spec.load(data_dir, split, limit)
            results[task] = score_multiple_choice(
                pipe.model, pipe.tokenizer, items, num_samples=num_samples, seed=seed
            )
        timings[task] = round(time.perf_counter() - start, 2)
    return {
        "results": results,
        "config": {
            "model": str(model),
            "tasks": list(tasks),
            "split": split,
            "data_dir": str(data_dir),
            "text_file": str(text_file) if text_file else None,
            "limit": limit,
            "num_samples": num_samples,
            "seed": seed,
            "generation": generation or {},
            "wall_seconds": timings,
        },
    }
