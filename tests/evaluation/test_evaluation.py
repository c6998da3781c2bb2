"""Evaluation: the evidence bound against exact enumeration, multiple choice, QA metrics, `mdlm eval`, lm-eval."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
import torch

from conftest import MASK, counting_dataset, make_tiny_tokenizer, small_model
from transformers_mdlm.cli import main
from transformers_mdlm.evaluation import (
    MultipleChoiceItem,
    evidence_bound,
    exact_match,
    f1_score,
    score_multiple_choice,
    unigram_bound,
)


def exact_bound(model, tokens: list[int], context: int = 0) -> float:
    """sum_k (1/k) mean_{|S|=k} sum_{i in S} -log p(x_i | x with S masked), by enumerating every subset S."""
    length = len(tokens) - context
    total = 0.0
    for k in range(1, length + 1):
        subsets = list(itertools.combinations(range(context, len(tokens)), k))
        inputs = torch.tensor(tokens).repeat(len(subsets), 1)
        masks = torch.zeros_like(inputs, dtype=torch.bool)
        for row, subset in enumerate(subsets):
            masks[row, list(subset)] = True
        with torch.no_grad():
            logp = model(input_ids=inputs.masked_fill(masks, MASK)).logits.double().log_softmax(-1)
        nll = -logp.gather(-1, inputs[..., None]).squeeze(-1)
        total += float((nll * masks).sum()) / len(subsets) / k
    return total


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return small_model(initializer_range=0.3)


def test_estimator_is_unbiased_against_exact_enumeration(model):
    tokens = [20, 31, 27, 45, 22, 38]
    exact = exact_bound(model, tokens)
    (estimate,) = evidence_bound(model, [tokens], num_samples=3000, seed=0, batch_size=500)
    assert abs(estimate.nats - exact) < 4 * estimate.standard_error
    assert estimate.standard_error < 0.02 * exact  # 3000 draws pin it down
    # Over seeds, small-sample estimates average to the exact value too.
    means = [evidence_bound(model, [tokens], num_samples=8, seed=s)[0].nats for s in range(200)]
    assert abs(sum(means) / len(means) - exact) < 0.01 * exact + 4 * (
        torch.tensor(means).std().item() / math.sqrt(200)
    )


def test_conditional_bound_scores_only_the_continuation(model):
    tokens = [20, 31, 27, 45, 22, 38]
    exact = exact_bound(model, tokens, context=3)
    (estimate,) = evidence_bound(model, [tokens], context_lengths=[3], num_samples=2000, seed=1, batch_size=500)
    assert estimate.num_tokens == 3
    assert abs(estimate.nats - exact) < 4 * estimate.standard_error
    assert estimate.nats < exact_bound(model, tokens)  # fewer tokens to pay for


def test_corpus_bounds_refuse_a_bare_string_and_empty_corpora(model):
    """A string is not a list of texts: iterating it scored its characters one by one, silently."""
    from transformers_mdlm.evaluation import corpus_evidence_bound

    tokenizer = make_tiny_tokenizer()
    with pytest.raises(TypeError, match=r"`texts` must be a list of strings, got one string \('w1 w2'\)"):
        corpus_evidence_bound(model, tokenizer, "w1 w2", num_samples=2)
    with pytest.raises(TypeError, match=r"`train_texts` must be a list of strings, got one string"):
        unigram_bound(tokenizer, "w1 w2", ["w1"])
    with pytest.raises(ValueError, match=r"`train_texts` holds no non-empty text"):
        unigram_bound(tokenizer, ["", " "], ["w1"])  # was an IndexError
    with pytest.raises(ValueError, match=r"`texts` holds no non-empty text"):
        unigram_bound(tokenizer, ["w1"], [""])


def test_multiple_choice_items_are_checked_before_any_scoring(model):
    tokenizer = make_tiny_tokenizer()
    good = MultipleChoiceItem("w1", [" w2", " w3"], 0)
    with pytest.raises(TypeError, match=r"`items\[1\]` must be a MultipleChoiceItem.*got dict"):
        score_multiple_choice(model, tokenizer, [good, {"context": "w1", "choices": ["w2", "w3"], "label": 0}])
    with pytest.raises(ValueError, match=r"`items\[0\]`: `label` must be an index into `choices` \(0 to 1\), got 5"):
        score_multiple_choice(model, tokenizer, [MultipleChoiceItem("w1", [" w2", " w3"], 5)])
    with pytest.raises(ValueError, match="`num_samples` must be an integer >= 2, got 1"):
        score_multiple_choice(model, tokenizer, [good], num_samples=1)


def test_bound_is_deterministic_for_a_seed(model):
    a = evidence_bound(model, [[20, 21, 22, 23]], num_samples=16, seed=3)
    b = evidence_bound(model, [[20, 21, 22, 23]], num_samples=16, seed=3)
    c = evidence_bound(model, [[20, 21, 22, 23]], num_samples=16, seed=4)
    assert a == b and a != c
    with pytest.raises(ValueError, match="num_samples"):
        evidence_bound(model, [[20, 21]], num_samples=1)
    with pytest.raises(TypeError, match=r"`seed` must be an integer >= 0, got 1\.5"):
        evidence_bound(model, [[20, 21]], seed=1.5)
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0, got -1"):
        evidence_bound(model, [[20, 21]], seed=-1)


def test_corpus_standard_error_matches_the_spread_over_seeds(model):
    """Sequences draw independently (their seed mixes in their tokens), so the corpus error, which adds the sequences'
    errors as independent, is the real spread. With one seed shared by every sequence, the stratification offsets
    were common to the corpus: the spread over seeds was 2.3x the reported error here, ~15x on the embedded model's
    validation corpus (4 samples: 2.43-2.70 bits/char over 4 seeds, reported error 0.014)."""
    generator = torch.Generator().manual_seed(0)
    corpus = [torch.randint(5, 100, (10,), generator=generator).tolist() for _ in range(150)]
    totals, errors = [], []
    for seed in range(24):
        bounds = evidence_bound(model, corpus, num_samples=2, seed=seed)
        totals.append(sum(b.nats for b in bounds))
        errors.append(math.sqrt(sum(b.standard_error**2 for b in bounds)))
    spread = torch.tensor(totals).std().item()
    reported = sum(errors) / len(errors)
    assert 0.5 < spread / reported < 2.0, (spread, reported)
    # A sequence's draws do not depend on where it stands in the corpus.
    assert evidence_bound(model, corpus[:2], num_samples=4)[1] == evidence_bound(model, corpus[1:2], num_samples=4)[0]


@pytest.fixture(scope="module")
def counting_model(tmp_path_factory):
    """A tiny model trained on the counting language (see test_training), saved with its tokenizer."""
    from conftest import args
    from transformers_mdlm import MaskedDiffusionTrainer

    path = tmp_path_factory.mktemp("counting")
    model = small_model()
    MaskedDiffusionTrainer(
        model=model, train_dataset=counting_dataset(), processing_class=make_tiny_tokenizer(),
        args=args(path, per_device_train_batch_size=32, max_steps=300, learning_rate=3e-3, warmup_steps=20),
    ).train()  # fmt: skip
    model.save_pretrained(path / "model")
    make_tiny_tokenizer().save_pretrained(path / "model")
    return path / "model"


def _words(ids: list[int]) -> str:
    return " ".join(make_tiny_tokenizer().convert_ids_to_tokens(ids))


def test_multiple_choice_picks_the_planted_answer(counting_model):
    from transformers_mdlm import AutoModelForMaskedDiffusion

    model = AutoModelForMaskedDiffusion.from_pretrained(counting_model)
    tokenizer = make_tiny_tokenizer()
    items = []
    for start in range(0, 40, 4):
        context = [20 + (start + i) % 40 for i in range(6)]
        right = [20 + (start + 6 + i) % 40 for i in range(3)]
        wrong = [20 + (start + 17 + 3 * i) % 40 for i in range(3)]
        label = start % 2
        choices = [" " + _words(wrong), " " + _words(right)] if label else [" " + _words(right), " " + _words(wrong)]
        items.append(MultipleChoiceItem(context=_words(context), choices=choices, label=label))
    scores = score_multiple_choice(model, tokenizer, items, num_samples=16)
    assert scores["n"] == 10
    assert scores["acc"] >= 0.9 and scores["acc_norm"] >= 0.9


def test_unigram_baseline_by_hand():
    tokenizer = make_tiny_tokenizer()
    bound = unigram_bound(tokenizer, ["w1 w1 w2"], ["w1 w2"])
    vocab = len(tokenizer)
    expected = -(math.log(3 / (vocab + 3)) + math.log(2 / (vocab + 3)))
    assert bound.nats == pytest.approx(expected)
    assert bound.num_characters == 5 and bound.bits_per_character == pytest.approx(expected / math.log(2) / 5)


def test_qa_metrics():
    assert exact_match("Ankara.", ["ankara"]) == 1.0
    assert exact_match("İSTANBUL", ["istanbul"]) == 1.0
    assert f1_score("başkent Ankara", ["Ankara"]) == pytest.approx(2 / 3)
    assert f1_score("İzmir", ["Ankara"]) == 0.0


def test_mdlm_eval_writes_the_json(counting_model, tmp_path, capsys):
    data = tmp_path / "eval"
    data.mkdir()
    rows = []
    for start in range(5):
        context = [20 + (start + i) % 40 for i in range(6)]
        right = [20 + (start + 6 + i) % 40 for i in range(2)]
        rows.append({"context": _words(context), "choices": [" " + _words(right), " w80 w81"], "label": 0})
    (data / "planted_validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(_words([20 + (s + i) % 40 for i in range(12)]) for s in range(6)))
    output = tmp_path / "results.json"
    code = main(["eval", "--model", str(counting_model), "--tasks", "perplexity,planted", "--data-dir", str(data),
                 "--text-file", str(texts), "--num-samples", "8", "--output", str(output)])  # fmt: skip
    assert code == 0
    report = json.loads(output.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert set(report["results"]) == {"perplexity", "planted"}
    perplexity = report["results"]["perplexity"]
    assert perplexity["n"] == 6 and perplexity["tokens"] == 72 and perplexity["bits_per_character"] > 0
    assert perplexity["bits_per_character"] < unigram_bound(make_tiny_tokenizer(), texts.read_text().splitlines(),
                                                              texts.read_text().splitlines()).bits_per_character  # fmt: skip
    assert report["results"]["planted"]["n"] == 5 and report["results"]["planted"]["acc"] == 1.0
    assert report["config"]["num_samples"] == 8 and "wall_seconds" in report["config"]


def test_mdlm_eval_bad_input(counting_model, tmp_path, capsys):
    assert main(["eval", "--model", str(counting_model), "--tasks", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "Unknown task" in capsys.readouterr().err
    assert main(["eval", "--model", str(counting_model), "--tasks", "perplexity"]) == 2
    assert "text_file" in capsys.readouterr().err


def _counting_task_files(folder):
    rows = []
    for start in range(6):
        context = [20 + (start + i) % 40 for i in range(6)]
        right = [20 + (start + 6 + i) % 40 for i in range(2)]
        rows.append({"context": _words(context), "choices": [_words(right), "w80 w81"], "label": 0})
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "counting.yaml").write_text(
        "task: counting_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'data.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n"
    )


def test_mdlm_eval_keeps_finished_tasks_and_cuts_long_inputs(counting_model, tmp_path, capsys):
    """A broken task does not lose the others; passages longer than the model's 128 positions are cut and counted."""
    data = tmp_path / "eval"
    data.mkdir()
    planted = {"context": _words(list(range(20, 26))), "choices": [" w26 w27", " w80 w81"], "label": 0}
    long_mc = {"context": " ".join(["w30"] * 200), "choices": [" w31", " w80"], "label": 0}
    (data / "planted_validation.jsonl").write_text(json.dumps(planted) + "\n" + json.dumps(long_mc) + "\n")
    xquad = [{"context": " ".join(f"w{20 + i % 40}" for i in range(300)), "question": "w5 w6", "answers": ["w7"]},
             {"context": "w20 w21", "question": "w5", "answers": ["w22"]}]  # fmt: skip
    (data / "xquad_tr_validation.jsonl").write_text("\n".join(json.dumps(r) for r in xquad))
    (data / "broken_validation.jsonl").write_text(json.dumps(planted) + "\n{not json\n")
    output = tmp_path / "results.json"
    code = main(["eval", "--model", str(counting_model), "--tasks", "planted,broken,xquad_tr", "--data-dir", str(data),
                 "--num-samples", "4", "--max-new-tokens", "4", "--output", str(output)])  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    report = json.loads(output.read_text())
    assert json.loads(captured.out) == report and report["failed"] == ["broken"]
    assert "broken_validation.jsonl, line 2: not valid JSON" in report["results"]["broken"]["error"]
    assert report["results"]["planted"]["n"] == 2 and report["results"]["planted"]["truncated"] == 1
    assert report["results"]["xquad_tr"]["n"] == 2 and report["results"]["xquad_tr"]["truncated"] == 1
    assert "cut" in report["config"]["long_inputs"]
    assert "broken failed" in captured.err


