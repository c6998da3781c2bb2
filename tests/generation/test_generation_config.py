"""MaskedDiffusionGenerationConfig: defaults, validation, overrides and generation_config.json."""

from __future__ import annotations

import json

import pytest
from transformers import GenerationConfig

from transformers_mdlm import MaskedDiffusionGenerationConfig


def test_is_a_transformers_generation_config_with_diffusion_fields():
    config = MaskedDiffusionGenerationConfig()
    assert isinstance(config, GenerationConfig)
    expected = {
        "max_new_tokens": 128,
        "steps": 128,
        "block_length": None,
        "temperature": 0.0,
        "top_k": None,
        "top_p": None,
        "remasking": "low_confidence",
        "schedule": "linear",
        "confidence_threshold": None,
        "repetition_penalty": 1.0,
        "cfg_scale": 0.0,
        "stochastic_transfer": False,
        "stop_on_eos": False,
        "output_history": False,
        "return_dict_in_generate": False,
    }
    assert {name: getattr(config, name) for name in expected} == expected


def test_round_trip_through_generation_config_json(tmp_path):
    config = MaskedDiffusionGenerationConfig(
        max_new_tokens=64,
        steps=64,
        block_length=16,
        temperature=0.1,
        repetition_penalty=1.2,
        remasking="margin",
        confidence_threshold=0.9,
        cfg_scale=0.5,
        stop_on_eos=True,
        mask_token_id=4,
        eos_token_id=1,
        pad_token_id=0,
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["steps"] == 64 and saved["mask_token_id"] == 4 and saved["remasking"] == "margin"
    loaded = MaskedDiffusionGenerationConfig.from_pretrained(tmp_path)
    assert loaded == config
    assert loaded.to_diff_dict() == config.to_diff_dict()


def test_with_overrides_copies_and_validates():
    config = MaskedDiffusionGenerationConfig()
    changed = config.with_overrides(steps=8, output_history=True)
    assert changed.steps == 8 and changed.return_dict_in_generate is True
    assert config.steps == 128 and config.return_dict_in_generate is False
    with pytest.raises(TypeError, match="stepz"):
        config.with_overrides(stepz=8)


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("steps", 0, ">= 1"),
        ("steps", 2.5, ">= 1"),
        ("block_length", 0, ">= 1"),
        ("max_new_tokens", -1, ">= 0"),
        ("temperature", -0.1, ">= 0"),
        ("temperature", float("inf"), "finite number >= 0"),
        ("top_p", 0.0, r"\(0, 1\]"),
        ("top_p", 1.5, r"\(0, 1\]"),
        ("top_k", -1, ">= 0"),
        ("remasking", "lowest", "low_confidence"),
        ("schedule", "exp", "linear"),
        ("cfg_scale", -1.0, ">= 0"),
        ("cfg_scale", float("inf"), "finite number >= 0"),
        ("confidence_threshold", 0.0, r"\(0, 1\]"),
        ("confidence_threshold", 1.01, r"\(0, 1\]"),
        ("repetition_penalty", 0.0, "> 0"),
        ("repetition_penalty", float("inf"), "finite number > 0"),
        ("repetition_penalty", float("nan"), "finite number > 0"),
        ("stop_on_eos", 1, "True or False"),
        ("mask_token_id", -4, ">= 0"),
    ],
)
def test_bad_values_name_the_argument_and_what_is_allowed(name, value, allowed):
    with pytest.raises((ValueError, TypeError), match=f"`{name}`.*{allowed}"):
        MaskedDiffusionGenerationConfig(**{name: value})


def test_unknown_parameter_is_a_type_error():
    with pytest.raises(TypeError, match="num_beams"):
        MaskedDiffusionGenerationConfig(num_beams=4)


@pytest.mark.parametrize("value", [0, 1, 1.0, "False"])
def test_do_sample_must_be_a_bool(value):
    # `0 == False` passed a membership check, but decoding tests `do_sample is False`: `do_sample=0` sampled.
    with pytest.raises(TypeError, match=r"`do_sample` must be True, False or None"):
        MaskedDiffusionGenerationConfig(do_sample=value, temperature=0.7)
    with pytest.raises(TypeError, match=r"`do_sample`"):
        MaskedDiffusionGenerationConfig().with_overrides(do_sample=value)
    assert MaskedDiffusionGenerationConfig(do_sample=False, temperature=0.7).sampling_temperature == 0.0


def test_confidence_threshold_is_refused_with_entropy_remasking():
    # Entropy's score (negative entropy) is <= 0: no position would ever pass a threshold in (0, 1].
    from transformers_mdlm import MaskedDiffusionScheduler

    with pytest.raises(ValueError, match=r"`confidence_threshold=0.5`.*`remasking='entropy'`"):
        MaskedDiffusionGenerationConfig(remasking="entropy", confidence_threshold=0.5)
    with pytest.raises(ValueError, match=r"`remasking='entropy'`"):
        MaskedDiffusionGenerationConfig(confidence_threshold=0.5).with_overrides(remasking="entropy")
    with pytest.raises(ValueError, match=r"`remasking='entropy'`"):
        MaskedDiffusionScheduler(remasking="entropy", confidence_threshold=0.5)
    for remasking in ("low_confidence", "margin", "random"):
        MaskedDiffusionGenerationConfig(remasking=remasking, confidence_threshold=0.5)
    MaskedDiffusionGenerationConfig(remasking="entropy")
