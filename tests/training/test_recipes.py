"""`mdlm train pretrain|sft`: the recipes behind the examples, on tiny data."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_tokenizer, small_model
from transformers_mdlm import AutoModelForMaskedDiffusion
from transformers_mdlm.cli import main

COMMON = ["--max_steps", "4", "--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none",
          "--save_strategy", "no", "--learning_rate", "1e-3", "--disable_tqdm", "true"]  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    small_model().save_pretrained(path)
    make_tiny_tokenizer().save_pretrained(path)
    return path


def test_pretraining_with_lora_merges_and_writes_a_card(base, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(f"w{(i + j) % 80}" for j in range(12)) for i in range(60)))
    out = tmp_path / "pretrained"
    code = main(["train", "pretrain", "--model", str(base), "--train_file", str(corpus), "--validation_file",
                 str(corpus), "--block_size", "16", "--lora", "--lora_r", "4", "--lora_alpha", "8",
                 "--output_dir", str(out), *COMMON])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["summary"]["optimizer steps"] == 4 and summary["wall_seconds"] > 0
    assert "eval_loss" in summary["metrics"]
    model = AutoModelForMaskedDiffusion.from_pretrained(out)  # merged: a plain model
    assert type(model).__name__ == "ModernBertForMaskedDiffusion"
    before = AutoModelForMaskedDiffusion.from_pretrained(base)
    assert not torch.equal(model.model.layers[0].mlp.Wi.weight, before.model.layers[0].mlp.Wi.weight)
    card = (out / "README.md").read_text()
    assert "| r | 4 |" in card and "masked diffusion (MDLM)" in card


def test_push_to_hub_pushes_the_final_model(base, tmp_path, monkeypatch):
    # `--push_to_hub` used to save the final model without pushing it (the Trainer pushes checkpoints only).
    from mock_hub import mock_hub

    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(f"w{(i + j) % 80}" for j in range(12)) for i in range(40)))
    out = tmp_path / "pushed"
    with mock_hub() as hub:
        code = main(["train", "pretrain", "--model", str(base), "--train_file", str(corpus), "--block_size", "16",
                     "--lora", "--lora_r", "4", "--lora_alpha", "8", "--output_dir", str(out), "--push_to_hub",
                     "--hub_model_id", "tester/tiny-recipe", *COMMON])  # fmt: skip
    assert code == 0
    files = hub.files("tester/tiny-recipe")
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "training_summary.json"} <= set(files)
    assert "adapter_model.safetensors" not in files  # the merged model, as saved in `output_dir`
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "| r | 4 |" in card and "| optimizer steps | 4 |" in card


def test_progressive_instruction_tuning_filters_tasks(base, tmp_path):
    rows = [{"instruction": f"w{i}", "input": "", "output": f"w{i + 1} w{i + 2}", "task": "a" if i % 2 else "b"}
            for i in range(40)]  # fmt: skip
    data = tmp_path / "instruct.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    assert main(["train", "sft", "--model", str(base), "--train_file", str(data), "--tasks", "a",
                 "--output_dir", str(stage1), *COMMON]) == 0  # fmt: skip
    assert main(["train", "sft", "--model", str(stage1), "--train_file", str(data), "--exclude_tasks", "a",
                 "--output_dir", str(stage2), *COMMON]) == 0  # fmt: skip
    assert (stage2 / "model.safetensors").is_file() and (stage2 / "tokenizer.json").is_file()
    from transformers import AutoTokenizer

    from transformers_mdlm import DIFFUTRON_CHAT_TEMPLATE

    for stage in (stage1, stage2):  # every SFT output carries its chat template
        assert (stage / "chat_template.jinja").read_text() == DIFFUTRON_CHAT_TEMPLATE
        assert (
            AutoTokenizer.from_pretrained(stage)
            .apply_chat_template([{"role": "user", "content": "w1"}], add_generation_prompt=True, tokenize=False)
            .endswith("[Answer]\n")
        )


def test_lora_instruction_tuning_trains_the_named_token_rows_only(base, tmp_path):
    """`lora_trainable_tokens`: the markers' embedding rows train next to the adapter (peft's trainable tokens); every
    other row stays as it was, the decoder stays tied, and the merged model is a plain one."""
    rows = [{"instruction": f"w{i}", "input": "", "output": f"w{i + 1} w{i + 2}"} for i in range(40)]
    data = tmp_path / "instruct.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "sft"
    assert main(["train", "sft", "--model", str(base), "--train_file", str(data), "--lora", "--lora_r", "4",
                 "--lora_alpha", "8", "--lora_trainable_tokens", "[Answer],[/Answer]", "--output_dir", str(out),
                 *COMMON]) == 0  # fmt: skip
    before = AutoModelForMaskedDiffusion.from_pretrained(base).get_input_embeddings().weight
    model = AutoModelForMaskedDiffusion.from_pretrained(out)
    after = model.get_input_embeddings().weight
    tokenizer = make_tiny_tokenizer()
    changed = (after != before).any(dim=-1).nonzero().flatten().tolist()
    assert changed == tokenizer.convert_tokens_to_ids(["[Answer]", "[/Answer]"])
    assert model.get_output_embeddings().weight.data_ptr() == after.data_ptr()


def test_lora_trainable_tokens_are_checked_before_training(base, tmp_path):
    from transformers_mdlm.training.recipe import RecipeArguments, _model_and_tokenizer

    with pytest.raises(ValueError, match="set `lora=True`"):
        RecipeArguments(model=str(base), train_file="x.jsonl", lora_trainable_tokens="[Answer]")
    recipe = RecipeArguments(model=str(base), train_file="x.jsonl", lora=True, lora_trainable_tokens="[Answer],[Fin]")
    with pytest.raises(ValueError, match=r"\['\[Fin\]'\], which are not tokens"):
        _model_and_tokenizer(recipe)


def test_train_reports_bad_input(base, tmp_path, capsys):
    data = tmp_path / "instruct.jsonl"
    data.write_text(json.dumps({"instruction": "w1", "output": "w2", "task": "a"}))
    assert main(["train", "sft", "--model", str(base), "--train_file", str(data), "--tasks", "zzz",
                 "--output_dir", str(tmp_path / "o"), *COMMON]) == 2  # fmt: skip
    assert "name tasks the data does not have: ['zzz']; its tasks are ['a']" in capsys.readouterr().err
    assert main(["train", "pretrain", "--model", str(base), "--train_file", str(tmp_path / "missing.txt"),
                 "--output_dir", str(tmp_path / "o"), *COMMON]) == 2  # fmt: skip
    assert "No such data file" in capsys.readouterr().err
    assert main(["train", "finetune"]) == 2


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "data" / "turkish"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/turkish is not present on this machine")
def test_the_shared_turkish_data_prepares_with_the_embedded_tokenizer():
    from datasets import load_dataset
    from transformers import AutoTokenizer

    from transformers_mdlm import format_instruction_dataset, pack_dataset
    from transformers_mdlm.presets import default_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    corpus = load_dataset("text", data_files=str(SHARED / "corpus" / "validation.txt"), split="train")
    blocks = pack_dataset(corpus, tokenizer, block_size=128)
    assert len(blocks) > 20 and all(len(ids) == 128 for ids in blocks["input_ids"])
    instruct = load_dataset("json", data_files=str(SHARED / "instruct" / "tr_instruct.jsonl"), split="train")
    rows = format_instruction_dataset(instruct.select(range(50)), tokenizer, max_length=256, truncate=True)
    first = rows[0]
    prompt = tokenizer.decode(first["input_ids"][: first["prompt_length"]])
    answer = tokenizer.decode(first["input_ids"][first["prompt_length"] :], skip_special_tokens=True)
    assert prompt.startswith("[Question]") and prompt.rstrip().endswith("[Answer]")
    assert answer.rstrip().endswith("[/Answer]") and instruct[0]["output"].split()[0] in answer


def test_rows_longer_than_the_positions_and_stray_lora_settings_fail_before_training(base, tmp_path, capsys):
    # Each used to be found late: a long row stopped the run at the batch that drew it (maybe hours in), and LoRA
    # settings without --lora were ignored (every weight trained).
    positions = AutoModelForMaskedDiffusion.from_pretrained(base).max_sequence_length()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(f"w{(i + j) % 80}" for j in range(positions + 20)) for i in range(4)))
    out = tmp_path / "out"
    pretrain = ["train", "pretrain", "--model", str(base), "--train_file", str(corpus), "--output_dir", str(out)]
    for layout in ([], ["--line_by_line"]):
        assert main([*pretrain, *layout, "--block_size", str(positions + 8), *COMMON]) == 2
        assert f"more than the model's {positions} positions" in capsys.readouterr().err
    assert main([*pretrain, "--lora_r", "8", *COMMON]) == 2
    assert "['lora_r'] configure a LoRA adapter, which is off" in capsys.readouterr().err
    rows = [
        {"instruction": " ".join(["w5"] * (positions + 10)), "output": "w6"},
        {"instruction": "w7", "output": "w8"},
    ]
    data = tmp_path / "instruct.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    sft = ["train", "sft", "--model", str(base), "--train_file", str(data), "--output_dir", str(out), *COMMON]
    assert main(sft) == 2
    assert "pass `max_length` (at most the positions) with `truncate=True`" in capsys.readouterr().err
    assert not out.exists()  # nothing trained, nothing written