def test_mdlm_eval_checks_its_arguments_before_any_work(counting_model, tmp_path, capsys):
    base = ["eval", "--model", str(counting_model), "--data-dir", str(tmp_path)]
    assert main([*base, "--tasks", ",", "--text-file", __file__]) == 2
    assert "`tasks` names no task" in capsys.readouterr().err
    assert main([*base, "--tasks", "perplexity", "--text-file", __file__, "--limit", "-1"]) == 2
    assert "`limit` must be an integer >= 1" in capsys.readouterr().err
    # Refused before loading (each task used to load, then fail).
    assert main([*base, "--tasks", "perplexity", "--text-file", __file__, "--num-samples", "1"]) == 2
    assert "`num_samples` must be an integer >= 2, got 1" in capsys.readouterr().err
    missing = tmp_path / "missing" / "out.json"
    assert main([*base, "--tasks", "perplexity", "--text-file", __file__, "--output", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_mdlm_lm_eval_runs_lm_evals_command_line_with_the_model_registered(counting_model, tmp_path, capsys):
    """The adapter end to end: lm-eval's own command line, a local multiple-choice task, the `mdlm` model."""
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    _counting_task_files(tmp_path)
    code = main(["lm-eval", "run", "--model", "mdlm", "--model_args", f"pretrained={counting_model}", "num_samples=8",
                 "--tasks", "counting_mc", "--include_path", str(tmp_path), "--output_path", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    written = list((tmp_path / "out").rglob("results_*.json"))
    assert written and json.loads(written[0].read_text())["results"]["counting_mc"]["acc,none"] == 1.0


def test_the_lm_eval_adapter_checks_its_arguments_before_loading(tmp_path):
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    from transformers_mdlm.evaluation.lm_eval_adapter import MaskedDiffusionLM

    missing = str(tmp_path / "no-model")  # loading it would fail with another error: the checks come first
    for arguments, message in [
        ({"num_samples": 1}, "`num_samples` must be an integer >= 2, got 1"),
        ({"batch_size": "abc"}, "`batch_size` must be a positive integer or 'auto', got 'abc'"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer or 'auto', got 0"),
        ({"max_length": 0}, "`max_length` must be an integer >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            MaskedDiffusionLM(pretrained=missing, **arguments)


def test_a_model_with_nan_weights_fails_its_evaluation_instead_of_scoring(tmp_path):
    # NaN scores made `max` pick the first choice of every item: the accuracy was the share of items labelled 0
    # (0.75 here), and a NaN perplexity entered the report as a result.
    from transformers_mdlm.evaluation.runner import evaluate_model

    model, tokenizer = small_model(), make_tiny_tokenizer()
    with torch.no_grad():
        model.model.embeddings.tok_embeddings.weight.fill_(float("nan"))
    items = [MultipleChoiceItem("w1 w2", [" w3", " w4"], label) for label in (0, 0, 0, 1)]
    with pytest.raises(ValueError, match=re.escape("The evidence bound of `sequences[0]` is nan")):
        score_multiple_choice(model, tokenizer, items, num_samples=2)
    texts = tmp_path / "texts.txt"
    texts.write_text("w1 w2 w3\n\nw4 w5 w6\n")
    model.generation_config.mask_token_id = MASK
    model_dir = tmp_path / "nan-model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    report = evaluate_model(str(model_dir), ["perplexity"], text_file=texts, num_samples=2)
    assert report["failed"] == ["perplexity"]
    assert "is nan" in report["results"]["perplexity"]["error"]


def test_acc_norm_divides_by_the_choice_without_its_delimiter_as_lm_eval(monkeypatch):
    """lm-eval's acc_norm: log-likelihood / len(choice text), the target delimiter (our leading space) not counted."""
    from transformers_mdlm.evaluation import tasks
    from transformers_mdlm.evaluation.likelihood import EvidenceBound

    item = tasks._xcopa_item({"premise": "w7 w8.", "question": "effect", "choice1": "w1 w2 w3 w4 w5 w6 w7",
                              "choice2": "w1 w2 w3", "label": 0})  # fmt: skip
    assert item.choices[0].startswith(" ")
    # 30 nats over 20 characters (-1.5 per character) against 12.5 over 8 (-1.5625): the long choice wins. Counting
    # the space (21 and 9 characters) made the short one win (-1.4286 against -1.3889).
    bounds = [EvidenceBound(30.0, 0.1, 7, 32), EvidenceBound(12.5, 0.1, 3, 32)]
    monkeypatch.setattr(tasks, "evidence_bound", lambda *args, **kwargs: bounds)
    scores = score_multiple_choice(small_model(), make_tiny_tokenizer(), [item])
    assert scores["acc_norm"] == 1.0 and scores["acc"] == 0.0


def _metaspace_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    words = ["▁"] + [f"▁w{i}" for i in range(94)]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>", mask_token="<mask>")  # fmt: skip


def test_the_lm_eval_adapter_scores_the_text_and_decodes_as_the_task_asks():
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    from types import SimpleNamespace

    from conftest import build_model, modernbert_config
    from transformers_mdlm.evaluation.lm_eval_adapter import MaskedDiffusionLM

    tokenizer = _metaspace_tokenizer()
    model = build_model(modernbert_config())
    lm = MaskedDiffusionLM(pretrained=model, tokenizer=tokenizer, num_samples=2, temperature=0.7)
    # lm-eval's pairing: a context's trailing space belongs to the continuation, and the joined text is tokenized
    # whole (separately, "w1 w2 " + "w3" gave an extra "▁" token).
    assert lm._encode_pair("w1 w2 ", "w3") == (tokenizer.encode("w1 w2"), tokenizer.encode("w3"))
    assert lm._encode_pair("w1 w2", " w3") == (tokenizer.encode("w1 w2"), tokenizer.encode("w3"))

    calls = []
    generate = model.generate
    model.generate = lambda *args, **kwargs: calls.append(kwargs) or generate(*args, **kwargs)
    request = SimpleNamespace(args=("w1 w2", {"until": ["w9"], "max_gen_toks": 4, "do_sample": False, "top_k": 1}))
    lm.generate_until([request])
    assert calls[0]["do_sample"] is False and calls[0]["top_k"] == 1 and calls[0]["max_new_tokens"] == 4
    model.generate = generate

    # `is_greedy` is the argmax infilling, whatever sampling and penalties the model's saved settings hold.
    model.generation_config.update(temperature=1.0, repetition_penalty=1.5)
    ids = [10, 11, 12, 13, 14, 15]
    masked = torch.tensor([ids[:2] + [MASK] * 4])
    greedy = model.infill(masked, steps=4, block_length=6, do_sample=False, repetition_penalty=1.0,
                          no_repeat_ngram_size=0, suppress_tokens=None)[0].tolist()  # fmt: skip
    assert all(lm._is_greedy(greedy, 2) for _ in range(5))


def test_mdlm_eval_refuses_missing_task_files_and_a_folder_as_output_before_loading(tmp_path, capsys, monkeypatch):
    import transformers

    loaded = []
    monkeypatch.setattr(transformers, "pipeline", lambda *args, **kwargs: loaded.append(args) or 1 / 0)
    base = ["eval", "--model", str(tmp_path), "--data-dir", str(tmp_path / "nowhere")]
    assert main([*base, "--tasks", "xcopa_tr"]) == 2
    assert "xcopa_tr_validation.jsonl, which does not exist" in capsys.readouterr().err
    assert main([*base, "--tasks", "perplexity", "--text-file", __file__, "--output", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not loaded


def test_empty_choices_and_an_adapter_without_its_tokenizer_are_refused():
    items = [MultipleChoiceItem("w1 w2 w3", ["", " w5"], 1)]
    with pytest.raises(ValueError, match="must not be empty or blank"):
        score_multiple_choice(small_model(), make_tiny_tokenizer(), items, num_samples=2)
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    from transformers_mdlm.evaluation.lm_eval_adapter import MaskedDiffusionLM

    with pytest.raises(ValueError, match="`tokenizer` is needed"):
        MaskedDiffusionLM(pretrained=small_model())
