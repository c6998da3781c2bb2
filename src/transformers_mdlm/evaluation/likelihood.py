"""The MDLM evidence bound: a Monte-Carlo upper bound on a text's negative log-likelihood, with its standard error.

For a sequence of `L` scored tokens and the linear schedule, the continuous-time bound is

    -log p(x) <= E_{t ~ U(0, 1)} [ (1/t) * sum_{i masked at t} -log p(x_i | x_t) ].

Integrating `t` out for each number `k` of masked tokens gives an equal, better-behaved form (its weight is at most
`L`, where `1/t` is unbounded):

    -log p(x) <= sum_{k=1..L} (1/k) E_{|S| = k} [ sum_{i in S} -log p(x_i | x with S masked) ]
              = E_{k ~ U{1..L}, S ~ U(k-subsets)} [ (L/k) * sum_{i in S} -log p(x_i | x with S masked) ],

the estimator LLaDA and MDLM use for likelihoods. Each draw is unbiased; draws are stratified over `k` (draw `j` of `K`
takes `k` from the `j`-th `K`-quantile of `1..L`), which lowers the variance and keeps the estimate unbiased. The
seed makes every estimate reproducible: each text's draws come from the seed and the text's own tokens, so a text
scores the same wherever it sits in a corpus, and different texts (the choices of a multiple-choice item among them)
draw independently. A bound that is not finite (a model whose logits hold NaN or inf) raises instead of being
returned.

With a `context`, only the continuation is scored and masked; the context stays visible: a bound on
`-log p(continuation | context)`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..onednn_linear import emulated_bfloat16_mode
from ..validation import check_int, check_texts, check_token_ids


@dataclass
class EvidenceBound:
    """The bound for one sequence.

    Attributes:
        nats: estimated upper bound on the negative log-likelihood of the scored tokens, in nats.
        standard_error: standard error of `nats` over the Monte-Carlo draws.
        num_tokens: number of scored tokens.
        num_samples: Monte-Carlo draws used.
    """

    nats: float
    standard_error: float
    num_tokens: int
    num_samples: int

    @property
    def nats_per_token(self) -> float:
        return self.nats / self.num_tokens if self.num_tokens else 0.0


def _draw_masks(length: int, num_samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_samples` masks over `length` positions, stratified over the number masked; returns masks and `L/k`."""
    offsets = torch.rand(num_samples, generator=generator, dtype=torch.float64)
    quantiles = (torch.arange(num_samples, dtype=torch.float64) + offsets) / num_samples
    counts = (quantiles * length).floor().long().clamp(max=length - 1) + 1  # k in 1..L
    scores = torch.rand(num_samples, length, generator=generator)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    masks = ranks < counts[:, None]  # k positions chosen uniformly
    return masks, length / counts.double()


@torch.no_grad()
def evidence_bound(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    *,
    mask_token_id: int | None = None,
    context_lengths: Sequence[int] | None = None,
    num_samples: int = 32,
    seed: int = 0,
    batch_size: int = 64,
) -> list[EvidenceBound]:
    """Estimate the evidence bound of each sequence (or of its continuation after `context_lengths[i]` tokens).

    Args:
        model: a masked diffusion model (`AutoModelForMaskedDiffusion`); its `forward(..., logits_mask=...)` computes
            the output head only at the masked positions.
        sequences: token ids, without padding.
        mask_token_id (`int`, *optional*): defaults to `model.generation_config.mask_token_id`.
        context_lengths (*optional*): per sequence, how many leading tokens are context (never masked, not scored).
        num_samples (`int`): Monte-Carlo draws per sequence (stratified over the number of masked tokens).
        seed (`int`): each sequence's draws come from a generator seeded by `seed` and the sequence itself (its tokens
            and context length), so a sequence's estimate does not depend on the other sequences or their order, and
            the draws of different sequences are independent (which the corpus standard error assumes).
        batch_size (`int`): masked copies per forward pass.

    Returns:
        One [`EvidenceBound`] per sequence (0 nats for a sequence with nothing to score).
    """
    check_int("num_samples", num_samples, minimum=2)  # the standard error needs two draws
    check_int("batch_size", batch_size, minimum=1)
    check_int("seed", seed, minimum=0)
    if mask_token_id is None:
        mask_token_id = model.generation_config.mask_token_id
    if mask_token_id is None:
        raise ValueError("No mask token id: pass `mask_token_id=` or set `model.generation_config.mask_token_id`.")
    contexts = list(context_lengths) if context_lengths is not None else [0] * len(sequences)
    if len(contexts) != len(sequences):
        raise ValueError("`context_lengths` must have one entry per sequence.")
    _check_sequences(model, sequences, contexts)
    with emulated_bfloat16_mode(model):  # a bfloat16 model on a CPU without bfloat16 kernels: linears in float32
        return _evidence_bounds(model, sequences, contexts, mask_token_id, num_samples, seed, batch_size)


