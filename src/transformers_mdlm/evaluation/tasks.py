"""CETVEL-style Turkish tasks: multiple choice by conditional likelihood (XCOPA-tr, EXAMS-tr, any jsonl spec) and
generative QA (XQuAD-tr, exact match and F1).

Multiple-choice items are scored as CETVEL and lm-evaluation-harness score them: each choice's continuation is scored
given the item's context, and the best score wins. For a masked diffusion model the score is minus the evidence bound
of the continuation (a lower bound on its log-likelihood, see [`evidence_bound`]); each choice draws its own masks
(from the seed and its tokens), and a score that is not finite raises. Reported: `acc` (raw score), `acc_norm` (score
per character of the choice, lm-eval's length normalisation) and `acc_per_token` (score per token).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..validation import check_int
from .jsonl import read_jsonl_lines
from .likelihood import evidence_bound


@dataclass
class MultipleChoiceItem:
    context: str
    choices: list[str]
    label: int


@dataclass
class MultipleChoiceTask:
    """A multiple-choice task read from `{name}_{split}.jsonl`; `build` turns a row into an item.

    Any jsonl with `context`, `choices` (list) and `label` (index) columns works with the default `build`; pass your
    own to map other columns.
    """

    name: str
    build: Callable[[dict[str, Any]], MultipleChoiceItem]

    def load(
        self, data_dir: str | Path, split: str = "validation", limit: int | None = None
    ) -> list[MultipleChoiceItem]:
        path = Path(data_dir) / f"{self.name}_{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"No data for task {self.name!r}: {path} does not exist.")
        items = []
        for line, row in read_jsonl_lines(path, limit):
            try:
                item = self.build(row)
            except KeyError as error:
                raise ValueError(
                    f"{path}, line {line}: the row has no {error} field (fields: {sorted(row)})."
                ) from None
            except (TypeError, ValueError, AttributeError) as error:
                raise ValueError(f"{path}, line {line}: {error}") from None
            problem = _item_problem(item)
            if problem:
                raise ValueError(f"{path}, line {line}: {problem}")
            items.append(item)
        return items


def _item_problem(item: MultipleChoiceItem) -> str | None:
    """What is wrong with an item, in words (`None` when nothing is)."""
    if not isinstance(item.context, str):
        return f"`context` must be a string, got {type(item.context).__name__}."
    if not isinstance(item.choices, list) or len(item.choices) < 2:
        return f"`choices` must be a list of at least 2 strings, got {item.choices!r}."
    if not all(isinstance(choice, str) for choice in item.choices):
        return f"`choices` must hold strings, got {item.choices!r}."
    if not all(choice.strip() for choice in item.choices):  # an empty choice would be scored on a context token
        return f"`choices` must not be empty or blank, got {item.choices!r}."
    if isinstance(item.label, bool) or not isinstance(item.label, int) or not 0 <= item.label < len(item.choices):
        return f"`label` must be an index into `choices` (0 to {len(item.choices) - 1}), got {item.label!r}."
    return None


def _label(value: Any) -> int:
    """A label as an int; a string of digits is accepted, anything else (e.g. "A") is an error naming the field."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, str))
        or (isinstance(value, str) and not value.isdigit())
    ):
        raise ValueError(f"`label` must be an integer index, got {value!r}.")
    return int(value)


