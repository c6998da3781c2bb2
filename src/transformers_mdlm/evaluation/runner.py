"""`evaluate_model`: run a list of tasks on one model and return `mdlm eval`'s JSON document."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..file_utils import atomic_write_text
from ..validation import check_int
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
    output: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a model on `tasks`; returns `{"results": {task: {metric: value, ..., "n": count}}, "config": {...}}`.

    Tasks: `perplexity` (evidence bound of the lines of `text_file`), `xcopa_tr`, `exams_tr` (multiple choice),
    `xquad_tr` (generative QA through the pipeline), or the name of any `{name}_{split}.jsonl` in `data_dir` with
    `context`, `choices` and `label` columns. Inputs longer than the model's positions lose the start of their context
    (counted as `truncated`). Every argument is checked before the model loads.

    A task that fails does not stop the others: its entry is `{"error": "..."}` and it is listed in `failed`. With
    `output`, the document is (re)written atomically after every task, so finished results survive an interruption.
    """
    import transformers

    from .. import register_pipeline
    from ..presets import default_model_path

    register_pipeline()
    tasks = _check_arguments(tasks, limit, num_samples, output)
    check_int("seed", seed, minimum=0)
    if model is None:
        model = default_model_path()
        if model is None:
            raise ValueError("No model given and no embedded default model installed: pass `model`.")
    for task in tasks:  # every task's file, the built-in ones' too, before the model loads (a Hub model takes minutes)
        path = Path(data_dir) / f"{task}_{split}.jsonl"
        if task == "perplexity" or path.is_file():
            continue
        if task not in TASKS:
            raise ValueError(
                f"Unknown task {task!r}: known tasks are {', '.join(TASKS)}, or a {task}_{split}.jsonl file in {data_dir}."
            )
        raise FileNotFoundError(f"Task {task!r} reads {path}, which does not exist: check `data_dir` and `split`.")
    if "perplexity" in tasks and (text_file is None or not Path(text_file).is_file()):
        raise ValueError("The perplexity task reads `text_file` (one text per line); pass an existing file.")
    pipe = transformers.pipeline("masked-diffusion", model=model, dtype=torch.float32)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    failed: list[str] = []
    report = {"results": results, "failed": failed}
    for task in tasks:
        start = time.perf_counter()
        try:
            results[task] = _run_task(pipe, task, data_dir, split, text_file, limit, num_samples, seed, generation,
                                      progress)  # fmt: skip
        except (ValueError, TypeError, KeyError, OSError, RuntimeError) as error:
            results[task] = {"error": f"{type(error).__name__}: {error}"}
            failed.append(task)
        timings[task] = round(time.perf_counter() - start, 2)
        report["config"] = _config(model, tasks, split, data_dir, text_file, limit, num_samples, seed, generation,
                                   timings)  # fmt: skip
        if output is not None:
            atomic_write_text(output, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    return report


def _run_task(
    pipe: Any,
    task: str,
    data_dir: str | Path,
    split: str,
    text_file: str | Path | None,
    limit: int | None,
    num_samples: int,
    seed: int,
    generation: dict[str, Any] | None,
    progress: bool,
) -> dict[str, Any]:
    if task == "perplexity":
        texts = [line for line in Path(text_file).read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
        bound = corpus_evidence_bound(pipe.model, pipe.tokenizer, texts, num_samples=num_samples, seed=seed)
        return bound.as_dict()
    if task == "xquad_tr":
        return score_xquad(pipe, load_xquad(data_dir, split, limit), progress=progress, **(generation or {}))
    spec = MULTIPLE_CHOICE_TASKS.get(task) or generic_multiple_choice_task(task)
    items = spec.load(data_dir, split, limit)
    return score_multiple_choice(pipe.model, pipe.tokenizer, items, num_samples=num_samples, seed=seed,
                                 progress=progress, description=task)  # fmt: skip


def _check_arguments(tasks: Any, limit: Any, num_samples: Any, output: Any) -> list[str]:
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    for task in tasks:
        if not isinstance(task, str):
            raise TypeError(f"`tasks` must hold task names (strings), got {task!r}.")
    tasks = [task.strip() for task in tasks if task.strip()]
    if not tasks:
        raise ValueError(f"`tasks` names no task; choose from {', '.join(TASKS)} or a jsonl task name.")
    check_int("limit", limit, minimum=1, optional=True)
    check_int("num_samples", num_samples, minimum=2)  # the evidence bound's standard error needs two draws
    if output is not None:
        if Path(output).is_dir():
            raise IsADirectoryError(f"`output` {output} is a folder; pass a file path for the JSON report.")
        folder = Path(output).resolve().parent
        if not folder.is_dir():
            raise FileNotFoundError(f"`output`: the folder {folder} does not exist.")
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"`output`: the folder {folder} is not writable.")
    return tasks


def _config(
    model: Any,
    tasks: list[str],
    split: str,
    data_dir: str | Path,
    text_file: str | Path | None,
    limit: int | None,
    num_samples: int,
    seed: int,
    generation: dict[str, Any] | None,
    timings: dict[str, float],
) -> dict[str, Any]:
    return {
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
        "long_inputs": "the start of the context is cut to fit the model's positions; counted as `truncated`",
    }
