"""AutoModelForMaskedDiffusion: architectures, PreTrainedModel features, checkpoints and peft adapters."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, ModernBertForMaskedLM

from conftest import ARCHITECTURE_CONFIGS, MASK, build_model, modernbert_config
from transformers_mdlm import (
    AutoModelForMaskedDiffusion,
    MaskedDiffusionGenerationConfig,
    ModernBertForMaskedDiffusion,
)

EXPECTED_CLASSES = {
    "modernbert": "ModernBertForMaskedDiffusion",
    "bert": "BertForMaskedDiffusion",
    "roberta": "RobertaForMaskedDiffusion",
    "xlm-roberta": "XLMRobertaForMaskedDiffusion",
    "distilbert": "DistilBertForMaskedDiffusion",
}


@pytest.mark.parametrize("arch", list(ARCHITECTURE_CONFIGS))
def test_every_architecture_generates_and_its_head_matches_forward(arch):
    model = build_model(ARCHITECTURE_CONFIGS[arch]())
    assert type(model).__name__ == EXPECTED_CLASSES[arch]
    assert isinstance(model.generation_config, MaskedDiffusionGenerationConfig)
    ids = torch.tensor([[10, 11, 12, MASK, 14, 15]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        split = model.compute_logits(model.compute_hidden_states(ids, None))
    torch.testing.assert_close(split, expected)
    # Random models may propose the mask id itself; suppress it so that every mask gets a real token.
    out = model.generate(ids[:, :3], max_new_tokens=8, steps=4, block_length=4, suppress_tokens=[MASK])
    assert out.shape == (1, 11) and not (out == MASK).any()
    filled = model.infill(ids, steps=1, suppress_tokens=[MASK])
    assert filled[0, 3] != MASK


@pytest.mark.parametrize(("arch", "limit"), [("bert", 64), ("roberta", 65), ("distilbert", 64), ("modernbert", 128)])
def test_position_limit_is_enforced(arch, limit):
    model = build_model(ARCHITECTURE_CONFIGS[arch]())
    assert model.max_sequence_length() == limit
    model.generate(torch.tensor([[10, 11]]), max_new_tokens=limit - 2, steps=1, block_length=limit)
    with pytest.raises(ValueError, match=f"{limit} positions"):
        model.generate(torch.tensor([[10, 11]]), max_new_tokens=limit - 1, steps=1)


def test_save_and_reload_round_trip(tmp_path, tiny_modernbert):
    tiny_modernbert.generation_config.steps = 8
    try:
        tiny_modernbert.save_pretrained(tmp_path)
    finally:
        tiny_modernbert.generation_config.steps = 128
    saved_generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved_generation["mask_token_id"] == MASK and saved_generation["steps"] == 8
    loaded = AutoModelForMaskedDiffusion.from_pretrained(tmp_path)
    assert isinstance(loaded, ModernBertForMaskedDiffusion)
    assert loaded.generation_config.steps == 8 and loaded.generation_config.mask_token_id == MASK
    original, reloaded = tiny_modernbert.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[k], reloaded[k]) for k in original)
    ids = torch.tensor([[10, 11, 12]])
    assert torch.equal(
        loaded.generate(ids, max_new_tokens=8, block_length=8),
        tiny_modernbert.generate(ids, max_new_tokens=8, steps=8),
    )
    # The folder stays a plain masked-LM checkpoint for transformers alone.
    plain = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert type(plain).__name__ == "ModernBertForMaskedLM"


def test_a_diffutron_shaped_checkpoint_loads_without_remote_code_and_saves_back_identically(tmp_path, tiny_tokenizer):
    """A plain ModernBertForMaskedLM folder with its tokenizer (what Diffutron publishes) loads and saves unchanged."""
    torch.manual_seed(0)
    source = ModernBertForMaskedLM(modernbert_config()).eval()
    source.save_pretrained(tmp_path / "diffutron-like")
    tiny_tokenizer.save_pretrained(tmp_path / "diffutron-like")
    assert not (tmp_path / "diffutron-like" / "generation_config.json").exists()

    model = AutoModelForMaskedDiffusion.from_pretrained(tmp_path / "diffutron-like")
    assert isinstance(model, ModernBertForMaskedDiffusion)
    assert model.generation_config.mask_token_id == tiny_tokenizer.mask_token_id  # read from the tokenizer
    out = model.generate(torch.tensor([[10, 11]]), max_new_tokens=4, steps=4, block_length=4)
    assert not (out == MASK).any()

    model.save_pretrained(tmp_path / "saved-back")
    before = load_file(tmp_path / "diffutron-like" / "model.safetensors")
    after = load_file(tmp_path / "saved-back" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_choice_is_kept(tmp_path, tiny_modernbert, dtype):
    tiny_modernbert.save_pretrained(tmp_path)
    model = AutoModelForMaskedDiffusion.from_pretrained(tmp_path, dtype=dtype)
    assert model.dtype == dtype
    out = model.generate(torch.tensor([[10, 11]]), max_new_tokens=4, steps=2, block_length=4)
    assert out.shape == (1, 6) and not (out == MASK).any()


def test_attention_implementation_choice_is_kept(tmp_path, tiny_modernbert):
    tiny_modernbert.save_pretrained(tmp_path)
    eager = AutoModelForMaskedDiffusion.from_pretrained(tmp_path, attn_implementation="eager")
    sdpa = AutoModelForMaskedDiffusion.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    ids = torch.tensor([[10, 11, 12, 4, 4, 4]])
    with torch.no_grad():
        torch.testing.assert_close(eager(ids).logits, sdpa(ids).logits, atol=1e-4, rtol=1e-4)


def _lora_model(base):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["attn.Wqkv", "attn.Wo", "mlp.Wi", "mlp.Wo", "head.dense"])
    peft_model = get_peft_model(base, config)
    with torch.no_grad():  # LoRA starts as the identity; move it so that the adapter visibly matters
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5, generator=torch.Generator().manual_seed(len(name)))
    return peft_model.eval()


def test_a_peft_adapter_folder_loads_onto_its_base(tmp_path):
    base = build_model(modernbert_config())
    base.save_pretrained(tmp_path / "base")
    peft_model = _lora_model(AutoModelForMaskedDiffusion.from_pretrained(tmp_path / "base"))
    peft_model.save_pretrained(tmp_path / "adapter")
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tmp_path / "base")

    loaded = AutoModelForMaskedDiffusion.from_pretrained(tmp_path / "adapter")
    assert isinstance(loaded, PeftModel)
    ids = torch.tensor([[10, 11, 12]])
    settings = dict(max_new_tokens=8, steps=8, block_length=8)
    with_adapter = loaded.generate(ids, **settings)
    assert torch.equal(with_adapter, peft_model.generate(ids, **settings))
    assert not torch.equal(with_adapter, base.generate(ids, **settings))
    assert torch.equal(
        loaded.infill(torch.tensor([[10, MASK, 12]]), steps=1),
        peft_model.infill(torch.tensor([[10, MASK, 12]]), steps=1),
    )

    merged = loaded.merge_and_unload()
    assert isinstance(merged, ModernBertForMaskedDiffusion)
    assert torch.equal(merged.generate(ids, **settings), with_adapter)


def test_an_adapter_loads_the_base_revision_it_names_and_its_own_decoding_settings(tmp_path, monkeypatch):
    from transformers import pipeline
    from transformers.models.auto import auto_factory

    from conftest import make_tiny_tokenizer

    build_model(modernbert_config()).save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(AutoModelForMaskedDiffusion.from_pretrained(tmp_path / "base"),
                                LoraConfig(r=2, target_modules=["Wqkv"], revision="v1.0"))  # fmt: skip
    peft_model.get_base_model().generation_config.update(steps=16, max_new_tokens=16, temperature=0.7)
    pipe = pipeline("masked-diffusion", model=peft_model, tokenizer=make_tiny_tokenizer())
    pipe.save_pretrained(tmp_path / "adapter")  # writes generation_config.json beside the adapter
    assert (tmp_path / "adapter" / "generation_config.json").is_file()
    seen = []
    original = auto_factory._BaseAutoModelClass.from_pretrained.__func__

    def spy(cls, name, *args, **kwargs):
        seen.append(kwargs.get("revision"))
        return original(cls, name, *args, **kwargs)

    monkeypatch.setattr(auto_factory._BaseAutoModelClass, "from_pretrained", classmethod(spy))
    loaded = AutoModelForMaskedDiffusion.from_pretrained(tmp_path / "adapter")
    assert seen == ["v1.0"]  # peft's AutoPeftModel passes the adapter's base revision too
    config = loaded.get_base_model().generation_config
    assert (config.steps, config.max_new_tokens, config.temperature) == (16, 16, 0.7)


def test_register_a_new_architecture():
    from transformers import ElectraConfig, ElectraForMaskedLM

    from transformers_mdlm import MaskedDiffusionModelMixin

    class ElectraForMaskedDiffusion(MaskedDiffusionModelMixin, ElectraForMaskedLM):
        def compute_logits(self, hidden_states):
            return self.generator_lm_head(self.generator_predictions(hidden_states))

    AutoModelForMaskedDiffusion.register(ElectraConfig, ElectraForMaskedDiffusion, exist_ok=True)
    config = ElectraConfig(
        vocab_size=100,
        embedding_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
    )
    model = build_model(config)
    assert isinstance(model, ElectraForMaskedDiffusion)
    assert model.generate(torch.tensor([[10]]), max_new_tokens=4, steps=2, block_length=4).shape == (1, 5)


@pytest.mark.parametrize("architecture", list(ARCHITECTURE_CONFIGS))
def test_the_loss_is_the_masked_lm_cross_entropy(architecture):
    """`model(..., labels=...).loss` scores the labelled positions unshifted, as the transformers masked-LM class."""
    import torch.nn.functional as F
    from transformers import AutoModelForMaskedLM

    model = build_model(ARCHITECTURE_CONFIGS[architecture]())
    reference = AutoModelForMaskedLM.from_config(model.config).eval()
    reference.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (2, 12), generator=g)
    labels = torch.full_like(ids, -100)
    chosen = torch.rand(ids.shape, generator=g) < 0.4
    labels[chosen] = ids[chosen]
    masked = ids.masked_fill(chosen, MASK)
    with torch.no_grad():
        out = model(input_ids=masked, labels=labels)
        expected = F.cross_entropy(out.logits[chosen], ids[chosen])
        theirs = reference(input_ids=masked, labels=labels).loss
    assert model.loss_type == "ForMaskedLM"
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert torch.allclose(out.loss, theirs, atol=1e-5)
    shifted = F.cross_entropy(out.logits[:, :-1][labels[:, 1:] != -100], labels[:, 1:][labels[:, 1:] != -100])
    assert not torch.allclose(out.loss, shifted, atol=1e-3)  # the causal-LM loss would be a different number