def _choices(value: Any) -> list[str]:
    """A list of choices; a string (which `list()` would split into characters) is an error naming the field."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"`choices` must be a list of strings, got {type(value).__name__} {value!r}.")
    return list(value)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def _xcopa_item(row: dict[str, Any]) -> MultipleChoiceItem:
    # lm-eval's xcopa_tr template: "<premise without final period> çünkü|bu yüzden" + " <choice, lower-cased first>".
    connectors = {"cause": "çünkü", "effect": "bu yüzden"}
    if row["question"] not in connectors:  # a KeyError here would read as a missing field
        raise ValueError(f"`question` must be 'cause' or 'effect', got {row['question']!r}.")
    connector = connectors[row["question"]]
    premise = row["premise"].strip()
    premise = premise[:-1] if premise.endswith(".") else premise
    return MultipleChoiceItem(
        context=f"{premise} {connector}",
        choices=[" " + _lower_first(row["choice1"]), " " + _lower_first(row["choice2"])],
        label=_label(row["label"]),
    )


def _exams_item(row: dict[str, Any]) -> MultipleChoiceItem:
    return MultipleChoiceItem(
        context=f"Soru: {row['question'].strip()}\nCevap:",
        choices=[" " + choice.strip() for choice in _choices(row["choices"])],
        label=_label(row["label"]),
    )


def _generic_item(row: dict[str, Any]) -> MultipleChoiceItem:
    return MultipleChoiceItem(context=row["context"], choices=_choices(row["choices"]), label=_label(row["label"]))


MULTIPLE_CHOICE_TASKS: dict[str, MultipleChoiceTask] = {
    "xcopa_tr": MultipleChoiceTask("xcopa_tr", _xcopa_item),
    "exams_tr": MultipleChoiceTask("exams_tr", _exams_item),
}


def generic_multiple_choice_task(name: str) -> MultipleChoiceTask:
    """A task over `{name}_{split}.jsonl` rows holding `context`, `choices` and `label`."""
    return MultipleChoiceTask(name, _generic_item)


def score_multiple_choice(
    model: Any,
    tokenizer: Any,
    items: Sequence[MultipleChoiceItem],
    *,
    num_samples: int = 32,
    seed: int = 0,
    batch_size: int = 64,
    max_length: int | None = None,
    progress: bool = False,
    description: str = "multiple choice",
) -> dict[str, float]:
    """Accuracy of picking each item's highest-scoring choice, with lm-eval's normalisations.

    A context plus choice longer than `max_length` tokens (default: the model's positions) loses the start of its
    context (left truncation, as lm-eval does); `truncated` in the result counts the items this happened to. An item
    whose choice alone does not fit is skipped and counted in `skipped`.
    """
    if not items:
        raise ValueError("No items to score.")
    for index, item in enumerate(items):
        if not isinstance(item, MultipleChoiceItem):
            raise TypeError(
                f"`items[{index}]` must be a MultipleChoiceItem(context, choices, label), got {type(item).__name__}; "
                "`MULTIPLE_CHOICE_TASKS[name].load(data_dir)` builds them from a task's JSON lines."
            )
        problem = _item_problem(item)
        if problem:
            raise ValueError(f"`items[{index}]`: {problem}")
    check_int("num_samples", num_samples, minimum=2)
    check_int("seed", seed, minimum=0)
    check_int("max_length", max_length, minimum=1, optional=True)
    if max_length is None and hasattr(model, "max_sequence_length"):
        max_length = model.max_sequence_length()
    correct = Counter()
    truncated = skipped = 0
    for item in tqdm(items, desc=description, unit="item", disable=not progress):
        context = tokenizer(item.context, add_special_tokens=False)["input_ids"]
        sequences, lengths = [], []
        for choice in item.choices:
            full = tokenizer(item.context + choice, add_special_tokens=False)["input_ids"]
            # Score the tokens after the context (tokenizing the joined text keeps the boundary natural).
            shared = _common_prefix(context, full)
            sequences.append(full)
            lengths.append(shared)
        excess = max(len(full) for full in sequences) - max_length if max_length is not None else 0
        if excess > 0:
            if any(shared - excess < 1 for shared in lengths):
                skipped += 1
                continue
            truncated += 1
            sequences = [full[excess:] for full in sequences]
            lengths = [shared - excess for shared in lengths]
        bounds = evidence_bound(
            model, sequences, mask_token_id=tokenizer.mask_token_id, context_lengths=lengths, num_samples=num_samples,
            seed=seed, batch_size=batch_size,
        )  # fmt: skip
        scores = [-bound.nats for bound in bounds]
        # lm-eval divides by the length of the choice without its target delimiter: the leading space of these
        # choices is that delimiter (counting it favours short choices; on EXAMS it moved 19 of 393 picks).
        per_char = [score / max(len(choice.lstrip()), 1) for score, choice in zip(scores, item.choices, strict=True)]
        per_token = [-bound.nats_per_token for bound in bounds]
        for metric, values in (("acc", scores), ("acc_norm", per_char), ("acc_per_token", per_token)):
            correct[metric] += int(max(range(len(values)), key=values.__getitem__) == item.label)
    scored = len(items) - skipped
    if not scored:
        raise ValueError(f"No item fits the model's {max_length} positions: every choice alone is too long.")
    metrics = {metric: correct[metric] / scored for metric in ("acc", "acc_norm", "acc_per_token")}
    return metrics | {"n": scored, "truncated": truncated, "skipped": skipped}


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return min(length, len(b) - 1) if b else 0


# --------------------------------------------------------------------------- generative QA


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation (Turkish-aware lower-casing, no punctuation, single spaces)."""
    text = text.replace("I", "ı").replace("İ", "i").lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation) | {"’", "‘", "“", "”"})
    return re.sub(r"\s+", " ", text).strip()


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(answer) for answer in answers))


