"""How much a model's answers depend on their prompt: the evidence bound of each reply given its own prompt, against
given another conversation's prompt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset

from ..training.data import format_instruction_dataset, instruction_messages
from ..validation import check_int
from .likelihood import evidence_bound


@dataclass(frozen=True)
class PromptUse:
    """Replies scored under their own prompts and under the next conversation's prompts (nats per reply token)."""

    own_nats_per_token: float
    other_nats_per_token: float
    num_tokens: int
    num_conversations: int

    @property
    def gain(self) -> float:
        """Nats per reply token that the own prompt saves: about 0 for a model that ignores its prompt. Both terms are
        Monte Carlo estimates of upper bounds, so the gain is an estimate (it can come out slightly negative)."""
        return self.other_nats_per_token - self.own_nats_per_token

    def as_dict(self) -> dict[str, float | int]:
        return {"own_nats_per_token": self.own_nats_per_token, "other_nats_per_token": self.other_nats_per_token,
                "gain_nats_per_token": self.gain, "num_tokens": self.num_tokens,
                "num_conversations": self.num_conversations}  # fmt: skip


def prompt_use(
    model: torch.nn.Module,
    tokenizer: Any,
    conversations: Sequence[dict[str, Any]],
    *,
    chat_template: str | None = None,
    num_samples: int = 8,
    seed: int = 0,
) -> PromptUse:
    """Measure whether a chat model's replies depend on their prompts.

    Each reply is scored (the evidence bound of [`evidence_bound`], reply tokens only) after its own prompt, then after
    the prompt of the next conversation whose prompt differs (cyclically; rows sharing a prompt are skipped, so a reply
    never meets its own prompt as the "other"). Rows are formatted as
    instruction tuning formats them ([`format_instruction_dataset`], without answer padding). A model that answers
    the question finds its replies likelier after their own prompts; one that ignores the prompt scores both alike.
    Use conversations whose replies depend on the prompt (fill in a blank, continue a sentence) and that the model
    was not trained on.

    Args:
        model: a masked diffusion model (`AutoModelForMaskedDiffusion`).
        tokenizer: its tokenizer, with a chat template (else `chat_template`, else Diffutron's).
        conversations: rows of `messages` (ending with the assistant's reply) or `instruction`/`input`/`output`; at
            least two, with different prompts.
        num_samples (`int`): Monte Carlo draws per reply and prompt.
        seed (`int`): seed of the draws.

    Returns:
        A [`PromptUse`]: nats per reply token under own and other prompts, and their difference (`gain`).

    Example:

    ```python
    >>> from transformers import AutoTokenizer
    >>> from transformers_mdlm import AutoModelForMaskedDiffusion
    >>> from transformers_mdlm.evaluation import prompt_use
    >>> model = AutoModelForMaskedDiffusion.from_pretrained("diffutron")  # doctest: +SKIP
    >>> tokenizer = AutoTokenizer.from_pretrained("diffutron")  # doctest: +SKIP
    >>> rows = [{"instruction": "Boşluğu doldurun.", "input": "Kedi ___ uyudu.", "output": "Kedi bahçede uyudu."},
    ...         {"instruction": "Boşluğu doldurun.", "input": "Ali ___ gitti.", "output": "Ali okula gitti."}]
    >>> prompt_use(model, tokenizer, rows).gain  # doctest: +SKIP
    ```
    """
    check_int("num_samples", num_samples, minimum=2)  # checked before any row is formatted or scored
    check_int("seed", seed, minimum=0)
    for index, row in enumerate(conversations):
        if not isinstance(row, dict) or not (
            row.get("messages") is not None or ("instruction" in row and "output" in row)
        ):
            found = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(
                f"`conversations[{index}]` must be a dict with `messages`, or with `instruction` (optional `input`) "
                f"and `output`; got {found}."
            )
    rows = [{"messages": instruction_messages(row)} for row in conversations]
    if len(rows) < 2:
        raise ValueError(
            f"`conversations` needs at least two rows (each reply meets another's prompt), got {len(rows)}."
        )
    for index, row in enumerate(rows):
        if len(row["messages"]) < 2 or row["messages"][-1]["role"] != "assistant":
            raise ValueError(f"`conversations[{index}]` must end with the assistant's reply after a prompt.")
    prompts = [row["messages"][:-1] for row in rows]
    if all(prompt == prompts[0] for prompt in prompts):
        raise ValueError("Every conversation has the same prompt: there is no other prompt to compare with.")
    shifted = [
        {"messages": prompts[_other_prompt(prompts, index)] + row["messages"][-1:]} for index, row in enumerate(rows)
    ]
    totals = []
    for batch in (rows, shifted):
        formatted = format_instruction_dataset(Dataset.from_list(batch), tokenizer, chat_template=chat_template)
        bounds = evidence_bound(model, formatted["input_ids"], context_lengths=formatted["prompt_length"],
                                num_samples=num_samples, seed=seed)  # fmt: skip
        totals.append((sum(bound.nats for bound in bounds), sum(bound.num_tokens for bound in bounds)))
    (own, tokens), (other, _) = totals
    return PromptUse(own / max(tokens, 1), other / max(tokens, 1), tokens, len(rows))


def _other_prompt(prompts: list[Any], index: int) -> int:
    """The next row (cyclically) whose prompt differs from row `index`'s: a plain shift would pair a reply with its own
    prompt wherever two neighbouring rows share one, and the gain would then depend on the rows' order."""
    count = len(prompts)
    return next(
        (index + step) % count for step in range(1, count) if prompts[(index + step) % count] != prompts[index]
    )


__all__ = ["PromptUse", "prompt_use"]
