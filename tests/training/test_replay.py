"""Replay: packed corpus blocks mixed into instruction tuning (`mix_corpus_blocks`, `mdlm train sft --replay_file`)."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from conftest import make_tiny_tokenizer, small_model
from transformers_mdlm import (
    DataCollatorForMaskedDiffusionSFT,
    format_instruction_dataset,
    mix_corpus_blocks,
    pack_dataset,
    tokenize_line_by_line,
)
from transformers_mdlm.cli import main
from transformers_mdlm.training.recipe import RecipeArguments

COMMON = ["--max_steps", "4", "--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none",
          "--save_strategy", "no", "--learning_rate", "1e-3", "--disable_tqdm", "true"]  # fmt: skip


def _instructions(tokenizer, rows=10):
    data = Dataset.from_dict(
        {"instruction": [f"w{i}" for i in range(rows)], "output": [f"w{i + 1} w{i + 2}" for i in range(rows)]}
    )
    return format_instruction_dataset(data, tokenizer)


def _blocks(tokenizer, documents=40):
    corpus = Dataset.from_dict({"text": [" ".join(f"w{(i + j) % 80}" for j in range(10)) for i in range(documents)]})
    return pack_dataset(corpus, tokenizer, block_size=8)


def test_blocks_join_the_instructions_fully_scored_with_their_own_noise():
    tokenizer = make_tiny_tokenizer()
    instructions, blocks = _instructions(tokenizer), _blocks(tokenizer)
    mixed = mix_corpus_blocks(instructions, blocks, ratio=0.5, seed=3)
    assert len(mixed) == 15 and mixed.column_names == ["input_ids", "prompt_length", "sample_id"]
    assert mixed[:10]["input_ids"] == instructions["input_ids"]  # the instruction rows, untouched
    assert mixed[:10]["prompt_length"] == instructions["prompt_length"]
    drawn = mixed.select(range(10, 15))
    assert drawn["prompt_length"] == [0] * 5
    assert all(row in blocks["input_ids"] for row in drawn["input_ids"])
    assert len(set(map(tuple, drawn["input_ids"]))) == 5  # without replacement
    assert sorted(mixed["sample_id"]) == list(range(15))  # distinct ids: every row draws its own noise
    assert mix_corpus_blocks(instructions, blocks, ratio=0.5, seed=3)["input_ids"] == mixed["input_ids"]
    assert mix_corpus_blocks(instructions, blocks, ratio=0.5, seed=4)["input_ids"][10:] != drawn["input_ids"]
    # t = 1 masks every maskable token: a block is scored whole, an instruction row only after its prompt.
    batch = DataCollatorForMaskedDiffusionSFT(tokenizer=tokenizer, time_epsilon=1.0)([mixed[0], mixed[12]])
    scored = (batch["labels"] != -100).sum(dim=1).tolist()
    assert scored == [len(mixed[0]["input_ids"]) - mixed[0]["prompt_length"], 8]


def test_mix_corpus_blocks_bad_input():
    tokenizer = make_tiny_tokenizer()
    instructions, blocks = _instructions(tokenizer), _blocks(tokenizer)
    for ratio in (0, -1, float("nan"), float("inf"), 0.01):  # 0.01 x 10 rows rounds to no block at all
        with pytest.raises(ValueError, match="`ratio`"):
            mix_corpus_blocks(instructions, blocks, ratio=ratio)
    for ratio in (True, "0.5", None):
        with pytest.raises(TypeError, match="`ratio`"):
            mix_corpus_blocks(instructions, blocks, ratio=ratio)
    with pytest.raises(ValueError, match=f"corpus has {len(blocks)}"):
        mix_corpus_blocks(instructions, blocks, ratio=len(blocks))
    with pytest.raises(ValueError, match="prompt_length"):
        mix_corpus_blocks(blocks, blocks, ratio=0.5)
    for kwargs in ({"replay_file": "c.txt"}, {"replay_ratio": 0.5}, {"replay_file": "c.txt", "replay_ratio": -1.0}):
        with pytest.raises(ValueError, match="replay_"):
            RecipeArguments(model="m", train_file="t.jsonl", **kwargs)


def test_sft_recipe_replays_the_corpus(tmp_path, capsys):
    base = tmp_path / "base"
    small_model().save_pretrained(base)
    make_tiny_tokenizer().save_pretrained(base)
    data, corpus = tmp_path / "instruct.jsonl", tmp_path / "corpus.txt"
    data.write_text("\n".join(json.dumps({"instruction": f"w{i}", "output": f"w{i + 1} w{i + 2}"}) for i in range(40)))
    corpus.write_text("\n".join(" ".join(f"w{(i + j) % 80}" for j in range(12)) for i in range(60)))
    epochs = {}
    replay = ["--replay_file", str(corpus), "--replay_ratio", "0.5", "--block_size", "16"]
    for name, extra in (("plain", []), ("replay", replay)):
        out = tmp_path / name
        assert main(["train", "sft", "--model", str(base), "--train_file", str(data), "--output_dir", str(out),
                     *extra, *COMMON]) == 0  # fmt: skip
        epochs[name] = json.loads((out / "training_summary.json").read_text())["summary"]["epochs"]
    # 4 steps x 4 rows: 16 of 40 rows, or 16 of 40 + 20 blocks.
    assert epochs == {"plain": 0.4, "replay": round(16 / 60, 3)}
    # Pretraining reads none of the SFT fields: set, they are refused, not ignored.
    assert main(["train", "pretrain", "--model", str(base), "--train_file", str(corpus), "--replay_file", str(corpus),
                 "--replay_ratio", "0.5", "--output_dir", str(tmp_path / "p"), *COMMON]) == 2  # fmt: skip
    assert "instruction tuning only" in capsys.readouterr().err
    # Without replay, instruction tuning reads no corpus: a block size would be ignored, so it is refused.
    assert main(["train", "sft", "--model", str(base), "--train_file", str(data), "--block_size", "16",
                 "--output_dir", str(tmp_path / "s"), *COMMON]) == 2  # fmt: skip
    assert "['block_size'] shape the corpus rows of pretraining and of SFT replay" in capsys.readouterr().err


def test_tokenize_line_by_line_keeps_each_document_whole_in_windows():
    tokenizer = make_tiny_tokenizer()
    corpus = Dataset.from_dict({"text": ["w1 w2 w3", "", "   ", " ".join(f"w{i}" for i in range(20)), "w5"]})
    rows = tokenize_line_by_line(corpus, tokenizer, max_length=8)
    documents = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("w1 w2 w3", "w5")]
    long_document = tokenizer(corpus[3]["text"], add_special_tokens=False)["input_ids"]
    assert len(long_document) > 16  # three windows
    expected = [documents[0], long_document[:8], long_document[8:16], long_document[16:], documents[1]]
    assert rows["input_ids"] == expected  # no EOS, no joining, blank lines dropped, nothing cut off
    assert rows["sample_id"] == list(range(5))
    with pytest.raises(ValueError, match="no non-empty document"):
        tokenize_line_by_line(Dataset.from_dict({"text": ["", " "]}), tokenizer, max_length=8)
    for bad in (0, True, 2.5):
        with pytest.raises((ValueError, TypeError), match="`max_length`"):
            tokenize_line_by_line(corpus, tokenizer, max_length=bad)
    with pytest.raises(ValueError, match="column"):
        tokenize_line_by_line(corpus.rename_column("text", "body"), tokenizer, max_length=8)
    tokenizer.eos_token = None  # nothing separates documents here, so no EOS is needed (packing needs one)
    assert tokenize_line_by_line(corpus, tokenizer, max_length=8)["input_ids"] == expected
    with pytest.raises(ValueError, match="no EOS token"):
        pack_dataset(corpus, tokenizer, block_size=8)


def test_line_by_line_recipe_trains_and_replays_documents(tmp_path, capsys):
    base = tmp_path / "base"
    small_model().save_pretrained(base)
    make_tiny_tokenizer().save_pretrained(base)
    corpus, data = tmp_path / "corpus.txt", tmp_path / "instruct.jsonl"
    corpus.write_text("\n".join(" ".join(f"w{(i + j) % 80}" for j in range(3 + i % 5)) for i in range(60)))
    data.write_text("\n".join(json.dumps({"instruction": f"w{i}", "output": f"w{i + 1} w{i + 2}"}) for i in range(40)))
    out = tmp_path / "pretrain"
    assert main(["train", "pretrain", "--model", str(base), "--train_file", str(corpus), "--block_size", "16",
                 "--line_by_line", "true", "--output_dir", str(out), *COMMON]) == 0  # fmt: skip
    # 4 steps x 4 rows of 60 documents, one row each.
    assert json.loads((out / "training_summary.json").read_text())["summary"]["epochs"] == round(16 / 60, 3)
    out = tmp_path / "sft"
    assert main(["train", "sft", "--model", str(base), "--train_file", str(data), "--block_size", "16",
                 "--replay_file", str(corpus), "--replay_ratio", "1.0", "--line_by_line", "true",
                 "--output_dir", str(out), *COMMON]) == 0  # fmt: skip
    # 40 instruction rows + 40 documents drawn from the 60.
    assert json.loads((out / "training_summary.json").read_text())["summary"]["epochs"] == round(16 / 80, 3)
    # Without replay, instruction tuning has no corpus rows to shape: the flag is refused, not ignored.
    assert main(["train", "sft", "--model", str(base), "--train_file", str(data), "--line_by_line", "true",
                 "--output_dir", str(tmp_path / "sft2"), *COMMON]) == 2  # fmt: skip
    assert "set `replay_file` too" in capsys.readouterr().err
