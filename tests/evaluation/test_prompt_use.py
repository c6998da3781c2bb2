"""`prompt_use`: replies scored after their own prompts against after another conversation's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conftest import MASK, VOCAB, build_model, make_tiny_tokenizer, modernbert_config, small_model
from transformers_mdlm.evaluation import prompt_use


class VisibleTokensModel(torch.nn.Module):
    """Predicts, at every masked position, the tokens visible in its row (a model that reads its whole input)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(4.0))
        self.generation_config = SimpleNamespace(mask_token_id=MASK)
        self.config = SimpleNamespace(vocab_size=VOCAB)

    def forward(self, input_ids: torch.LongTensor, logits_mask: torch.BoolTensor) -> SimpleNamespace:
        visible = torch.zeros(input_ids.shape[0], VOCAB).scatter_(1, input_ids, 1.0)
        visible[:, MASK] = 0.0
        logits = (self.scale * visible)[:, None, :].expand(-1, input_ids.shape[1], -1)
        return SimpleNamespace(logits=logits[logits_mask])


def fill_in_rows() -> list[dict]:
    words = [["w10", "w11", "w12"], ["w20", "w21", "w22"], ["w30", "w31", "w32"]]
    return [
        {"instruction": "w0 w1", "input": f"{a} ___ {c}".replace("___", "w2"), "output": f"{a} {b} {c}"}
        for a, b, c in words
    ]


def test_a_model_that_reads_its_prompt_gains_from_its_own_prompt():
    result = prompt_use(VisibleTokensModel(), make_tiny_tokenizer(), fill_in_rows(), num_samples=8)
    assert result.num_conversations == 3 and result.num_tokens == 3 * 5  # 3 words, `[/Answer]`, EOS
    # The reply's first and last words stand in its own prompt, not in the others': they become far likelier.
    assert result.gain > 0.5
    assert result.as_dict()["gain_nats_per_token"] == result.gain


def test_a_model_that_ignores_its_prompt_gains_nothing():
    model = small_model()  # random weights: its predictions barely depend on the prompt
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()  # every position predicts the same uniform distribution, whatever it reads
    result = prompt_use(model, make_tiny_tokenizer(), fill_in_rows(), num_samples=4)
    assert result.own_nats_per_token == pytest.approx(result.other_nats_per_token)
    assert result.own_nats_per_token > 0


def test_bad_conversations_are_refused_before_any_scoring():
    tokenizer, model = make_tiny_tokenizer(), VisibleTokensModel()
    with pytest.raises(ValueError, match="at least two rows"):
        prompt_use(model, tokenizer, fill_in_rows()[:1])
    same = [{"instruction": "w0", "output": "w1"}, {"instruction": "w0", "output": "w2"}]
    with pytest.raises(ValueError, match="same prompt"):
        prompt_use(model, tokenizer, same)
    no_reply = [{"messages": [{"role": "user", "content": "w0"}]}, fill_in_rows()[0]]
    with pytest.raises(ValueError, match=r"conversations\[0\]"):
        prompt_use(model, tokenizer, no_reply)


@pytest.mark.parametrize(
    ("rows", "kwargs", "error", "pattern"),
    [
        ([{"instruction": "w0", "output": "w1"}, {"prompt": "w2"}], {}, ValueError,
         r"`conversations\[1\]` must be a dict with `messages`.*got \['prompt'\]"),
        ([{"instruction": "w0", "output": "w1"}, "w2"], {}, ValueError, r"`conversations\[1\]`.*got str"),
        (None, {"num_samples": 1}, ValueError, "`num_samples` must be an integer >= 2, got 1"),
        (None, {"seed": "a"}, TypeError, "`seed` must be an integer >= 0"),
    ],
)  # fmt: skip
def test_bad_rows_and_settings_are_named_before_any_formatting(monkeypatch, rows, kwargs, error, pattern):
    import importlib

    module = importlib.import_module("transformers_mdlm.evaluation.prompt_use")  # the module, not the function
    formatted = []
    monkeypatch.setattr(module, "format_instruction_dataset", lambda *a, **k: formatted.append(1))
    with pytest.raises(error, match=pattern):
        prompt_use(VisibleTokensModel(), make_tiny_tokenizer(), rows or fill_in_rows(), **kwargs)
    assert formatted == []


def test_a_reply_never_meets_its_own_prompt_as_the_other_one():
    # Two neighbouring rows share a prompt: a plain cyclic shift scored A's reply after its own prompt again, and the
    # gain depended on the rows' order (-0.73 against -0.09 nats here).
    model, tokenizer = build_model(modernbert_config()), make_tiny_tokenizer()
    a = {"instruction": "w1 w2 w3", "output": "w10 w11 w12"}
    b = {"instruction": "w1 w2 w3", "output": "w20 w21 w22"}
    c = {"instruction": "w30 w31", "output": "w40 w41 w42"}
    first, second = (prompt_use(model, tokenizer, rows, num_samples=4) for rows in ([a, b, c], [a, c, b]))
    assert first.gain == pytest.approx(second.gain, abs=1e-9)
    assert first.other_nats_per_token == pytest.approx(second.other_nats_per_token, abs=1e-9)