def _evidence_bounds(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    contexts: list[int],
    mask_token_id: int,
    num_samples: int,
    seed: int,
    batch_size: int,
) -> list[EvidenceBound]:
    device = next(model.parameters()).device
    results = []
    for index, (tokens, context) in enumerate(zip(sequences, contexts, strict=True)):
        tokens = torch.as_tensor(list(tokens), dtype=torch.long)
        length = len(tokens) - context
        if length <= 0:
            results.append(EvidenceBound(0.0, 0.0, 0, num_samples))
            continue
        generator = torch.Generator().manual_seed(_sequence_seed(seed, tokens, context))
        masks, weights = _draw_masks(length, num_samples, generator)
        full_masks = torch.cat([torch.zeros(num_samples, context, dtype=torch.bool), masks], dim=1)
        estimates = torch.empty(num_samples, dtype=torch.float64)
        for start in range(0, num_samples, batch_size):
            chunk = full_masks[start : start + batch_size]
            inputs = tokens.expand(len(chunk), -1).masked_fill(chunk, mask_token_id)
            logits = model(input_ids=inputs.to(device), logits_mask=chunk.to(device)).logits.float()
            targets = tokens.expand(len(chunk), -1)[chunk].to(device)
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none").double().cpu()
            rows = chunk.nonzero()[:, 0]
            per_draw = torch.zeros(len(chunk), dtype=torch.float64).index_add(0, rows, nll)
            estimates[start : start + len(chunk)] = per_draw * weights[start : start + len(chunk)]
        mean = float(estimates.mean())
        if not math.isfinite(mean):  # a NaN would otherwise rank choices (max picks the first) or enter a report
            raise ValueError(
                f"The evidence bound of `sequences[{index}]` is {mean}: the model's logits hold NaN or inf "
                "(check its weights, e.g. after training in low precision)."
            )
        error = float(estimates.std(unbiased=True) / math.sqrt(num_samples))
        results.append(EvidenceBound(mean, error, length, num_samples))
    return results


def _sequence_seed(seed: int, tokens: torch.Tensor, context: int) -> int:
    """A sequence's own seed, from `seed` and its content: draws are reproducible and do not depend on the sequence's
    place in a corpus, and different sequences get independent draws. (One seed for every sequence would share the
    stratification offsets across a corpus: the corpus estimate then moves with the seed by ~15x the standard error it
    reports, which assumes independent sequences.)"""
    digest = zlib.crc32(tokens.numpy().astype("<i8").tobytes() + context.to_bytes(4, "little"))
    return (seed * 0x9E3779B1 + digest) % (2**63 - 1)