def f1_score(prediction: str, answers: Sequence[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        pred_tokens, gold_tokens = normalize_answer(pred).split(), normalize_answer(gold).split()
        common = Counter(pred_tokens) & Counter(gold_tokens)
        overlap = sum(common.values())
        if not pred_tokens or not gold_tokens:
            return float(pred_tokens == gold_tokens)
        if overlap == 0:
            return 0.0
        precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
        return 2 * precision * recall / (precision + recall)

    return max(f1(prediction, answer) for answer in answers)


def load_xquad(data_dir: str | Path, split: str = "validation", limit: int | None = None) -> list[dict[str, Any]]:
    path = Path(data_dir) / f"xquad_tr_{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"No data for task 'xquad_tr': {path} does not exist.")
    rows = []
    for line, row in read_jsonl_lines(path, limit):
        missing = [field for field in ("context", "question", "answers") if field not in row]
        if missing:
            raise ValueError(
                f"{path}, line {line}: the row has no {', '.join(missing)} field (fields: {sorted(row)})."
            )
        if not xquad_answers(row):
            raise ValueError(f"{path}, line {line}: `answers` holds no answer text, got {row['answers']!r}.")
        rows.append(row)
    return rows


def xquad_answers(row: dict[str, Any]) -> list[str]:
    """The answer texts of an XQuAD row: `{"text": [...]}` (the Hub's layout), a list of strings or of `{"text"}`."""
    answers = row["answers"]
    if isinstance(answers, dict):
        answers = answers.get("text", [])
    if isinstance(answers, str):
        return [answers]
    if not isinstance(answers, (list, tuple)):
        raise TypeError(f"`answers` must be a list or a {{'text': [...]}} dict, got {answers!r}.")
    return [a.get("text", "") if isinstance(a, dict) else str(a) for a in answers if a]


def score_xquad(
    pipe: Any, rows: Sequence[dict[str, Any]], batch_size: int = 8, progress: bool = False, **generate_kwargs: Any
) -> dict[str, float]:
    """Exact match and F1 of the pipeline's answers (one user turn: the passage, then the question).

    A passage too long for the model's positions (with the question and the answer's tokens) loses its start (left
    truncation); `truncated` counts the rows this happened to.
    """
    if not rows:
        raise ValueError("No XQuAD rows to score.")
    new_tokens = generate_kwargs.get("max_new_tokens") or pipe.model.generation_config.max_new_tokens or 0
    limit = pipe.model.max_sequence_length()
    conversations, truncated = [], 0
    for row in rows:
        conversation, cut = _fitting_conversation(pipe.tokenizer, row, None if limit is None else limit - new_tokens)
        conversations.append(conversation)
        truncated += cut
    # A generator streams through the pipeline, so the bar advances as answers come.
    outputs = pipe((c for c in conversations), batch_size=batch_size, return_full_text=False, **generate_kwargs)
    bar = tqdm(outputs, total=len(rows), desc="xquad_tr", unit="row", disable=not progress)
    predictions = [output[0]["generated_text"] for output in bar]
    em = sum(exact_match(p, xquad_answers(r)) for p, r in zip(predictions, rows, strict=True)) / len(rows)
    f1 = sum(f1_score(p, xquad_answers(r)) for p, r in zip(predictions, rows, strict=True)) / len(rows)
    return {"exact_match": em, "f1": f1, "n": len(rows), "truncated": truncated}


def _fitting_conversation(tokenizer: Any, row: dict[str, Any], budget: int | None) -> tuple[list[dict], int]:
    """The row as one user turn whose rendered prompt fits `budget` tokens, cutting the passage from the left."""
    from ..chat_templates import DIFFUTRON_CHAT_TEMPLATE

    context, question = row["context"].strip(), row["question"].strip()
    template = tokenizer.chat_template or DIFFUTRON_CHAT_TEMPLATE

    def render(passage: str) -> list[dict]:
        return [{"role": "user", "content": f"{passage}\n\nSoru: {question}"}]

    def length(conversation: list[dict]) -> int:
        text = tokenizer.apply_chat_template(conversation, chat_template=template, add_generation_prompt=True,
                                             tokenize=False)  # fmt: skip
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    conversation = render(context)
    if budget is None or length(conversation) <= budget:
        return conversation, 0
    ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    for _ in range(4):  # re-tokenizing a cut text can shift a token or two
        over = length(conversation) - budget
        if over <= 0:
            return conversation, 1
        ids = ids[over + 1 :]
        if not ids:
            break
        conversation = render(tokenizer.decode(ids, skip_special_tokens=True))
    if length(conversation) > budget:
        raise ValueError(f"The XQuAD question alone is longer than the model's positions allow ({budget} tokens).")
    return conversation, 1
