"""The trainer as a transformers user drives it: plain arguments, automatic collators, transformers' card arguments."""

from __future__ import annotations

import pytest
import yaml
from datasets import Dataset
from transformers import AutoTokenizer, TrainingArguments

from conftest import args, counting_dataset, make_tiny_tokenizer, small_model
from transformers_mdlm import (
    DIFFUTRON_CHAT_TEMPLATE,
    DataCollatorForMaskedDiffusion,
    DataCollatorForMaskedDiffusionSFT,
    MaskedDiffusionTrainer,
    format_instruction_dataset,
)


def _card_metadata(path):
    text = path.read_text()
    return yaml.safe_load(text.split("---\n")[1]), text


def test_instruction_data_gets_the_sft_collator_and_the_tokenizer_its_template(tmp_path):
    tokenizer = make_tiny_tokenizer()
    rows = Dataset.from_dict({"instruction": ["w1 w2", "w3"], "output": ["w4", "w5 w6"]})
    sft = format_instruction_dataset(rows, tokenizer)
    trainer = MaskedDiffusionTrainer(model=small_model(), args=args(tmp_path), train_dataset=sft,
                                     processing_class=tokenizer)  # fmt: skip
    assert type(trainer.data_collator) is DataCollatorForMaskedDiffusionSFT
    batch = trainer.data_collator([sft[0], sft[1]])
    prompt_length = sft[0]["prompt_length"]
    assert (batch["labels"][0, :prompt_length] == -100).all()  # the prompt is never scored
    assert tokenizer.chat_template == DIFFUTRON_CHAT_TEMPLATE
    trainer.save_model()
    saved = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert saved.chat_template == DIFFUTRON_CHAT_TEMPLATE
    prompt = saved.apply_chat_template([{"role": "user", "content": "w1"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "[Question]\nw1\n[/Question]\n\n[Answer]\n"
    plain = MaskedDiffusionTrainer(model=small_model(), args=args(tmp_path), train_dataset=counting_dataset(rows=8),
                                   processing_class=make_tiny_tokenizer())  # fmt: skip
    assert type(plain.data_collator) is DataCollatorForMaskedDiffusion


def test_plain_training_arguments_train_with_the_diffusion_defaults(tmp_path):
    plain = TrainingArguments(output_dir=str(tmp_path / "plain"), per_device_train_batch_size=8, max_steps=3,
                              report_to=[], use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True)  # fmt: skip
    results = []
    for training_args in (plain, args(tmp_path, max_steps=3)):
        trainer = MaskedDiffusionTrainer(model=small_model(), args=training_args,
                                         train_dataset=counting_dataset(rows=24), processing_class=make_tiny_tokenizer())  # fmt: skip
        results.append(trainer.train().training_loss)
    assert results[0] == pytest.approx(results[1], rel=1e-6)  # the same objective as the package's defaults
    with pytest.raises(TypeError, match="`args` must be MaskedDiffusionTrainingArguments or TrainingArguments"):
        MaskedDiffusionTrainer(model=small_model(), args={"output_dir": "x"}, processing_class=make_tiny_tokenizer())


def test_create_model_card_honours_transformers_arguments(tmp_path):
    trainer = MaskedDiffusionTrainer(model=small_model(), args=args(tmp_path, max_steps=1),
                                     train_dataset=counting_dataset(rows=8), processing_class=make_tiny_tokenizer())  # fmt: skip
    trainer.train()
    trainer.create_model_card(
        language="tr", license="apache-2.0", tags="turkish", model_name="tiny", finetuned_from="org/base-model",
        tasks="text-generation", dataset_tags="org/corpus", dataset="My corpus",
        eval_results=[{"task": "xcopa_tr", "metric": "accuracy", "value": 0.53}],
    )  # fmt: skip
    metadata, text = _card_metadata(tmp_path / "out" / "README.md")
    assert metadata["base_model"] == "org/base-model" and metadata["language"] == "tr"
    assert metadata["license"] == "apache-2.0" and metadata["datasets"] == ["org/corpus"]
    assert {"turkish", "text-generation", "masked-diffusion"} <= set(metadata["tags"])
    assert metadata["library_name"] == "transformers-mdlm"
    result = metadata["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "xcopa_tr" and result["metrics"][0] == {"type": "accuracy", "value": 0.53}
    assert "| My corpus |" in text and "| org/corpus |" in text
    with pytest.raises(TypeError, match="Unknown model card argument"):
        trainer.create_model_card(finetuned="org/base")


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_bfloat16_kernels_warns(tmp_path, caplog, monkeypatch, native):
    # Emulated bfloat16 trains the embedded model's shape 24x slower than float32 (docs/performance.md); transformers
    # says nothing, so the trainer does, and only on such CPUs.
    monkeypatch.setattr("transformers_mdlm.training.trainer.cpu_has_native_bfloat16", lambda: native)
    for bf16 in (False, True):
        caplog.clear()
        MaskedDiffusionTrainer(model=small_model(), args=args(tmp_path, bf16=bf16),
                               train_dataset=counting_dataset(rows=8), processing_class=make_tiny_tokenizer())  # fmt: skip
        assert ("CPU without bfloat16 kernels" in caplog.text) == (bf16 and not native)


def test_rows_longer_than_the_positions_fail_when_the_trainer_is_built(tmp_path):
    # The collator refuses such a row only at the batch that draws it, maybe hours into a run; the trainer reads every
    # row's length (in Arrow batches) first, for each split, unless a truncating collator cuts rows to fit.
    short, long = [20, 21, 22], [20] * 140  # the small model has 128 positions
    data = Dataset.from_dict({"input_ids": [short] * 7 + [long]}).select([7, 0, 1])  # selections are honoured
    build = {"model": small_model(), "args": args(tmp_path), "processing_class": make_tiny_tokenizer()}
    with pytest.raises(ValueError, match=r"`train_dataset` has rows of up to 140 tokens, more than the model's 128"):
        MaskedDiffusionTrainer(train_dataset=data, **build)
    with pytest.raises(ValueError, match=r"`eval_dataset` has rows of up to 140 tokens"):
        MaskedDiffusionTrainer(train_dataset=counting_dataset(rows=8), eval_dataset=data, **build)
    with pytest.raises(ValueError, match=r"`eval_dataset\['long'\]` has rows of up to 140 tokens"):
        MaskedDiffusionTrainer(train_dataset=counting_dataset(rows=8), eval_dataset={"ok": counting_dataset(rows=4),
                               "long": data}, **build)  # fmt: skip
    sets = {"a": Dataset.from_dict({"input_ids": [short] * 3}), "b": Dataset.from_dict({"input_ids": [short] * 2})}
    evaluated = MaskedDiffusionTrainer(train_dataset=counting_dataset(rows=8), eval_dataset=sets, **build)
    assert {name: part["sample_id"] for name, part in evaluated.eval_dataset.items()} == {"a": [0, 1, 2], "b": [0, 1]}
    fits = Dataset.from_dict({"input_ids": [short] * 7 + [long]}).select(range(7))
    MaskedDiffusionTrainer(train_dataset=fits, **build)  # the long row is not selected
    cutting = DataCollatorForMaskedDiffusion(tokenizer=build["processing_class"], max_length=128, truncate=True)
    trainer = MaskedDiffusionTrainer(
        train_dataset=data, data_collator=cutting, **{**build, "args": args(tmp_path, max_steps=2)}
    )
    assert trainer.train().global_step == 2  # the collator cut the long row and training ran
