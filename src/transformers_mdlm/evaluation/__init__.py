"""Evaluating masked diffusion models: the evidence bound, CETVEL-style tasks, `mdlm eval`, and an lm-eval adapter
(`transformers_mdlm.evaluation.lm_eval_adapter`, with the optional `lm-eval` extra)."""

from __future__ import annotations

from .likelihood import CorpusBound, EvidenceBound, corpus_evidence_bound, evidence_bound, unigram_bound
from .prompt_use import PromptUse, prompt_use
from .runner import TASKS, evaluate_model
from .tasks import (
    MULTIPLE_CHOICE_TASKS,
    MultipleChoiceItem,
    MultipleChoiceTask,
    exact_match,
    f1_score,
    generic_multiple_choice_task,
    score_multiple_choice,
    score_xquad,
)

__all__ = [
    "MULTIPLE_CHOICE_TASKS",
    "TASKS",
    "CorpusBound",
    "EvidenceBound",
    "MultipleChoiceItem",
    "MultipleChoiceTask",
    "PromptUse",
    "corpus_evidence_bound",
    "evaluate_model",
    "evidence_bound",
    "exact_match",
    "f1_score",
    "generic_multiple_choice_task",
    "prompt_use",
    "score_multiple_choice",
    "score_xquad",
    "unigram_bound",
]
