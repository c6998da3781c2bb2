"""Bad input at every public entry point gets an early, clear error naming the argument (or file, line and field).

Each case is `(entry point, what is wrong, call, expected error type, words the message must hold)`. The count per
entry point is printed by `python -m pytest tests/test_bad_inputs.py --collect-only -q`.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertForMaskedLM, GenerationConfig, pipeline

from conftest import MASK, VOCAB, args, build_model, make_tiny_tokenizer, modernbert_config, small_model
from transformers_mdlm import (
    DataCollatorForMaskedDiffusion,
    DataCollatorForMaskedDiffusionSFT,
    MaskedDiffusionGenerationConfig,
    MaskedDiffusionTrainer,
    format_instruction_dataset,
    pack_dataset,
)
from transformers_mdlm.cli import main
from transformers_mdlm.evaluation import corpus_evidence_bound, evidence_bound, generic_multiple_choice_task
from transformers_mdlm.evaluation.lm_eval_adapter import MaskedDiffusionLM
from transformers_mdlm.evaluation.runner import evaluate_model
from transformers_mdlm.evaluation.tasks import (
    MULTIPLE_CHOICE_TASKS,
    MultipleChoiceItem,
    load_xquad,
    score_multiple_choice,
)
from transformers_mdlm.evaluation.text_quality import check_answer
from transformers_mdlm.model_card import build_model_card
from transformers_mdlm.training import diffutron_lora_config
from transformers_mdlm.training.inputs import TrainingDivergedError, check_batch
from transformers_mdlm.training.recipe import RecipeArguments, _filter_tasks, run_instruction_tuning

MODEL = build_model(modernbert_config())
TOKENIZER = make_tiny_tokenizer()
IDS = torch.tensor([[10, 11, 12]])
INSTRUCTION = Dataset.from_list([{"instruction": "w1 w2", "output": "w3 w4 w5"}])
SHORT = dict(max_new_tokens=4, steps=2)


def _pipe():
    return pipeline("masked-diffusion", model=MODEL, tokenizer=TOKENIZER)


GENERATE = [
    ("temperature inf", lambda: MODEL.generate(IDS, temperature=math.inf, **SHORT), ValueError, "`temperature`"),
    ("cfg_scale inf", lambda: MODEL.generate(IDS, cfg_scale=math.inf, **SHORT), ValueError, "`cfg_scale`"),
    ("penalty inf", lambda: MODEL.generate(IDS, repetition_penalty=math.inf, **SHORT), ValueError,
     "`repetition_penalty`"),
    ("suppress beyond vocab", lambda: MODEL.generate(IDS, suppress_tokens=[VOCAB + 5], **SHORT), ValueError,
     "`suppress_tokens` must hold token ids in [0, 100)"),
    ("float ids", lambda: MODEL.generate(IDS.float(), **SHORT), TypeError, "`input_ids` must be a LongTensor"),
    ("ids beyond vocab", lambda: MODEL.generate(torch.tensor([[VOCAB]]), **SHORT), ValueError, "`input_ids`"),
    ("mask of 2", lambda: MODEL.generate(IDS, attention_mask=torch.tensor([[1, 2, 1]]), **SHORT), ValueError,
     "`attention_mask` must hold only 0"),
    ("unknown name", lambda: MODEL.generate(IDS, num_beams=2, **SHORT), TypeError, "num_beams"),
    ("plain config with beams", lambda: MODEL.generate(IDS, generation_config=GenerationConfig(num_beams=3)),
     TypeError, "num_beams"),
    ("stop strings, no tokenizer", lambda: MODEL.generate(IDS, stop_strings=["x"], **SHORT), ValueError,
     "`stop_strings` needs the model's tokenizer"),
    ("bad callback input", lambda: MODEL.generate(IDS, callback_on_step_end=print,
                                                  callback_on_step_end_tensor_inputs=["latents"], **SHORT),
     ValueError, "allowed: sequences"),
    ("num_return_sequences 0", lambda: MODEL.generate(IDS, num_return_sequences=0, **SHORT), ValueError,
     "`num_return_sequences`"),
    ("several greedy sequences", lambda: MODEL.generate(IDS, num_return_sequences=2, do_sample=False, **SHORT),
     ValueError, "would return identical answers"),
    ("too long", lambda: MODEL.generate(IDS, max_new_tokens=500, steps=2), ValueError, "128 positions"),
    ("scheduler of the wrong type", lambda: MODEL.generate(IDS, scheduler="linear", **SHORT), TypeError,
     "`scheduler` must be a MaskedDiffusionScheduler"),
    ("infill without masks", lambda: MODEL.infill(IDS, steps=2), ValueError, "Nothing to fill"),
]  # fmt: skip

PIPELINE = [
    ("a plain masked LM", lambda: pipeline("masked-diffusion", model=BertForMaskedLM(BertConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)),
        tokenizer=TOKENIZER), TypeError, "needs a model loaded with `AutoModelForMaskedDiffusion`"),
    ("a missing folder", lambda: pipeline("masked-diffusion", model="./no/such/model"), FileNotFoundError,
     "No model folder at './no/such/model'"),
    ("an int", lambda: _pipe()(5, **SHORT), TypeError, "takes a string, a conversation"),
    ("a message without role", lambda: _pipe()([{"content": "w1"}], **SHORT), ValueError, "has no 'role'"),
    ("an unknown role", lambda: _pipe()([{"role": "bot", "content": "w1"}], **SHORT), ValueError, "allowed roles"),
    ("an unknown keyword", lambda: _pipe()("w1", beams=2), TypeError, "beams"),
    ("a config with beams", lambda: _pipe()("w1", generation_config=GenerationConfig(num_beams=2)), TypeError,
     "num_beams"),
    ("too long", lambda: _pipe()(" ".join(["w1"] * 130), **SHORT), ValueError, "128 positions"),
    ("an empty list", lambda: _pipe()([], **SHORT), ValueError, "empty list"),
    ("a string for a flag", lambda: _pipe()("w1", return_full_text="no", **SHORT), TypeError,
     "`return_full_text` must be True or False, got 'no'"),
    ("new text as token ids", lambda: _pipe()("w1", return_full_text=False, return_tensors=True, **SHORT),
     ValueError, "`return_full_text` is mutually exclusive with `return_tensors`"),  # as transformers' text-generation
    ("a number for a flag", lambda: _pipe()("w1", continue_final_message=1, **SHORT), TypeError,
     "`continue_final_message` must be True or False"),
]  # fmt: skip


def _collate(features, sft=False):
    collator_class = DataCollatorForMaskedDiffusionSFT if sft else DataCollatorForMaskedDiffusion
    return collator_class(tokenizer=TOKENIZER)(features)


COLLATORS = [
    ("labels column", lambda: _collate([{"input_ids": [20, 21], "labels": [20, 21]}]), ValueError,
     "carries `labels`"),
    ("empty row", lambda: _collate([{"input_ids": []}]), ValueError, "has no tokens"),
    ("all padding", lambda: _collate([{"input_ids": [0, 0], "attention_mask": [0, 0]}]), ValueError,
     "has no tokens"),
    ("mask of the wrong length", lambda: _collate([{"input_ids": [20, 21], "attention_mask": [1]}]), ValueError,
     "`attention_mask` must hold one 0 or 1 per token"),
    ("left padding in a row", lambda: _collate([{"input_ids": [0, 21], "attention_mask": [0, 1]}]), ValueError,
     "tokens first, then padding"),
    ("no input_ids", lambda: _collate([{"text": "w1"}]), ValueError, "has no `input_ids`"),
    ("sample_id 'abc'", lambda: _collate([{"input_ids": [20, 21], "sample_id": "abc"}]), ValueError,
     "`sample_id` must be an integer"),
    ("prompt_length = row", lambda: _collate([{"input_ids": [20, 21], "prompt_length": 2}], sft=True),
     ValueError, "`prompt_length` is 2 for a row of 2 tokens"),
    ("prompt_length beyond", lambda: _collate([{"input_ids": [20, 21], "prompt_length": 5}], sft=True),
     ValueError, "`prompt_length` is 5"),
    ("negative prompt_length", lambda: _collate([{"input_ids": [20, 21], "prompt_length": -1}], sft=True),
     ValueError, "`prompt_length` is -1"),
    ("no prompt_length", lambda: _collate([{"input_ids": [20, 21]}], sft=True), ValueError, "no `prompt_length`"),
    # Settings of a collator built directly (the training arguments check their own copies of the first two).
    ("time_epsilon 2", lambda: DataCollatorForMaskedDiffusion(tokenizer=TOKENIZER, time_epsilon=2.0), ValueError,
     "`time_epsilon` must be a number in [0, 1], got 2.0"),
    ("noise_schedule 'foo'", lambda: DataCollatorForMaskedDiffusion(tokenizer=TOKENIZER, noise_schedule="foo"),
     ValueError, "`noise_schedule` must be one of 'linear', 'cosine'; got 'foo'"),
    ("pad_to_multiple_of 0", lambda: DataCollatorForMaskedDiffusionSFT(tokenizer=TOKENIZER, pad_to_multiple_of=0),
     ValueError, "`pad_to_multiple_of` must be an integer >= 1, got 0"),
    ("truncate 'yes'", lambda: DataCollatorForMaskedDiffusion(tokenizer=TOKENIZER, truncate="yes"), TypeError,
     "`truncate` must be True or False, got 'yes'"),
    # int() would truncate these silently: 5.9 -> 5, True -> 1.
    ("float token ids", lambda: _collate([{"input_ids": [20, 5.9]}]), ValueError,
     "Row 0: `input_ids` must hold integer token ids, got 5.9"),
    ("bool token ids", lambda: _collate([{"input_ids": [True, 21]}]), ValueError, "got True"),
    ("a float tensor of ids", lambda: _collate([{"input_ids": torch.tensor([20.0, 21.0])}]), ValueError,
     "got a torch.float32 array"),
    # The pretraining collator would mask and score the prompt of an instruction row.
    ("instruction row, pretraining collator", lambda: _collate([{"input_ids": [20, 21, 22], "prompt_length": 1}]),
     ValueError, "carries `prompt_length` (an instruction row), but DataCollatorForMaskedDiffusion masks"),
]  # fmt: skip


def _train(tmp_path, rows, **overrides):
    overrides = {"max_steps": 2, **overrides}
    trainer = MaskedDiffusionTrainer(model=small_model(), args=args(tmp_path, **overrides),
                                     train_dataset=Dataset.from_dict({"input_ids": rows}),
                                     processing_class=make_tiny_tokenizer())  # fmt: skip
    trainer.train()
    return trainer


TRAINING = [
    ("an id beyond the vocabulary that the noise masked", lambda tmp: check_batch(
        small_model(), {"input_ids": torch.tensor([[20, MASK]]), "labels": torch.tensor([[-100, 500]])}),
     ValueError, "token id 500, outside the model's vocabulary [0, 100)"),
    ("ids beyond the vocabulary", lambda tmp: _train(tmp, [[20, 500, 21]] * 8), ValueError,
     "token id 500, outside the model's vocabulary [0, 100)"),
    ("rows longer than the positions", lambda tmp: _train(tmp, [[20] * 140] * 8), ValueError,
     "140 tokens, more than the model's 128 positions"),
    ("a diverging learning rate", lambda tmp: _train(tmp, [[20 + i % 30 for i in range(12)]] * 16,
                                                     learning_rate=1e6, max_steps=4),
     TrainingDivergedError, "training stopped before the optimizer applied it"),
    ("args of the wrong type", lambda tmp: MaskedDiffusionTrainer(model=small_model(), args={"lr": 1},
                                                                 processing_class=TOKENIZER),
     TypeError, "`args` must be MaskedDiffusionTrainingArguments or TrainingArguments"),
    ("a bad loss normalization", lambda tmp: args(tmp, loss_normalization="batch"), ValueError,
     "`loss_normalization` must be one of 'sequence', 'token'"),
    ("stop_on_nonfinite not a bool", lambda tmp: args(tmp, stop_on_nonfinite="yes"), TypeError,
     "`stop_on_nonfinite` must be True or False"),
    ("resume from nothing", lambda tmp: MaskedDiffusionTrainer(model=small_model(), args=args(tmp),
                                                               train_dataset=Dataset.from_dict({"input_ids": [[20]]}),
                                                               processing_class=TOKENIZER).train(True),
     ValueError, "No complete checkpoint to resume from"),
    ("pack into 0-token blocks", lambda tmp: pack_dataset(Dataset.from_dict({"text": ["w1"]}), TOKENIZER, 0),
     ValueError, "`block_size` must be an integer >= 1"),
    ("pack a list", lambda tmp: pack_dataset(["w1"], TOKENIZER, 8), TypeError, "`dataset` must be a datasets.Dataset"),
    ("format without columns", lambda tmp: format_instruction_dataset(Dataset.from_dict({"x": ["w1"]}), TOKENIZER),
     ValueError, "needs the column"),
    # peft takes these: r=0 fails later inside it, a negative alpha flips the adapter's update silently.
    ("a LoRA rank of 0", lambda tmp: diffutron_lora_config(r=0), ValueError, "`r` must be an integer >= 1, got 0"),
    ("a negative LoRA alpha", lambda tmp: diffutron_lora_config(r=4, lora_alpha=-1), ValueError,
     "`lora_alpha` must be a finite number > 0, got -1"),
    ("a LoRA dropout of 1", lambda tmp: diffutron_lora_config(r=4, lora_dropout=1.0), ValueError,
     "`lora_dropout` must be a number in [0, 1), got 1.0"),
    ("persistent workers", lambda tmp: MaskedDiffusionTrainer(
        model=small_model(), args=args(tmp, dataloader_num_workers=1, dataloader_persistent_workers=True),
        train_dataset=Dataset.from_dict({"input_ids": [[20, 21]]}), processing_class=TOKENIZER),
     ValueError, "every epoch would draw the first epoch's noise"),
    ("format: max_length -3", lambda tmp: format_instruction_dataset(INSTRUCTION, TOKENIZER, max_length=-3,
                                                                     truncate=True),
     ValueError, "`max_length` must be an integer >= 1, got -3"),
    ("format: truncate 'no'", lambda tmp: format_instruction_dataset(INSTRUCTION, TOKENIZER, max_length=8,
                                                                     truncate="no"),
     TypeError, "`truncate` must be True or False, got 'no'"),
    ("format: truncate without max_length", lambda tmp: format_instruction_dataset(INSTRUCTION, TOKENIZER,
                                                                                   truncate=True),
     ValueError, "`truncate=True` cuts rows to `max_length`; pass `max_length` too"),
    ("format: append_eos 0", lambda tmp: format_instruction_dataset(INSTRUCTION, TOKENIZER, append_eos=0),
     TypeError, "`append_eos` must be True or False"),
    ("format: output None", lambda tmp: format_instruction_dataset(
        Dataset.from_list([{"instruction": "w1", "output": "w2"}, {"instruction": "w1", "output": None}]),
        TOKENIZER), ValueError, "Row 1: `output` must be a string, got None"),
    ("recipe: limit 0", lambda tmp: RecipeArguments(model="m", train_file="f", limit=0), ValueError,
     "`limit` must be an integer >= 1, got 0"),
    ("recipe: block_size 0", lambda tmp: RecipeArguments(model="m", train_file="f", block_size=0), ValueError,
     "`block_size` must be an integer >= 1, got 0"),
    ("recipe: tasks ','", lambda tmp: RecipeArguments(model="m", train_file="f", tasks=" , "), ValueError,
     "`tasks` names no task"),
    ("recipe: a task the data lacks", lambda tmp: _filter_tasks(
        Dataset.from_dict({"task": ["qa", "sum"]}), RecipeArguments(model="m", train_file="f", tasks="qa,summ")),
     ValueError, "name tasks the data does not have: ['summ']; its tasks are ['qa', 'sum']"),
    ("recipe: block_size without replay", lambda tmp: run_instruction_tuning(
        RecipeArguments(model="m", train_file="f", block_size=64), args(tmp)), ValueError,
     "['block_size'] shape the corpus rows of pretraining and of SFT replay"),
]  # fmt: skip


def _task_file(tmp_path, *rows, name="mc"):
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (tmp_path / f"{name}_validation.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


GOOD = {"context": "w1", "choices": [" w2", " w3"], "label": 0}
EVALUATION = [
    ("choices as a string", lambda tmp: generic_multiple_choice_task("mc").load(
        _task_file(tmp, GOOD, {"context": "w1", "choices": "ab", "label": 0})), ValueError,
     "mc_validation.jsonl, line 2: `choices` must be a list of strings"),
    ("label out of range", lambda tmp: generic_multiple_choice_task("mc").load(
        _task_file(tmp, {**GOOD, "label": 2})), ValueError, "line 1: `label` must be an index into `choices`"),
    ("label 'A'", lambda tmp: generic_multiple_choice_task("mc").load(_task_file(tmp, {**GOOD, "label": "A"})),
     ValueError, "line 1: `label` must be an integer index, got 'A'"),
    ("no label", lambda tmp: generic_multiple_choice_task("mc").load(
        _task_file(tmp, {"context": "w1", "choices": ["a", "b"]})), ValueError, "line 1: the row has no 'label'"),
    ("no choices", lambda tmp: generic_multiple_choice_task("mc").load(_task_file(tmp, {**GOOD, "choices": []})),
     ValueError, "`choices` must be a list of at least 2"),
    ("a line that is not JSON", lambda tmp: generic_multiple_choice_task("mc").load(
        _task_file(tmp, GOOD, "", "{oops")), ValueError, "mc_validation.jsonl, line 3: not valid JSON"),
    ("an EXAMS row without choices", lambda tmp: MULTIPLE_CHOICE_TASKS["exams_tr"].load(
        _task_file(tmp, {"question": "q", "label": 0}, name="exams_tr")), ValueError, "has no 'choices'"),
    ("an XCOPA question other than cause/effect", lambda tmp: MULTIPLE_CHOICE_TASKS["xcopa_tr"].load(_task_file(
        tmp, {"premise": "p.", "choice1": "a", "choice2": "b", "question": "Cause", "label": 0}, name="xcopa_tr")),
     ValueError, "line 1: `question` must be 'cause' or 'effect', got 'Cause'"),
    ("XQuAD without answers", lambda tmp: load_xquad(_task_file(tmp, {"context": "c", "question": "q"},
                                                                name="xquad_tr")),
     ValueError, "xquad_tr_validation.jsonl, line 1: the row has no answers"),
    ("ids beyond the vocabulary", lambda tmp: evidence_bound(MODEL, [[20, 500]], num_samples=2), ValueError,
     "`sequences[0]` must hold token ids in [0, 100)"),
    ("a sequence longer than the model", lambda tmp: evidence_bound(MODEL, [[20] * 200], num_samples=2),
     ValueError, "200 tokens, more than the model's 128 positions"),
    ("one sample", lambda tmp: evidence_bound(MODEL, [[20, 21]], num_samples=1), ValueError, "`num_samples`"),
    ("context beyond the sequence", lambda tmp: evidence_bound(MODEL, [[20, 21]], context_lengths=[5],
                                                               num_samples=2),
     ValueError, "`context_lengths[0]` must be in [0, 2]"),
    ("a string as the texts", lambda tmp: corpus_evidence_bound(MODEL, TOKENIZER, "w1 w2", num_samples=2),
     TypeError, "`texts` must be a list of strings, got one string ('w1 w2')"),
    ("a seed that is not an int", lambda tmp: evidence_bound(MODEL, [[20, 21]], num_samples=2, seed=0.5),
     TypeError, "`seed` must be an integer >= 0"),
    ("corpus bound, max_length 0", lambda tmp: corpus_evidence_bound(MODEL, TOKENIZER, ["w1"], max_length=0),
     ValueError, "`max_length` must be an integer >= 1, got 0"),
    ("multiple choice, max_length -1", lambda tmp: score_multiple_choice(
        MODEL, TOKENIZER, [MultipleChoiceItem("w1", [" w2", " w3"], 0)], max_length=-1), ValueError,
     "`max_length` must be an integer >= 1, got -1"),
    ("a vocabulary given as a string", lambda tmp: check_answer("w1 w2 w3 w4", vocabulary="w1 w2"), TypeError,
     "`vocabulary` must be a set of word forms"),
    ("evaluate_model, seed -1", lambda tmp: evaluate_model(MODEL, ["perplexity"], text_file=__file__, seed=-1),
     ValueError, "`seed` must be an integer >= 0, got -1"),
    ("evaluate_model, a task that is not a name", lambda tmp: evaluate_model(MODEL, ["perplexity", 7]), TypeError,
     "`tasks` must hold task names (strings), got 7"),
    ("lm-eval, max_gen_toks fills max_length", lambda tmp: MaskedDiffusionLM(
        pretrained=MODEL, tokenizer=TOKENIZER, max_length=8, num_samples=2).generate_until(
        [SimpleNamespace(args=("w1 w2 w3", {"max_gen_toks": 8, "until": []}))]), ValueError,
     "`max_gen_toks` is 8: it must be at least 1 and leave room for the context in `max_length` (8 tokens)"),
]  # fmt: skip

CARDS = [
    ("datasets of the wrong type", lambda: build_model_card(MODEL, datasets=5), TypeError, "`datasets` must be"),
    ("a dataset entry without name", lambda: build_model_card(MODEL, datasets=[{"license": "x"}]), TypeError,
     "`datasets[0]` must be a name or a dict with a string 'name'"),
    ("an eval row without metric", lambda: build_model_card(MODEL, eval_results=[{"task": "t", "value": 1}]),
     ValueError, "`eval_results[0]` needs 'task', 'metric' and 'value'"),
    ("a config field of the wrong type", lambda: MaskedDiffusionGenerationConfig(stop_strings=[""]), TypeError,
     "`stop_strings` must be a list of non-empty strings"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "call", "error", "words"), GENERATE, ids=[c[0] for c in GENERATE])
def test_generate_and_infill(what, call, error, words):
    with pytest.raises(error, match=_escaped(words)):
        call()


@pytest.mark.parametrize(("what", "call", "error", "words"), PIPELINE, ids=[c[0] for c in PIPELINE])
def test_pipeline(what, call, error, words):
    with pytest.raises(error, match=_escaped(words)):
        call()


@pytest.mark.parametrize(("what", "call", "error", "words"), COLLATORS, ids=[c[0] for c in COLLATORS])
def test_collators(what, call, error, words):
    with pytest.raises(error, match=_escaped(words)):
        call()


@pytest.mark.parametrize(("what", "call", "error", "words"), TRAINING, ids=[c[0] for c in TRAINING])
def test_training(what, call, error, words, tmp_path):
    with pytest.raises(error, match=_escaped(words)):
        call(tmp_path)
    assert not (tmp_path / "out" / "model.safetensors").exists()  # nothing saved as if fine


@pytest.mark.parametrize(("what", "call", "error", "words"), EVALUATION, ids=[c[0] for c in EVALUATION])
def test_evaluation(what, call, error, words, tmp_path):
    with pytest.raises(error, match=_escaped(words)):
        call(tmp_path)


@pytest.mark.parametrize(("what", "call", "error", "words"), CARDS, ids=[c[0] for c in CARDS])
def test_cards_and_configs(what, call, error, words):
    with pytest.raises(error, match=_escaped(words)):
        call()


def _escaped(words: str) -> str:
    import re

    return re.escape(words)


def test_collators_honour_the_attention_mask():
    """A row's padding (mask 0) is never attended, masked nor scored, whatever the noise draws."""
    for seed in range(20):
        collator = DataCollatorForMaskedDiffusion(tokenizer=TOKENIZER, seed=seed)
        batch = collator([{"input_ids": [12, 13, 14, 0, 0, 0], "attention_mask": [1, 1, 1, 0, 0, 0]},
                          {"input_ids": [15, 16, 17, 18, 19, 20]}])  # fmt: skip
        assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]
        assert (batch["labels"][0, 3:] == -100).all() and (batch["input_ids"][0, 3:] != MASK).all()
        assert batch["num_maskable"].tolist() == [3, 6]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad-input-model")
    MODEL.save_pretrained(path)
    TOKENIZER.save_pretrained(path)
    return path


