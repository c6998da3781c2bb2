"""Quality floors of the embedded model, on prompts it was not tuned on.

The floors are set at or under what model v8 reaches (measured values in the comments) and above model v6 (bound
0.764x the unigram model's, 8 of 12 answers meeting the chat criteria), which fails two of them, as does v3 (0.785x, 5
of 12); model v2 (0.870x, 3 of 12, 75% corpus words, 5 of 6 plain completions looping) fails four and the first
embedded model every test (all its chat answers opened with an exam-option letter). The bound's floor is issue 14's
goal (<= 0.75x); the criteria's is below it (every answer): raise it with the model. The prompts are the model card's
(`examples/evaluate_embedded_model.py`), written before the model was trained and never used to tune its decoding
(that used `examples/tune_embedded_decoding.py`'s own prompts).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from transformers_mdlm.evaluation import corpus_evidence_bound, unigram_bound
from transformers_mdlm.evaluation.text_quality import check_answer, corpus_vocabulary, has_loop
from transformers_mdlm.presets import default_model_path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "turkish"
needs_corpus = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/turkish is not present on this machine")


def _card_prompts() -> tuple[list[str], list[str]]:
    spec = importlib.util.spec_from_file_location(
        "evaluate_embedded_model", ROOT / "examples" / "evaluate_embedded_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "examples"))  # as when the script runs: it imports `embedded_model_data` beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return module.CARD_PROMPTS, module.COMPLETION_PROMPTS


@pytest.fixture(scope="module")
def answers() -> dict[str, list[str]]:
    chat_prompts, completion_prompts = _card_prompts()
    pipe = pipeline("masked-diffusion", model=default_model_path(), dtype=torch.float32)
    chats = [[{"role": "user", "content": prompt}] for prompt in chat_prompts]
    replies = [out[0]["generated_text"].strip() for out in pipe(chats, return_full_text=False, batch_size=12)]
    completions = [out[0]["generated_text"] for out in pipe(completion_prompts, return_full_text=False, batch_size=6)]
    return {"chat": replies, "completion": completions}


def test_no_chat_answer_opens_with_an_option_letter_or_loops(answers):
    checks = [check_answer(reply) for reply in answers["chat"]]
    assert not any(check.opens_with_option_letter for check in checks), answers["chat"]  # v1: 12 of 12
    # v8, v6, v3: 0 of 12 (v3: 1 without the n-gram ban), v2: 1
    assert sum(has_loop(reply) for reply in answers["chat"]) <= 1, answers["chat"]


def test_plain_completions_do_not_loop(answers):
    # v8 (no_repeat_ngram_size=3): 0 of 6, 1 without the ban; v6 and v3 (=2): 0 of 6; v3 without the ban and v2: 5 of 6.
    assert sum(has_loop(text) for text in answers["completion"]) <= 1, answers["completion"]


@needs_corpus
def test_some_chat_answers_meet_every_criterion(answers):
    vocabulary = corpus_vocabulary((SHARED / "corpus" / "train.txt").read_text(encoding="utf-8").splitlines())
    checks = [check_answer(reply, vocabulary) for reply in answers["chat"]]
    # v8: 11 of 12; v6: 8; v3: 5; v2: 3
    assert sum(check.passes for check in checks) >= 10, [c.problems() for c in checks]
    assert sum(check.known_word_share for check in checks) / len(checks) >= 0.90  # v8: 92%, v6: 97%, v3: 94%, v2: 75%


@needs_corpus
def test_the_bound_on_validation_beats_the_unigram_model():
    from transformers import AutoTokenizer

    from transformers_mdlm import AutoModelForMaskedDiffusion

    path = default_model_path()
    model = AutoModelForMaskedDiffusion.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    validation = (SHARED / "corpus" / "validation.txt").read_text(encoding="utf-8").splitlines()
    train = (SHARED / "corpus" / "train.txt").read_text(encoding="utf-8").splitlines()
    bound = corpus_evidence_bound(model, tokenizer, validation, num_samples=8, seed=0)
    unigram = unigram_bound(tokenizer, train, validation)
    assert (
        bound.bits_per_character / unigram.bits_per_character <= 0.75
    )  # v8: 0.7435, v6: 0.764, v3: 0.785, v2: 0.870 (8 samples)
