"""`benchmarks/context_reach.py`'s copy gain and attention peaks, on models whose answers are known."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import MASK, VOCAB, build_model, modernbert_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "context_reach.py"


@pytest.fixture(scope="module")
def context_reach():
    spec = importlib.util.spec_from_file_location("context_reach", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines(count: int, low: int, high: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(89)}" for _ in range(rng.randint(low, high))) for _ in range(count)]


class BagOfWords(torch.nn.Module):
    """Puts its mass on the tokens visible in the row: a copier that needs no training."""

    def forward(self, input_ids, **_):
        visible = torch.zeros(input_ids.shape[0], VOCAB)
        visible.scatter_(1, input_ids, 1.0)
        visible[:, MASK] = 0.0
        return SimpleNamespace(logits=(visible * 20.0 - 10.0)[:, None, :].expand(-1, input_ids.shape[1], -1))


class Uniform(torch.nn.Module):
    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, VOCAB))


def test_copy_gain_is_large_for_a_copier_and_zero_for_a_model_that_ignores_context(context_reach, tiny_tokenizer):
    lines = _lines(20, 8, 20)
    copier = context_reach.copy_gain(BagOfWords(), tiny_tokenizer, lines, MASK)
    assert copier["lines"] == 20 and copier["masked_tokens"] > 50
    # After itself every masked token is visible in the first copy (only the second copy is masked): loss about
    # log(number of distinct visible tokens); after another line most are not, and cost about 20 nats.
    assert copier["loss_nats"]["after itself"] < 3.0
    assert copier["copy_gain_nats"] > 10.0
    blind = context_reach.copy_gain(Uniform(), tiny_tokenizer, lines, MASK)
    assert blind["copy_gain_nats"] == 0.0
    assert blind["loss_nats"]["after itself"] == pytest.approx(float(torch.log(torch.tensor(float(VOCAB)))), abs=1e-3)


def test_attention_peaks_of_uniform_attention_are_one_over_the_length(context_reach, tiny_tokenizer):
    model = build_model(modernbert_config(attn_implementation="eager"))
    hidden = model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.attn.Wqkv.weight[: 2 * hidden] = 0.0  # queries and keys zero: every score equal
    lines = _lines(6, 16, 30, seed=1)
    result = context_reach.attention_peaks(model, tiny_tokenizer, lines, MASK)
    peaks = result["mean_max_attention_by_layer"]
    assert len(peaks) == model.config.num_hidden_layers
    assert all(len(layer) == model.config.num_attention_heads for layer in peaks)
    expected = sum(1 / len(line.split()) for line in lines) / len(lines)
    for index, layer in enumerate(peaks):
        if model.config.layer_types[index] == "full_attention":
            assert layer == pytest.approx([expected] * len(layer), abs=0.006)  # rounded to 2 places
        else:  # a window of 8 (4 each way): at least 1/9 per key
            assert all(1 / 9 - 0.006 <= value <= 1.0 for value in layer)
