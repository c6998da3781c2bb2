"""Publishing: model.push_to_hub and trainer.push_to_hub render the model card, against a local mock of the Hub."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load

from conftest import args, counting_dataset, make_tiny_tokenizer, small_model
from mock_hub import mock_hub
from transformers_mdlm import MaskedDiffusionTrainer
from transformers_mdlm.model_card import build_model_card
from transformers_mdlm.training import add_lora, diffutron_lora_config


@pytest.fixture(autouse=True)
def fake_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_model_push_to_hub_uploads_weights_configs_and_the_card():
    model = small_model()
    with mock_hub() as hub:
        model.push_to_hub(
            "tester/tiny-mdlm",
            datasets=[{"name": "Turkish corpus (UD treebanks)", "license": "CC BY-SA 4.0"}],
            eval_results=[{"task": "perplexity", "metric": "bits per character", "value": 1.23}],
            language="tr",
            license="cc-by-sa-4.0",
        )
    files = hub.files("tester/tiny-mdlm")
    assert {"config.json", "generation_config.json", "model.safetensors", "README.md"} <= set(files)
    weights = load(files["model.safetensors"])
    assert torch.equal(weights["model.embeddings.tok_embeddings.weight"], model.model.embeddings.tok_embeddings.weight)
    assert json.loads(files["generation_config.json"])["mask_token_id"] == 4
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "license: cc-by-sa-4.0" in card and "- masked-diffusion" in card
    assert 'pipeline("masked-diffusion", model="tester/tiny-mdlm")' in card
    assert "| Turkish corpus (UD treebanks) | CC BY-SA 4.0 | training |" in card
    assert "| perplexity | bits per character | 1.23 |" in card
    assert "| `steps` | 128 |" in card


def test_trainer_push_to_hub_writes_the_training_card(tmp_path):
    model = add_lora(small_model(), diffutron_lora_config(r=4, lora_alpha=8))
    trainer = MaskedDiffusionTrainer(
        model=model, train_dataset=counting_dataset(rows=64), processing_class=make_tiny_tokenizer(),
        args=args(tmp_path, max_steps=3, hub_model_id="tester/tiny-lora", logging_steps=1),
    )  # fmt: skip
    trainer.train()
    with mock_hub() as hub:
        trainer.push_to_hub(
            datasets=[{"name": "counting language", "license": "CC0"}], base_model="tester/tiny-base", language="tr"
        )
    files = hub.files("tester/tiny-lora")
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files and "README.md" in files
    card = files["README.md"].decode()
    assert "base_model: tester/tiny-base" in card
    assert "| r | 4 |" in card and "| alpha | 8 |" in card and "attn.Wqkv" in card  # LoRA settings from the model
    assert "| optimizer steps | 3 |" in card
    assert "masked diffusion (MDLM), linear schedule, elbo weighting, sequence normalisation" in card
    assert (tmp_path / "out" / "README.md").read_text() == card


def test_card_renders_without_optional_sections():
    card = str(build_model_card(small_model()))
    assert "No evaluation results were recorded" in card and "## LoRA" not in card


def _usage_snippet(card_text: str) -> str:
    return card_text.split("## Usage")[1].split("```python\n")[1].split("```")[0]


@pytest.mark.parametrize("which", ["embedded", "local folder"])
def test_the_cards_usage_snippet_runs_as_written(tiny_model_dir, tmp_path, which):
    from transformers_mdlm.presets import DEFAULT_MODEL_DIR

    if which == "embedded":
        text = (DEFAULT_MODEL_DIR / "README.md").read_text()
    else:
        from transformers_mdlm import AutoModelForMaskedDiffusion

        model = AutoModelForMaskedDiffusion.from_pretrained(tiny_model_dir)
        model.generation_config.update(max_new_tokens=16, steps=8)  # the tiny model has 128 positions
        model.save_pretrained(tmp_path)
        make_tiny_tokenizer().save_pretrained(tmp_path)
        text = str(build_model_card(model, repo_id=str(tmp_path)))
    snippet = _usage_snippet(text)
    assert "pipeline(" in snippet
    lines = snippet.strip().splitlines()
    namespace: dict = {}
    exec("\n".join([*lines[:-1], "result = " + lines[-1]]), namespace)  # the snippet as written
    assert isinstance(namespace["result"], list) and "generated_text" in namespace["result"][0]
    metadata = text.split("---\n")[1]
    assert "library_name: transformers-mdlm" in metadata and "library_name: transformers\n" not in metadata


def test_push_to_hub_takes_one_tag_as_a_string_and_refuses_card_arguments_with_a_card():
    model = small_model()
    with mock_hub() as hub:
        model.push_to_hub("tester/x", tags="turkish")
        card = hub.files("tester/x")["README.md"].decode()
        metadata = card.split("---")[1]
        assert "- turkish" in metadata and "\n- t\n" not in metadata  # was split into letters
        with pytest.raises(TypeError, match=r"\['license'\] build the model card, but `model_card=` is given"):
            model.push_to_hub("tester/x", model_card=build_model_card(model), license="apache-2.0")
    with pytest.raises(TypeError, match="`tags` must be a string or a list of strings"):
        build_model_card(model, tags=[1])


def test_card_datasets_keep_hub_ids_and_leave_out_local_paths():
    card = str(build_model_card(small_model(), datasets=["data/train.jsonl", "./corpus", "org/turkish", "My corpus",
                                                         {"name": "WikiText", "hub_id": "wikitext"}]))  # fmt: skip
    metadata = card.split("---")[1]
    assert "- org/turkish" in metadata and "- wikitext" in metadata
    assert "train.jsonl" not in metadata and "./corpus" not in metadata
    # An evaluation set stays out of the metadata (the Hub reads it as training data) but keeps its row in the card.
    card = str(build_model_card(small_model(), datasets=[{"name": "XCOPA", "hub_id": "cambridgeltl/xcopa",
                                                          "license": "CC BY 4.0", "use": "evaluation only"}]))  # fmt: skip
    assert "cambridgeltl/xcopa" not in card.split("---")[1] and "XCOPA" in card.split("---", 2)[2]


def test_the_lora_table_names_the_active_adapter_and_keeps_a_regex_whole():
    from peft import LoraConfig

    model = add_lora(small_model(), LoraConfig(r=2, lora_alpha=4, target_modules=["Wqkv"]))
    model.add_adapter("tuned", LoraConfig(r=8, lora_alpha=16, target_modules=["Wo"]))
    model.set_adapter("tuned")
    card = str(build_model_card(model))
    assert "| r | 8 |" in card and "| alpha | 16 |" in card and "| target modules | Wo |" in card
    regex = add_lora(small_model(), LoraConfig(r=2, target_modules=r".*\.attn\.Wqkv"))
    assert "| target modules | .*\\.attn\\.Wqkv |" in str(build_model_card(regex))


def test_the_trainers_card_names_its_base_its_dataset_tags_and_its_repository(tmp_path):
    model = small_model()
    model.config._name_or_path = "diffutron/DiffutronLM-0.3B-Base"  # as loaded from the Hub
    trainer = MaskedDiffusionTrainer(model=model, args=args(tmp_path, max_steps=1), train_dataset=counting_dataset(8),
                                     processing_class=make_tiny_tokenizer())  # fmt: skip
    trainer.create_model_card(dataset_tags="wikitext", dataset="WikiText")
    metadata = (tmp_path / "out" / "README.md").read_text().split("---")[1]
    assert "base_model: diffutron/DiffutronLM-0.3B-Base" in metadata and "- wikitext" in metadata
    trainer.hub_model_id = "tester/out"  # what `push_to_hub` sets before it writes the card
    trainer.create_model_card()
    assert 'model="tester/out"' in (tmp_path / "out" / "README.md").read_text()
    # A `base_model` given to the card wins over the Hub id the model was loaded from; two different bases are refused.
    trainer.create_model_card(base_model="org/real-base")
    assert "base_model: org/real-base" in (tmp_path / "out" / "README.md").read_text().split("---")[1]
    with pytest.raises(ValueError, match="name the same card field"):
        trainer.create_model_card(finetuned_from="org/a", base_model="org/b")
