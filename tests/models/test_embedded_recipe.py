"""The embedded model's recipe (`examples/train_embedded_model.py`) refuses bad settings before it trains anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_embedded_model.py"


def _run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=120)


def test_too_few_bound_samples_fail_before_any_training(tmp_path):
    work = tmp_path / "work"
    result = _run("--work-dir", str(work), "--bound-samples", "1")
    assert result.returncode == 2
    assert "--bound-samples must be at least 2, got 1" in result.stderr
    assert not work.exists()  # nothing written: it used to fail after the whole pretraining stage


def test_a_resumed_run_keeps_the_precision_its_stages_trained_in(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipe_log.json").write_text(json.dumps({"precision": "bf16"}))
    result = _run("--work-dir", str(work), "--precision", "fp32", "--data-dir", str(tmp_path / "no-data"))
    assert result.returncode == 1
    assert "--precision fp32: the stages in" in result.stderr and "trained in bf16" in result.stderr
    assert json.loads((work / "recipe_log.json").read_text()) == {"precision": "bf16"}


def test_a_resumed_run_refuses_a_tokenizer_setting_its_tokenizer_was_not_trained_with(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    log = {"precision": "bf16", "tokenizer": {"wall_seconds": 2.3, "prepend_scheme": "always"}}  # v8's log: no split
    (work / "recipe_log.json").write_text(json.dumps(log))
    result = _run("--work-dir", str(work), "--precision", "bf16", "--split-newlines", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "'split_newlines': False" in result.stderr and "'split_newlines': True" in result.stderr
    assert "resume with --prepend-scheme always or start a new --work-dir" in result.stderr
    assert json.loads((work / "recipe_log.json").read_text()) == log


def _recipe_script(monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports `embedded_model_data` beside it
    spec = importlib.util.spec_from_file_location("train_embedded_model", SCRIPT)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


def _small_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Ankara Türkiye'nin başkentidir.\nBu akşam yemekte balık var.\n" * 20, encoding="utf-8")
    return corpus


def test_the_recipes_tokenizer_can_put_no_word_start_after_the_chat_markers(tmp_path, monkeypatch):
    """`--prepend-scheme first`: a "▁" before the text's first word only. With "always" every chat marker was followed
    by a lone "▁", 7 tokens between a question and its answer instead of 5 (docs/evaluation.md: that gap decides how
    much of the question the embedded model reads)."""
    from transformers import PreTrainedTokenizerFast

    recipe, corpus = _recipe_script(monkeypatch), _small_corpus(tmp_path)
    prompts = {}
    for scheme in ("first", "always"):
        recipe.train_tokenizer(corpus, tmp_path / scheme, vocab_size=120, prepend_scheme=scheme)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / scheme)
        tokenizer.add_tokens(list(recipe.CHAT_MARKERS))
        chat = tokenizer("[Question]\nBu\n[/Question]\n\n[Answer]\n")["input_ids"]
        prompts[scheme] = tokenizer.convert_ids_to_tokens(chat)
        text = tokenizer("Bu akşam")["input_ids"]
        assert tokenizer.convert_ids_to_tokens(text)[0].startswith("▁")  # plain text starts a word, as in pretraining
        assert tokenizer.decode(text) == "Bu akşam"
    assert prompts["first"][-5:] == ["[/Question]", "\n", "\n", "[Answer]", "\n"] and "▁" not in prompts["first"]
    assert prompts["always"][-7:] == ["[/Question]", "▁", "\n", "\n", "[Answer]", "▁", "\n"]  # model v8's


def test_the_recipes_tokenizer_gives_a_word_after_a_newline_its_corpus_pieces(tmp_path, monkeypatch):
    """`--split-newlines`: a newline is a token of its own and the word after it starts with "▁", so the first and last
    words of a chat question or answer are cut as in the corpus (pretraining rows have no newlines). Without the split
    (the default; models v8 and v9) "Bu" after a newline became letters and the word before one took the newline in."""
    from transformers import PreTrainedTokenizerFast

    recipe, corpus = _recipe_script(monkeypatch), _small_corpus(tmp_path)
    tokens = {}
    for split in (True, False):
        out = tmp_path / str(split)
        recipe.train_tokenizer(corpus, out, vocab_size=120, split_newlines=split)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
        tokenizer.add_tokens(list(recipe.CHAT_MARKERS))
        plain = tokenizer.convert_ids_to_tokens(tokenizer("Bu akşam var.")["input_ids"])
        chat = tokenizer("[Question]\nBu akşam var.\n[/Question]\n\n[Answer]\n")["input_ids"]
        tokens[split] = (plain, tokenizer.convert_ids_to_tokens(chat))
        answer = tokenizer("Bu akşam var.\n")["input_ids"]
        assert tokenizer.decode(answer) == "Bu akşam var.\n"  # an answer decodes as written, newline included
    plain, chat = tokens[True]
    assert chat[2 : 2 + len(plain)] == plain  # the question's words are the plain text's pieces
    assert chat[1] == chat[-1] == "▁\n" and chat.count("▁\n") == 5
    plain, chat = tokens[False]
    assert chat[2 : 2 + len(plain)] != plain and "▁Bu" not in chat  # models v8/v9: "Bu" after "\n" had no "▁"


def test_the_direct_chat_template_ends_an_answer_on_a_token_the_prompt_does_not_hold(tmp_path, monkeypatch):
    """`--chat-template direct`: an SFT answer ends with `[/Answer]` right after its last word.
    With Diffutron's template it ends with a newline first, a token every chat prompt holds 5 times, which the
    repetition penalty pushed down in run v10 (a stray piece took its place: "şehridir.KÜR")."""
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast

    from transformers_mdlm.training import format_instruction_dataset

    recipe, corpus = _recipe_script(monkeypatch), _small_corpus(tmp_path)
    recipe.train_tokenizer(corpus, tmp_path / "tok", vocab_size=120, split_newlines=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")
    tokenizer.add_tokens(list(recipe.CHAT_MARKERS))
    rows = Dataset.from_list([{"instruction": "Bu akşam ne var?", "output": "Bu akşam balık var."}])
    answers = {}
    for name in ("direct", "diffutron"):
        row = format_instruction_dataset(rows, tokenizer, chat_template=recipe.CHAT_TEMPLATES[name])[0]
        prompt = tokenizer.convert_ids_to_tokens(row["input_ids"][: row["prompt_length"]])
        answers[name] = tokenizer.convert_ids_to_tokens(row["input_ids"][row["prompt_length"] :])
        assert prompt[-2:] == ["[Answer]", "▁\n"] and prompt.count("▁\n") == 5  # the same prompt for both
    words = tokenizer.convert_ids_to_tokens(tokenizer("Bu akşam balık var.")["input_ids"])
    assert answers["direct"] == [*words, "[/Answer]", "<eos>"]
    assert answers["diffutron"] == [*words, "▁\n", "[/Answer]", "<eos>"]


def test_the_decoding_sweep_scores_an_answer_with_its_templates_end_marker(tmp_path, monkeypatch):
    """`tune_embedded_decoding.py` scored every answer followed by "\\n[/Answer]" (Diffutron's ending), whatever the
    model's template; a model tuned with the direct template was scored on an ending it never learnt."""
    import importlib.util

    from transformers import PreTrainedTokenizerFast

    recipe, corpus = _recipe_script(monkeypatch), _small_corpus(tmp_path)
    spec = importlib.util.spec_from_file_location(
        "tune_embedded_decoding", SCRIPT.parent / "tune_embedded_decoding.py"
    )
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    recipe.train_tokenizer(corpus, tmp_path / "tok", vocab_size=120, split_newlines=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")
    tokenizer.add_tokens(list(recipe.CHAT_MARKERS))
    chat = [{"role": "user", "content": "Bu akşam ne var?"}]
    words = tokenizer.convert_ids_to_tokens(tokenizer("Bu akşam balık var.")["input_ids"])
    for name, ending in (("direct", ["[/Answer]"]), ("diffutron", ["▁\n", "[/Answer]"])):
        tokenizer.chat_template = recipe.CHAT_TEMPLATES[name]
        prompt_ids, answer_ids = tune.chat_ids(tokenizer, chat, "Bu akşam balık var.")
        assert tokenizer.convert_ids_to_tokens(prompt_ids)[-2:] == ["[Answer]", "▁\n"]
        assert tokenizer.convert_ids_to_tokens(answer_ids) == [*words, *ending]


def test_a_resumed_run_refuses_a_chat_template_its_sft_start_point_was_not_made_with(tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    recipe, corpus = _recipe_script(monkeypatch), _small_corpus(tmp_path)
    start = tmp_path / "pretrain_lines-chat"
    recipe.train_tokenizer(corpus, start, vocab_size=120, split_newlines=True)
    (start / "config.json").write_text("{}")  # the stage's marker: the start point exists
    # A start point made before --chat-template holds no template; its rows were rendered with Diffutron's.
    assert PreTrainedTokenizerFast.from_pretrained(start).chat_template is None
    assert recipe.chat_stage(tmp_path / "unused", start, "diffutron") == start
    tokenizer = PreTrainedTokenizerFast.from_pretrained(start)
    tokenizer.chat_template = recipe.CHAT_TEMPLATES["diffutron"]
    tokenizer.save_pretrained(start)
    assert recipe.chat_stage(tmp_path / "unused", start, "diffutron") == start
    with pytest.raises(SystemExit, match="has the 'diffutron' chat template, this run asks for 'direct'; resume with "
                       "--chat-template diffutron"):  # fmt: skip
        recipe.chat_stage(tmp_path / "unused", start, "direct")


def _card_script(monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location(
        "evaluate_embedded_model", SCRIPT.parent / "evaluate_embedded_model.py"
    )
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    return card


def test_the_shipped_card_is_built_from_the_shipped_recipe_log(monkeypatch):
    """The log kept beside the card rebuilds its training table on a checkout without the recipe's work folder."""
    card = _card_script(monkeypatch)
    log = json.loads(card.SHIPPED_LOG.read_text())
    text = (ROOT / "model_cards" / "turkish-mdlm-embedded.md").read_text(encoding="utf-8")
    for setting, value in card.training_table(log).items():
        assert f"| {setting} | {value} |" in text
    assert card.describe(log) in text
    # The log's own total wins (the rebuilt v8 log keeps the card's 143 min; its bounds' times were not kept).
    assert card.total_minutes({"total_wall_seconds": 600, "pretrain": {"wall_seconds": 60}}) == 10
    assert card.total_minutes({"pretrain": {"wall_seconds": 60}, "bound_after_pretrain": {"seconds": 60}}) == 2


def test_the_card_takes_its_machine_and_wall_times_from_the_recipes_log(monkeypatch):
    card = _card_script(monkeypatch)
    bound = {"bits_per_character": 2.2, "ratio_to_unigram": 0.74, "num_samples": 8, "seconds": 60.0}
    log = {"precision": "bf16", "machine": "Intel Xeon (AVX512; AMX-BF16), 2 cores", "tokenizer": {"wall_seconds": 3},
           "pretrain": {"wall_seconds": 3000, "train_loss": 5.0}, "bound_after_pretrain": bound,
           "sft2": {"wall_seconds": 537}, "sft_lora": {"r": 32, "alpha": 64}}  # fmt: skip
    table = card.training_table(log)
    assert table["total wall time"] == (
        "60 min on Intel Xeon (AVX512; AMX-BF16), 2 cores, bf16 autocast (with the bound measurements)"
    )
    assert table["wall time per stage (s)"] == "tokenizer 3, pretrain 3000, sft2 537"
    assert table["bound after pretrain (bits/char, 8 samples)"] == "2.200 (0.740x unigram)"
    assert "trains in 60 minutes (Intel Xeon (AVX512; AMX-BF16), 2 cores, bf16 autocast;" in card.describe(log)
    del log["machine"]  # logs of model v8 and earlier: trained on the project's AMD EPYC
    assert "on AMD EPYC with AVX512-BF16, 2 cores, bf16 autocast" in card.training_table(log)["total wall time"]
    assert "float32" in card.training_machine({"precision": "fp32", "machine": "AMD EPYC (AVX2; ...)"})
