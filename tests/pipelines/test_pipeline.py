"""pipeline("masked-diffusion"): inputs, batching, trimming, aliases, saving, history, pictures and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image
from transformers import pipeline
from transformers.pipelines.text_generation import ReturnType

import transformers_mdlm
from conftest import EOS, MASK, build_model, make_tiny_tokenizer, modernbert_config
from transformers_mdlm import DIFFUTRON_CHAT_TEMPLATE, MaskedDiffusionPipeline
from transformers_mdlm.visualization import render_denoising

SHORT = dict(max_new_tokens=8, steps=4, block_length=8)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return pipeline("masked-diffusion", model=str(tiny_model_dir))


def test_task_is_registered_and_loads_a_folder(pipe):
    assert isinstance(pipe, MaskedDiffusionPipeline)
    assert pipe.model.generation_config.mask_token_id == MASK


def test_completion_equals_generate(pipe):
    tokenizer = pipe.tokenizer
    out = pipe("w1 w2 w3", return_full_text=False, **SHORT)
    ids = tokenizer("w1 w2 w3", add_special_tokens=False, return_tensors="pt").input_ids
    new = pipe.model.generate(ids, **SHORT)[0, ids.shape[1] :].tolist()
    if EOS in new:
        new = new[: new.index(EOS)]
    assert out == [{"generated_text": " " + tokenizer.decode(new, skip_special_tokens=True)}]  # spaced as decoded
    full = pipe("w1 w2 w3", **SHORT)[0]["generated_text"]  # the default, as in transformers
    assert full == "w1 w2 w3" + out[0]["generated_text"]
    assert full == tokenizer.decode(ids[0].tolist() + new)


def _new_tokens(pipe, ids, **settings):
    """What `generate` writes after `ids`, cut at EOS, as the pipeline reads it."""
    new = pipe.model.generate(torch.tensor([ids], dtype=torch.long), **settings)[0, len(ids) :].tolist()
    return new[: new.index(EOS)] if EOS in new else new


def test_empty_prompt_generates_unconditionally(pipe):
    text = pipe("", **SHORT)[0]["generated_text"]
    expected = pipe.tokenizer.decode(_new_tokens(pipe, [], **SHORT), skip_special_tokens=True)
    assert text == expected and len(text.split()) >= 2


def test_the_pipeline_sends_the_decoding_layout(pipe, monkeypatch):
    """One data path: an uneven batch reaches `generate` right-padded, so the model moves no row."""
    seen = []
    real_generate = pipe.model.generate

    def spy(input_ids, attention_mask=None, **kwargs):
        seen.append(attention_mask.clone())
        return real_generate(input_ids, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(pipe.model, "generate", spy)
    outputs = pipe(["w1 w2 w3 w4", "w5", "w6 w7"], batch_size=3, **SHORT)
    assert seen[0].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]
    monkeypatch.undo()
    assert outputs == [pipe(text, **SHORT) for text in ["w1 w2 w3 w4", "w5", "w6 w7"]]


def test_chat_uses_diffutron_template_and_appends_the_reply(pipe):
    messages = [{"role": "system", "content": "w1"}, {"role": "user", "content": "w2 w3"}]
    out = pipe(messages, **SHORT)[0]["generated_text"]
    prompt = pipe.tokenizer.apply_chat_template(
        messages, chat_template=DIFFUTRON_CHAT_TEMPLATE, add_generation_prompt=True, tokenize=False
    )
    assert prompt == "[SYS]\nw1\n[/SYS]\n\n[Question]\nw2 w3\n[/Question]\n\n[Answer]\n"
    ids = pipe.tokenizer(prompt, add_special_tokens=False).input_ids
    reply = pipe.tokenizer.decode(_new_tokens(pipe, ids, **SHORT), skip_special_tokens=True)
    reply = reply.split("[/Answer]")[0].strip()
    assert out == [*messages, {"role": "assistant", "content": reply}]


def test_a_tokenizer_chat_template_wins(tiny_modernbert):
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}w9"
    pipe = pipeline("masked-diffusion", model=tiny_modernbert, tokenizer=tokenizer)
    seen = []
    pipe([{"role": "user", "content": "w2"}], callback_on_step_end=lambda m, s, t, kw: seen.append(kw), **SHORT)
    assert seen[0]["sequences"][0, :2].tolist() == tokenizer("w2 w9", add_special_tokens=False).input_ids


def test_infilling_fills_every_blank(pipe):
    out = pipe("w1 <mask> w3 <mask> <mask> w6", steps=3)[0]["generated_text"]
    words = out.split()
    assert len(words) == 6 and words[0] == "w1" and words[2] == "w3" and words[5] == "w6"
    assert "<mask>" not in out


def test_batches_equal_single_calls(pipe):
    inputs = ["w1 w2 w3 w4", "w5", [{"role": "user", "content": "w7 w8"}], "w1 <mask> w2 <mask>", "w9 w10 w11"]
    singles = [pipe(item, **SHORT) for item in inputs]
    assert pipe(inputs, batch_size=3, **SHORT) == singles
    assert pipe(inputs, **SHORT) == singles


def test_answers_are_cut_at_eos_and_end_of_answer(pipe):
    tok = pipe.tokenizer
    ids = tok("w1 w2 [/Answer] w3", add_special_tokens=False).input_ids
    meta = {"kind": "chat", "messages": [{"role": "user", "content": "q"}], "end_marker": "[/Answer]",
            "text": "", "continued": False, "trailing_space": False, "sequences": [([20, 21], ids)]}  # fmt: skip
    assert pipe.postprocess({"meta": meta})[0]["generated_text"][-1]["content"] == "w1 w2"
    meta.update(
        kind="completion",
        end_marker=None,
        sequences=[([20, 21], [*tok("w4 w5", add_special_tokens=False).input_ids, EOS, 30])],
    )
    assert pipe.postprocess({"meta": meta}, return_type=ReturnType.NEW_TEXT)[0]["generated_text"] == " w4 w5"


def test_history_and_its_pictures(pipe, tmp_path):
    record = pipe("w1 w2", max_new_tokens=8, steps=8, block_length=4, return_history=True)[0]
    history = record["history"]
    assert len(history) == 9  # the all-mask canvas, then one frame per step
    assert history[0].split()[-8:] == ["<mask>"] * 8
    assert [frame.count("<mask>") for frame in history] == [8, 7, 6, 5, 4, 3, 2, 1, 0]
    ids = pipe.tokenizer("w1 w2", add_special_tokens=False).input_ids
    final = pipe.model.generate(torch.tensor([ids]), max_new_tokens=8, steps=8, block_length=4)[0].tolist()
    shown = [t for t in final if t not in set(pipe.tokenizer.all_special_ids)]
    assert history[-1] == pipe.tokenizer.decode(shown)  # the last frame is the whole final canvas
    gif = tmp_path / "denoising.gif"
    assert render_denoising(history, gif, mask_token="<mask>") == 9
    with Image.open(gif) as image:
        assert image.n_frames == 9
    page = tmp_path / "denoising.html"
    assert render_denoising(history, page, mask_token="<mask>") == 9
    assert json.dumps(history[0]).replace("<", "\\u003c") in page.read_text()  # "<" escaped inside the script
    with pytest.raises(ValueError, match=r"gif or \.html"):
        render_denoising(history, tmp_path / "x.png")


def test_callback_and_progress_bar(pipe, capsys):
    steps = []
    pipe("w1", callback_on_step_end=lambda m, s, t, kw: steps.append(s), **SHORT)
    assert steps == [0, 1, 2, 3]
    pipe("w1", progress_bar=True, **SHORT)
    assert "denoising" in capsys.readouterr().err
    pipe("w1", **SHORT)  # short runs: no bar by default
    assert "denoising" not in capsys.readouterr().err


def test_generation_config_supplies_defaults_and_kwargs_override(tiny_model_dir, tmp_path):
    shutil.copytree(tiny_model_dir, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    config.update(max_new_tokens=5, steps=5)
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps(config))
    pipe = pipeline("masked-diffusion", model=str(tmp_path / "m"))
    record = pipe("w1", return_history=True)[0]
    assert len(record["history"]) == 6
    assert len(pipe("w1", max_new_tokens=3, steps=3, return_history=True)[0]["history"]) == 4


def test_save_pretrained_writes_a_folder_that_loads_again(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    assert "custom_pipelines" not in json.loads((tmp_path / "saved" / "config.json").read_text())
    again = pipeline("masked-diffusion", model=str(tmp_path / "saved"))
    assert again("w1 w2", **SHORT) == pipe("w1 w2", **SHORT)


def test_a_peft_adapter_folder_works(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    base = transformers_mdlm.AutoModelForMaskedDiffusion.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["attn.Wqkv", "mlp.Wo"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.3)
    peft_model.save_pretrained(tmp_path / "adapter")
    pipe = pipeline("masked-diffusion", model=str(tmp_path / "adapter"))
    ids = pipe.tokenizer("w1 w2", add_special_tokens=False, return_tensors="pt").input_ids
    expected = peft_model.eval().generate(ids, **SHORT)[0, 2:].tolist()
    expected = expected[: expected.index(EOS)] if EOS in expected else expected
    assert pipe("w1 w2", return_full_text=False, **SHORT)[0]["generated_text"] == " " + pipe.tokenizer.decode(
        expected, skip_special_tokens=True
    )


def test_aliases_resolve_to_diffutron_offline_from_the_cache(tmp_path, tiny_model_dir):
    """`model="diffutron"` resolves to the Hub id and loads from the local cache with HF_HUB_OFFLINE=1."""
    assert transformers_mdlm.resolve_model_name("diffutron") == "diffutron/DiffutronLM-0.3B-Instruct"
    assert transformers_mdlm.resolve_model_name("diffutron-base") == "diffutron/DiffutronLM-0.3B-Base"
    assert transformers_mdlm.resolve_model_name("diffutron-1st-stage") == "diffutron/DiffutronLM-0.3B-1st-Stage"
    repo = tmp_path / "hub" / "models--diffutron--DiffutronLM-0.3B-Instruct"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "snapshots" / commit / "generation_config.json").unlink()  # as on the Hub: Diffutron ships none
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = textwrap.dedent(
        """
        import json, transformers_mdlm
        from transformers import pipeline
        pipe = pipeline("masked-diffusion", model="diffutron")
        config = pipe.model.generation_config
        out = pipe("w1 w2", max_new_tokens=4, steps=2)
        print(json.dumps({"name": pipe.model.name_or_path, "steps": config.steps, "temperature": config.temperature,
                          "penalty": config.repetition_penalty, "mask": config.mask_token_id, "out": out}))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), HF_HOME=str(tmp_path / "home"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["name"] == "diffutron/DiffutronLM-0.3B-Instruct"
    assert (report["steps"], report["temperature"], report["penalty"]) == (128, 0.1, 1.2)  # the authors' settings
    assert report["mask"] == MASK and isinstance(report["out"][0]["generated_text"], str)


def test_no_model_and_no_embedded_model_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr("transformers_mdlm.pipelines.default_model_path", lambda: None)
    with pytest.raises(ValueError, match='model="diffutron"'):
        pipeline("masked-diffusion")


# --------------------------------------------------------------------------- bad input, before any forward pass


@pytest.fixture
def counted_pipe(tiny_model_dir):
    model = build_model(modernbert_config())
    calls = []
    model.model.register_forward_hook(lambda *args: calls.append(1))
    pipe = pipeline("masked-diffusion", model=model, tokenizer=make_tiny_tokenizer())
    pipe.forward_calls = calls
    return pipe


@pytest.mark.parametrize(
    ("inputs", "error", "pattern"),
    [
        (42, TypeError, "takes a string"),
        ([42, "w1"], TypeError, "takes a string"),
        ([], ValueError, "empty list"),
        ([{"role": "user"}], ValueError, "'content'"),
        ([{"content": "w1"}], ValueError, "'role'"),
        ([{"role": "robot", "content": "w1"}], ValueError, "'system', 'user', 'assistant'"),
        ([{"role": "user", "content": 7}], TypeError, "string 'content'"),
        (" ".join(["w1"] * 125), ValueError, "128 positions"),
    ],
)
def test_bad_inputs(counted_pipe, inputs, error, pattern):
    with pytest.raises(error, match=pattern):
        counted_pipe(inputs, **SHORT)
    assert counted_pipe.forward_calls == []


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"steps": 0}, "`steps`"), ({"block_length": 0}, "`block_length`"), ({"temperature": -1}, "`temperature`"),
     ({"top_p": 2.0}, "`top_p`"), ({"remasking": "x"}, "`remasking`"), ({"cfg_scale": -1}, "`cfg_scale`"),
     ({"confidence_threshold": 0}, "`confidence_threshold`"), ({"max_new_tokens": -1}, "`max_new_tokens`"),
     ({"num_beams": 3}, "num_beams")],
)  # fmt: skip
def test_bad_generation_parameters(counted_pipe, kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        counted_pipe("w1", **kwargs)
    assert counted_pipe.forward_calls == []


def test_a_tokenizer_without_mask_token_is_refused(tiny_modernbert):
    tokenizer = make_tiny_tokenizer()
    tokenizer.mask_token = None
    with pytest.raises(ValueError, match="no mask token"):
        pipeline("masked-diffusion", model=tiny_modernbert, tokenizer=tokenizer)


def test_progress_bar_follows_the_call(tiny_model_dir, capsys):
    """A call's `progress_bar` wins over the pipeline's, and the bar counts this call's steps."""
    shown = pipeline("masked-diffusion", model=str(tiny_model_dir), progress_bar=True)
    shown("w1 w2", max_new_tokens=4, steps=4, progress_bar=False)
    assert "denoising" not in capsys.readouterr().err
    shown("w1 w2", max_new_tokens=4, steps=3)
    assert "/3 [" in capsys.readouterr().err  # a bar over this call's 3 steps (the last redraw may be skipped)
    hidden = pipeline("masked-diffusion", model=str(tiny_model_dir), progress_bar=False)
    hidden("w1 w2", max_new_tokens=16, steps=256, block_length=16)
    assert "denoising" not in capsys.readouterr().err
