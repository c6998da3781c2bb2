"""The embedded Turkish model: shipped in the package, small, and loading offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from safetensors import safe_open

from transformers_mdlm.presets import default_model_path

TURKISH_LETTERS = re.compile(r"[A-Za-zÇĞİÖŞÜçğıöşü]")


def test_the_default_model_is_installed_and_small():
    path = default_model_path()
    assert path is not None, "src/transformers_mdlm/default_model is missing: run examples/train_embedded_model.py"
    folder = Path(path)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md"} <= names
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 25 * 2**20
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {str(weights.get_slice(k).get_dtype()) for k in weights.keys()} == {"F16"}  # noqa: SIM118 (half precision)
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["mask_token_id"] is not None and generation["stop_on_eos"] is True


def test_pipeline_without_a_model_loads_it_offline_and_writes_turkish():
    script = textwrap.dedent(
        """
        import json, transformers_mdlm
        from transformers import pipeline
        pipe = pipeline("masked-diffusion")
        chat = pipe([{"role": "user", "content": "Türkiye'nin başkenti neresidir?"}], max_new_tokens=16, steps=16)
        text = pipe("İstanbul", max_new_tokens=16, steps=16)[0]["generated_text"]
        print(json.dumps({"dtype": str(pipe.model.dtype), "chat": chat[0]["generated_text"][-1]["content"],
                          "text": text}))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["dtype"] == "torch.float32"
    assert TURKISH_LETTERS.search(report["chat"]) and TURKISH_LETTERS.search(report["text"])


def test_mdlm_generate_uses_it_by_default(capsys):
    from transformers_mdlm.cli import main

    assert main(["generate", "--max-new-tokens", "12", "--steps", "12", "Ankara"]) == 0
    assert TURKISH_LETTERS.search(capsys.readouterr().out)


def test_dual_cache_and_threshold_keep_most_of_the_embedded_models_decoding():
    """On the trained model, the approximate settings stay close to exact decoding (docs/performance.md measures it):
    a broken cache (wrong positions or stale masks) would make its tokens unrelated to the exact ones."""
    import torch
    from transformers import AutoTokenizer

    from transformers_mdlm import AutoModelForMaskedDiffusion

    path = default_model_path()
    model = AutoModelForMaskedDiffusion.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [
        "Türkiye'nin başkenti",
        "Atatürk 1919 yılında Samsun'a çıktığında",
        "Bu akşam yemekte",
        "İstanbul Boğazı",
    ]
    # As `benchmarks/benchmark.py fast-decoding`: no penalty, and the model's n-gram ban off (exact only with one token
    # per step, it would blur the comparison).
    settings = dict(max_new_tokens=64, steps=64, block_length=32, repetition_penalty=1.0, no_repeat_ngram_size=0,
                    stop_on_eos=False, tokenizer=tokenizer, return_dict_in_generate=True)  # fmt: skip
    same = {"dual": 0, "threshold": 0}
    passes = 0
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        exact = model.generate(ids, **settings).sequences[0, ids.shape[1] :]
        cached = model.generate(ids, kv_cache="dual", **settings).sequences[0, ids.shape[1] :]
        fast = model.generate(ids, confidence_threshold=0.05, **settings)
        passes += fast.nfe
        same["dual"] += int((cached == exact).sum())
        same["threshold"] += int((fast.sequences[0, ids.shape[1] :] == exact).sum())
    total = 64 * len(prompts)
    # Model v3: dual 32%, threshold 73% at 0.78 forward passes per token (v1: 57%, 49%, 0.375). Unrelated decodes
    # agree far less: the exact decode of another prompt 5%, the same prompt decoded in random order 13%; a broken
    # cache would fall to that level.
    assert same["dual"] / total >= 0.25
    assert same["threshold"] / total >= 0.5
    assert passes / total <= 0.85


def test_finished_answers_stop_mid_block_with_the_same_tokens():
    """The model's defaults answer in one block of 32 and end at `[/Answer]`: a row stops at the step that commits the
    last token before the stop string, so the passes that would only fill the rest of the block are saved, and the
    answer is the one decoded with the stops off."""
    import torch
    from transformers import AutoTokenizer

    from transformers_mdlm import AutoModelForMaskedDiffusion

    path = default_model_path()
    model = AutoModelForMaskedDiffusion.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    questions = ["Ankara hakkında kısa bir cümle yazın.", "Bir öğretmen hakkında kısa bir cümle yaz."]
    stop = tokenizer.convert_tokens_to_ids("[/Answer]")
    for question in questions:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]  # fmt: skip
        stopped = model.generate(ids, tokenizer=tokenizer, return_dict_in_generate=True)
        full = model.generate(ids, tokenizer=tokenizer, stop_strings=None, stop_on_eos=False,
                              return_dict_in_generate=True, output_history=True)  # fmt: skip
        new, reference = stopped.sequences[0, ids.shape[1] :].tolist(), full.sequences[0, ids.shape[1] :].tolist()
        assert stop in new, "the answer did not end inside the 64 new tokens"
        end = new.index(stop) + 1
        assert new[:end] == reference[:end] and set(new[end:]) <= {tokenizer.pad_token_id}
        # Exactly the passes until the answer up to its stop is committed (it ends inside the first block).
        answer = slice(ids.shape[1], ids.shape[1] + end)
        done = next(
            step
            for step, canvas in enumerate(full.history)
            if (canvas[0, answer] != model.generation_config.mask_token_id).all()
        )
        assert full.nfe == 64 and stopped.nfe == done < 32


def test_an_adapter_on_the_embedded_model_records_its_alias(tmp_path):
    """Not a path into site-packages: `adapter_config.json` names the alias, which loads back anywhere."""
    from peft import PeftModel

    from transformers_mdlm import AutoModelForMaskedDiffusion
    from transformers_mdlm.presets import EMBEDDED_MODEL_ALIAS
    from transformers_mdlm.training import add_lora, diffutron_lora_config

    base = AutoModelForMaskedDiffusion.from_pretrained(default_model_path())
    size = base.num_parameters()
    adapted = add_lora(base, diffutron_lora_config(r=2, lora_alpha=4))
    adapted.save_pretrained(tmp_path / "adapter")
    recorded = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == EMBEDDED_MODEL_ALIAS
    loaded = AutoModelForMaskedDiffusion.from_pretrained(tmp_path / "adapter")
    assert isinstance(loaded, PeftModel)
    assert AutoModelForMaskedDiffusion.from_pretrained(EMBEDDED_MODEL_ALIAS).num_parameters() == size


def test_the_embedded_tokenizer_carries_its_chat_template():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Merhaba"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "[Question]\nMerhaba\n[/Question]\n\n[Answer]\n"