CLI = [
    ("a missing model folder", ["generate", "--model", "/no/such/model", "w1"], "No model folder at '/no/such/model'"),
    ("a CUDA device on a CPU machine", ["generate", "--device", "cuda:0", "w1"], "no CUDA device"),
    ("history as .txt", ["generate", "--save-history", "out.txt", "w1"], "must end in .gif or .html"),
    ("history in a missing folder", ["generate", "--save-history", "/no/such/x.gif", "w1"], "does not exist"),
    ("a negative limit", ["eval", "--tasks", "perplexity", "--text-file", __file__, "--limit", "-1"],
     "`limit` must be an integer >= 1"),
    ("no task", ["eval", "--tasks", ",", "--text-file", __file__], "`tasks` names no task"),
    ("output in a missing folder", ["eval", "--tasks", "perplexity", "--text-file", __file__, "--output",
                                    "/no/such/out.json"], "does not exist"),
    ("eval with 0 steps", ["eval", "--tasks", "xquad_tr", "--steps", "0"], "--steps must be >= 1, got 0"),
    ("eval with 0 new tokens", ["eval", "--tasks", "xquad_tr", "--max-new-tokens", "0"],
     "--max-new-tokens must be >= 1, got 0"),
    ("a data file with --system", ["generate", "--input", __file__, "--output", "o.jsonl", "--system", "s"],
     "--input takes no prompt and no --chat, --system, --json"),
    ("a data file with --json", ["generate", "--input", __file__, "--output", "o.jsonl", "--json"],
     "--input takes no prompt and no --chat, --system, --json"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "argv", "words"), CLI, ids=[c[0] for c in CLI])
def test_cli(what, argv, words, model_dir, capsys):
    if "--model" not in argv:
        argv = [argv[0], "--model", str(model_dir), *argv[1:]]
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_cli_ctrl_c_exits_quietly_with_130(model_dir, monkeypatch, capsys):
    import transformers_mdlm.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_generate", interrupted)
    assert main(["generate", "w1"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_a_truncated_weights_file_is_named(model_dir, tmp_path):
    import shutil

    from transformers_mdlm import AutoModelForMaskedDiffusion

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match=_escaped(str(weights))):
        AutoModelForMaskedDiffusion.from_pretrained(broken)


@pytest.mark.parametrize("name", ["max_new_tokens", "min_new_tokens"])
def test_infill_warns_that_new_token_counts_do_not_apply(caplog, name):
    from transformers.utils import logging

    logging.enable_propagation()
    MODEL.infill(torch.tensor([[10, MASK, 12]]), steps=1, **{name: 8})
    assert f"`{name}` does not apply" in caplog.text


def test_a_model_card_takes_a_dataset_name():
    card = build_model_card(MODEL, datasets="org/corpus")
    assert "- org/corpus" in str(card).split("---")[1]