def _check_sequences(model: torch.nn.Module, sequences: Sequence[Sequence[int]], contexts: list[int]) -> None:
    """Every sequence fits the model: token ids in its vocabulary, no longer than its positions, a valid context."""
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    limit = model.max_sequence_length() if hasattr(model, "max_sequence_length") else None
    for index, (tokens, context) in enumerate(zip(sequences, contexts, strict=True)):
        tokens = list(tokens)
        check_token_ids(f"sequences[{index}]", tokens, vocab_size)
        if limit is not None and len(tokens) > limit:
            raise ValueError(
                f"`sequences[{index}]` has {len(tokens)} tokens, more than the model's {limit} positions; score it in "
                "windows (`corpus_evidence_bound` does) or cut its context."
            )
        if isinstance(context, bool) or not isinstance(context, int) or not 0 <= context <= len(tokens):
            raise ValueError(f"`context_lengths[{index}]` must be in [0, {len(tokens)}], got {context!r}.")


@dataclass
class CorpusBound:
    """The bound summed over a corpus, per token and per character."""

    nats: float
    standard_error: float
    num_tokens: int
    num_characters: int
    num_texts: int

    @property
    def nats_per_token(self) -> float:
        return self.nats / self.num_tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def bits_per_character(self) -> float:
        return self.nats / math.log(2) / self.num_characters

    def as_dict(self) -> dict[str, float]:
        return {
            "bits_per_character": self.bits_per_character,
            "bits_per_character_stderr": self.standard_error / math.log(2) / self.num_characters,
            "bits_per_token": self.bits_per_token,
            "nats_per_token": self.nats_per_token,
            "perplexity_bound": self.perplexity,
            "tokens": self.num_tokens,
            "characters": self.num_characters,
            "n": self.num_texts,
        }


def corpus_evidence_bound(
    model: torch.nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    *,
    num_samples: int = 32,
    seed: int = 0,
    max_length: int | None = None,
    batch_size: int = 64,
) -> CorpusBound:
    """The bound of a list of texts, each tokenized without special tokens (long ones cut into windows).

    Bits per character divide by the characters of the texts, so they compare across tokenizers; a text longer than
    `max_length` tokens (default: the model's positions) is scored window by window, which can only loosen the bound.
    """
    check_int("max_length", max_length, minimum=1, optional=True)  # checked before the texts are tokenized
    texts = [text for text in check_texts("texts", texts) if text.strip()]
    if not texts:
        raise ValueError("No non-empty text to score.")
    if max_length is None:
        max_length = model.max_sequence_length() if hasattr(model, "max_sequence_length") else None
        max_length = max_length or 512
    sequences = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        sequences.extend(ids[i : i + max_length] for i in range(0, len(ids), max_length))
    bounds = evidence_bound(
        model, sequences, mask_token_id=tokenizer.mask_token_id, num_samples=num_samples, seed=seed,
        batch_size=batch_size,
    )  # fmt: skip
    return CorpusBound(
        nats=sum(b.nats for b in bounds),
        standard_error=math.sqrt(sum(b.standard_error**2 for b in bounds)),
        num_tokens=sum(b.num_tokens for b in bounds),
        num_characters=sum(len(text) for text in texts),
        num_texts=len(texts),
    )


def unigram_bound(tokenizer: object, train_texts: Sequence[str], texts: Sequence[str]) -> CorpusBound:
    """A unigram model of the same tokenizer (add-one smoothed counts on `train_texts`): the floor to beat."""
    train_texts = check_texts("train_texts", train_texts)
    texts = [text for text in check_texts("texts", texts) if text.strip()]
    if not any(text.strip() for text in train_texts):
        raise ValueError("`train_texts` holds no non-empty text to count.")
    if not texts:
        raise ValueError("`texts` holds no non-empty text to score.")
    vocab_size = len(tokenizer)
    counts = np.ones(vocab_size, dtype=np.float64)
    for ids in tokenizer(train_texts, add_special_tokens=False)["input_ids"]:
        np.add.at(counts, ids, 1)
    log_probs = np.log(counts / counts.sum())
    ids = [token for row in tokenizer(texts, add_special_tokens=False)["input_ids"] for token in row]
    return CorpusBound(
        nats=float(-log_probs[ids].sum()),
        standard_error=0.0,
        num_tokens=len(ids),
        num_characters=sum(len(text) for text in texts),
        num_texts=len(texts),
    )
