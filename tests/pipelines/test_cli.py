"""The `mdlm` command: one-shot generation and the interactive chat."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image
from transformers import pipeline

from conftest import EOS, build_model, make_tiny_tokenizer, modernbert_config
from transformers_mdlm.cli import build_parser, main, run_chat

SHORT = ["--max-new-tokens", "6", "--steps", "3", "--block-length", "6"]
SETTINGS = dict(max_new_tokens=6, steps=3, block_length=6)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    from transformers import pipeline

    return pipeline("masked-diffusion", model=str(tiny_model_dir))


def test_generate_from_arguments(tiny_model_dir, pipe, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), *SHORT, "w1", "w2"]) == 0
    assert capsys.readouterr().out == pipe("w1 w2", return_full_text=False, **SETTINGS)[0]["generated_text"] + "\n"


def test_generate_passes_the_ngram_ban_on(tiny_model_dir, pipe, capsys):
    settings = dict(max_new_tokens=12, steps=12)
    args = ["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "12", "--steps", "12"]
    assert main([*args, "--no-repeat-ngram-size", "1", "w1"]) == 0
    banned = pipe("w1", return_full_text=False, no_repeat_ngram_size=1, **settings)[0]["generated_text"]
    assert capsys.readouterr().out == banned + "\n"
    assert banned != pipe("w1", return_full_text=False, **settings)[0]["generated_text"]  # the ban changed the text


def test_generate_from_stdin_as_json_with_history(tiny_model_dir, pipe, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("w1 w2 w3"))
    gif = tmp_path / "run.gif"
    assert main(["generate", "--model", str(tiny_model_dir), *SHORT, "--json", "--save-history", str(gif)]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record == {"generated_text": pipe("w1 w2 w3", return_full_text=False, **SETTINGS)[0]["generated_text"]}
    with Image.open(gif) as image:
        assert image.n_frames == 4  # the all-mask canvas + 3 steps
    assert "4 frames" in captured.err


def test_generate_chat_mode_and_seeded_sampling_is_reproducible(tiny_model_dir, capsys):
    args = ["generate", "--model", str(tiny_model_dir), *SHORT, "--chat", "--temperature", "1.0", "--seed", "3", "w5"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    outputs = {first}
    for seed in ("4", "5", "6"):
        args[args.index("--seed") + 1] = seed
        assert main(args) == 0
        outputs.add(capsys.readouterr().out)
    assert len(outputs) > 1  # the seed really drives the sampling


def test_generate_reports_bad_arguments(tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--steps", "0", "w1"]) == 2
    assert "`steps`" in capsys.readouterr().err
    import transformers_mdlm.presets

    real = transformers_mdlm.presets.default_model_path
    transformers_mdlm.presets.default_model_path = lambda: None
    try:
        assert main(["generate", "w1"]) == 2
    finally:
        transformers_mdlm.presets.default_model_path = real
    assert "--model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--remasking", "best", "w1"])
    # The flags of `--input` are refused for a single prompt instead of being ignored.
    assert main(["generate", "--model", str(tiny_model_dir), "--batch-size", "0", "w1"]) == 2
    assert "--batch-size goes with --input" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_model_dir), "--column", "q", "--id-column", "k", "w1"]) == 2
    assert "--column, --id-column go with --input" in capsys.readouterr().err


def test_chat_keeps_the_conversation(tiny_model_dir, monkeypatch):
    import transformers_mdlm.cli as cli

    real_load = cli._load_pipeline
    conversations = []

    class RecordingPipeline:
        def __init__(self, pipe):
            self.pipe, self.tokenizer, self.model = pipe, pipe.tokenizer, pipe.model

        def __call__(self, messages, **kwargs):
            conversations.append([dict(m) for m in messages])
            return self.pipe(messages, **kwargs)

    def recording_load(args):
        return RecordingPipeline(real_load(args))

    monkeypatch.setattr(cli, "_load_pipeline", recording_load)
    lines = iter(["w1 w2", "w4", "/reset", "w3", "/exit"])
    args = build_parser().parse_args(["chat", "--model", str(tiny_model_dir), "--system", "w9", *SHORT])
    assert run_chat(args, input_fn=lambda prompt: next(lines)) == 0
    system = {"role": "system", "content": "w9"}
    assert conversations[0] == [system, {"role": "user", "content": "w1 w2"}]
    assert conversations[1][:2] == conversations[0] and conversations[1][2]["role"] == "assistant"
    assert conversations[1][3] == {"role": "user", "content": "w4"}
    assert conversations[2] == [system, {"role": "user", "content": "w3"}]  # after /reset


def test_chat_ends_on_end_of_input(tiny_model_dir):
    args = build_parser().parse_args(["chat", "--model", str(tiny_model_dir), *SHORT])

    def no_input(prompt):
        raise EOFError

    assert run_chat(args, input_fn=no_input) == 0


def test_generate_accepts_the_dual_cache(capsys):
    args = build_parser().parse_args(["generate", "--kv-cache", "dual", "x"])
    assert args.kv_cache == "dual"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--kv-cache", "prefix", "x"])
    assert "invalid choice: 'prefix'" in capsys.readouterr().err


def test_a_piped_prompt_ends_at_its_newline(tiny_model_dir, pipe, capsys, monkeypatch):
    """`echo "w1 w2" | mdlm generate --json`: the newline echo adds is not part of the prompt."""
    monkeypatch.setattr("sys.stdin", io.StringIO("w1 w2\n"))
    assert main(["generate", "--model", str(tiny_model_dir), *SHORT, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["generated_text"] == pipe("w1 w2", return_full_text=False, **SETTINGS)[0]["generated_text"]
    assert record["generated_text"].strip()


def test_generate_passes_min_new_tokens_on(tmp_path, capsys):
    model = build_model(modernbert_config())
    with torch.no_grad():
        model.decoder.bias[EOS] = 100.0  # every answer would end at once
    model.save_pretrained(tmp_path)
    make_tiny_tokenizer().save_pretrained(tmp_path)
    pipe = pipeline("masked-diffusion", model=str(tmp_path))
    settings = dict(max_new_tokens=12, steps=12)
    assert pipe("w1", return_full_text=False, **settings)[0]["generated_text"] == ""
    longer = pipe("w1", return_full_text=False, min_new_tokens=5, **settings)[0]["generated_text"]
    assert len(longer.split()) == 5  # five tokens of the tiny word-level vocabulary, then EOS
    args = ["generate", "--model", str(tmp_path), "--max-new-tokens", "12", "--steps", "12", "--min-new-tokens", "5"]
    assert main([*args, "w1"]) == 0
    assert capsys.readouterr().out == longer + "\n"
