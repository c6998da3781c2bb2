"""MaskedDiffusionTrainer, its arguments and collators, data preparation and LoRA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from conftest import EOS, MASK, PAD, args, counting_dataset, make_tiny_tokenizer, small_model
from transformers_mdlm import (
    AutoModelForMaskedDiffusion,
    DataCollatorForMaskedDiffusion,
    DataCollatorForMaskedDiffusionSFT,
    MaskedDiffusionTrainer,
    format_instruction_dataset,
    pack_dataset,
)
from transformers_mdlm.training import add_lora, diffutron_lora_config, merge_lora

# --------------------------------------------------------------------------- the objective


def _fixed_batch():
    clean = torch.tensor([[20, 21, 22, 23, 24, 25], [30, 31, 32, 33, PAD, PAD]])
    masked = torch.tensor([[0, 1, 0, 1, 1, 0], [1, 0, 0, 1, 0, 0]], dtype=torch.bool)
    real = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    return {
        "input_ids": clean.masked_fill(masked, MASK),
        "attention_mask": real.long(),
        "labels": torch.where(masked, clean, torch.full_like(clean, -100)),
        "t": torch.tensor([0.5, 0.25]),
        "num_maskable": real.sum(dim=1),
    }


@pytest.mark.parametrize("weighting", ["elbo", "none"])
@pytest.mark.parametrize("normalization", ["sequence", "token"])
def test_loss_equals_a_hand_computation(tmp_path, weighting, normalization):
    model = small_model()
    trainer = MaskedDiffusionTrainer(
        model=model, args=args(tmp_path, loss_weighting=weighting, loss_normalization=normalization),
        processing_class=make_tiny_tokenizer(),
    )  # fmt: skip
    batch = _fixed_batch()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ce = F.cross_entropy(logits.transpose(1, 2), batch["labels"].clamp_min(0), reduction="none")
    ce = ce * (batch["labels"] != -100)
    w = 1 / batch["t"] if weighting == "elbo" else torch.ones(2)
    sums = (ce.sum(dim=1) * w).tolist()  # weighted sum per sequence
    if normalization == "sequence":
        expected = (sums[0] / 6 + sums[1] / 4) / 2
    else:
        expected = (sums[0] + sums[1]) / (6 + 4)
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # With the accumulated-batch count, the loss is the sum divided by that count.
    count = torch.tensor(2.0) if normalization == "sequence" else torch.tensor(10.0)
    with torch.no_grad():
        assert trainer.compute_loss(model, batch, num_items_in_batch=count).item() == pytest.approx(expected, rel=1e-5)


def test_cosine_weight_is_the_elbo_weight():
    from transformers_mdlm import MaskedDiffusionScheduler

    scheduler = MaskedDiffusionScheduler(schedule="cosine")
    t = torch.tensor([0.1, 0.5, 0.9], requires_grad=True)
    alpha = scheduler.alpha(t)
    (grad,) = torch.autograd.grad(alpha.sum(), t)
    torch.testing.assert_close(scheduler.loss_weight(t.detach()), (-grad / (1 - alpha)).detach())
    assert torch.allclose(MaskedDiffusionScheduler().loss_weight(torch.tensor([0.5, 0.25])), torch.tensor([2.0, 4.0]))


@pytest.mark.parametrize("normalization", ["sequence", "token"])
def test_gradient_accumulation_matches_one_big_batch(tmp_path, normalization):
    data = counting_dataset(rows=16)
    data = data.map(lambda row, i: {"input_ids": row["input_ids"][: 6 + i % 9]}, with_indices=True)  # uneven rows
    results = []
    for batch, accumulation in ((8, 1), (4, 2)):
        model = small_model()
        trainer = MaskedDiffusionTrainer(
            model=model, train_dataset=data, processing_class=make_tiny_tokenizer(),
            args=args(tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                      max_steps=2, learning_rate=0.5, optim="sgd", loss_normalization=normalization,
                      dataloader_drop_last=True),
        )  # fmt: skip
        trainer.train()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    # Plain SGD, so that weight differences are gradient differences (Adam would magnify float noise).
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- collators


def test_collator_masks_at_rate_t_and_labels_the_masked_tokens():
    collator = DataCollatorForMaskedDiffusion(tokenizer=make_tiny_tokenizer(), seed=1)
    rows = [{"input_ids": list(range(20, 80)), "sample_id": i} for i in range(400)]
    batch = collator(rows)
    masked = batch["labels"] != -100
    assert torch.equal(batch["input_ids"][masked], torch.full((int(masked.sum()),), MASK))
    assert torch.equal(batch["labels"][masked], torch.tensor(rows[0]["input_ids"]).expand(400, -1)[masked])
    assert ((batch["t"] >= 1e-3) & (batch["t"] <= 1)).all()
    rate = masked.float().mean(dim=1)
    assert torch.corrcoef(torch.stack([rate, batch["t"]]))[0, 1] > 0.95  # each row is masked at its own rate t
    assert abs((rate - batch["t"]).mean()) < 0.02
    assert batch["num_maskable"].tolist() == [60] * 400


def test_collator_pads_and_never_masks_padding():
    collator = DataCollatorForMaskedDiffusion(tokenizer=make_tiny_tokenizer(), pad_to_multiple_of=8)
    batch = collator([{"input_ids": [20] * 10, "sample_id": 0}, {"input_ids": [21] * 3, "sample_id": 1}])
    assert batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"][1].tolist() == [1] * 3 + [0] * 13
    assert (batch["labels"][1, 3:] == -100).all() and (batch["input_ids"][1, 3:] == PAD).all()
    assert batch["num_maskable"].tolist() == [10, 3]


def test_noise_depends_on_sample_and_epoch_only():
    collator = DataCollatorForMaskedDiffusion(tokenizer=make_tiny_tokenizer(), seed=5)
    a = {"input_ids": list(range(20, 50)), "sample_id": 7}
    b = {"input_ids": list(range(30, 45)), "sample_id": 8}
    alone = collator([a])
    together = collator([b, a])
    assert torch.equal(alone["labels"][0] != -100, together["labels"][1, :30] != -100)
    assert alone["t"][0] == together["t"][1]
    collator.epoch = 1
    assert collator([a])["t"][0] != alone["t"][0]


def test_sft_collator_never_masks_or_scores_the_prompt():
    collator = DataCollatorForMaskedDiffusionSFT(tokenizer=make_tiny_tokenizer(), seed=0)
    rows = [{"input_ids": list(range(20, 40)), "prompt_length": 12, "sample_id": i} for i in range(200)]
    batch = collator(rows)
    assert (batch["labels"][:, :12] == -100).all()
    assert (batch["input_ids"][:, :12] == torch.arange(20, 32)).all()
    assert (batch["labels"][:, 12:] != -100).any()
    assert batch["num_maskable"].tolist() == [8] * 200


def test_collator_bad_input():
    tokenizer = make_tiny_tokenizer()
    with pytest.raises(ValueError, match="no `input_ids`"):
        DataCollatorForMaskedDiffusion(tokenizer=tokenizer)([{"text": "w1"}])
    with pytest.raises(ValueError, match="max_length"):
        DataCollatorForMaskedDiffusion(tokenizer=tokenizer, max_length=4)([{"input_ids": [20] * 6}])
    cut = DataCollatorForMaskedDiffusion(tokenizer=tokenizer, max_length=4, truncate=True)([{"input_ids": [20] * 6}])
    assert cut["input_ids"].shape == (1, 4)
    with pytest.raises(ValueError, match="prompt_length"):
        DataCollatorForMaskedDiffusionSFT(tokenizer=tokenizer)([{"input_ids": [20] * 6}])
    no_mask = make_tiny_tokenizer()
    no_mask.mask_token = None
    with pytest.raises(ValueError, match="no mask token"):
        DataCollatorForMaskedDiffusion(tokenizer=no_mask)


# --------------------------------------------------------------------------- data preparation


def test_pack_dataset_separates_documents_with_eos_and_drops_the_tail():
    tokenizer = make_tiny_tokenizer()
    corpus = Dataset.from_dict({"text": ["w1 w2 w3", "w4", "w5 w6", "w7 w8 w9 w10"]})
    packed = pack_dataset(corpus, tokenizer, block_size=4)
    ids = tokenizer("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10", add_special_tokens=False).input_ids
    stream = ids[:3] + [EOS] + ids[3:4] + [EOS] + ids[4:6] + [EOS] + ids[6:] + [EOS]  # 14 tokens
    assert packed["input_ids"] == [stream[0:4], stream[4:8], stream[8:12]]
    assert packed["sample_id"] == [0, 1, 2]


def test_format_instruction_dataset_with_diffutron_template():
    tokenizer = make_tiny_tokenizer()
    rows = Dataset.from_dict({"instruction": ["w1 w2"], "input": ["w3"], "output": ["w4 w5"]})
    formatted = format_instruction_dataset(rows, tokenizer)
    prompt = tokenizer("[Question]\nw1 w2\n\nw3\n[/Question]\n\n[Answer]\n", add_special_tokens=False).input_ids
    answer = tokenizer("w4 w5\n[/Answer]", add_special_tokens=False).input_ids
    assert formatted[0]["input_ids"] == prompt + answer + [EOS]
    assert formatted[0]["prompt_length"] == len(prompt)
    chats = Dataset.from_dict(
        {"messages": [[{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2"}]]}
    )
    assert format_instruction_dataset(chats, tokenizer)[0]["input_ids"][-3:] == tokenizer("w2 [/Answer]").input_ids + [
        EOS
    ]


def test_pad_answer_to_extends_the_scored_answer_with_eos():
    """LLaDA's SFT: the answer is padded with EOS to a fixed length and the padding is scored (masked and learnt)."""
    tokenizer = make_tiny_tokenizer()
    rows = Dataset.from_dict({"instruction": ["w1 w2", "w1"], "output": ["w4 w5", "w6 w7 w8 w9 w10 w11 w12 w13"]})
    plain = format_instruction_dataset(rows, tokenizer)
    padded = format_instruction_dataset(rows, tokenizer, pad_answer_to=8)
    short, long = plain[0], plain[1]
    answer_length = len(short["input_ids"]) - short["prompt_length"]
    assert answer_length < 8
    assert padded[0]["input_ids"] == short["input_ids"] + [EOS] * (8 - answer_length)
    assert padded[0]["prompt_length"] == short["prompt_length"]
    assert padded[1]["input_ids"] == long["input_ids"]  # already longer than 8: unchanged
    collator = DataCollatorForMaskedDiffusionSFT(tokenizer=tokenizer, time_epsilon=1.0)  # t = 1: every answer token
    batch = collator([padded[0]])
    scored = batch["labels"][0] != -100
    assert scored.sum() == 8 and (batch["labels"][0][scored][-3:] == EOS).all()
    with pytest.raises(ValueError, match="pad_answer_to"):
        format_instruction_dataset(rows, tokenizer, pad_answer_to=0)
    with pytest.raises(ValueError, match="append_eos"):
        format_instruction_dataset(rows, tokenizer, pad_answer_to=8, append_eos=False)


def test_data_preparation_bad_input():
    tokenizer = make_tiny_tokenizer()
    with pytest.raises(ValueError, match="text"):
        pack_dataset(Dataset.from_dict({"body": ["w1"]}), tokenizer, block_size=4)
    with pytest.raises(ValueError, match="empty"):
        pack_dataset(Dataset.from_dict({"text": []}), tokenizer, block_size=4)
    with pytest.raises(ValueError, match="fewer than"):
        pack_dataset(Dataset.from_dict({"text": ["w1"]}), tokenizer, block_size=4)
    with pytest.raises(ValueError, match="messages or instruction"):
        format_instruction_dataset(Dataset.from_dict({"prompt": ["w1"]}), tokenizer)
    with pytest.raises(ValueError, match="max_length"):
        format_instruction_dataset(
            Dataset.from_dict({"instruction": ["w1 w2"], "output": ["w3"]}), tokenizer, max_length=4
        )
    no_mask = make_tiny_tokenizer()
    no_mask.mask_token = None
    with pytest.raises(ValueError, match="no mask token"):
        pack_dataset(Dataset.from_dict({"text": ["w1 w2"]}), no_mask, block_size=1)


def test_trainer_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        MaskedDiffusionTrainer(model=small_model(), args=args(tmp_path), processing_class=make_tiny_tokenizer(),
                               train_dataset=Dataset.from_dict({"input_ids": []}))  # fmt: skip
    with pytest.raises(ValueError, match="processing_class"):
        MaskedDiffusionTrainer(model=small_model(), args=args(tmp_path))
    with pytest.raises(ValueError, match="`loss_normalization`"):
        args(tmp_path, loss_normalization="batch")
    with pytest.raises(ValueError, match="`time_epsilon`"):
        args(tmp_path, time_epsilon=1.0)


# --------------------------------------------------------------------------- learning, resuming, LoRA


@pytest.mark.slow
def test_a_tiny_model_learns_to_continue_a_counting_language(tmp_path):
    model = small_model()
    prompts = [[20 + (s + i) % 40 for i in range(4)] for s in range(40)]
    expected = [[20 + (s + 4 + i) % 40 for i in range(8)] for s in range(40)]

    def correct() -> int:
        model.eval()
        outs = [
            model.generate(torch.tensor([p]), max_new_tokens=8, steps=8, block_length=8)[0, 4:].tolist()
            for p in prompts
        ]
        return sum(out == exp for out, exp in zip(outs, expected, strict=True))

    assert correct() == 0
    trainer = MaskedDiffusionTrainer(
        model=model, train_dataset=counting_dataset(), processing_class=make_tiny_tokenizer(),
        args=args(tmp_path, per_device_train_batch_size=32, max_steps=500, learning_rate=3e-3, warmup_steps=20,
                  lr_scheduler_type="cosine"),
    )  # fmt: skip
    result = trainer.train()
    assert result.training_loss < 2.0
    assert correct() >= 36  # greedy generate continues the count (40/40 seen on this CPU)


@pytest.mark.slow
def test_training_learns_a_dependency_16_positions_away(tmp_path):
    # The counting language is learned from neighbours alone; here a token is predictable only from its source 16
    # positions back (rows repeat 16 random tokens), so a defect that cut attention short in training (mask, window,
    # positions) would fail. The embedded model reads about 8 tokens each way (docs/evaluation.md): this shows that
    # its short reach is what it learned, not what the trainer allows.
    generator = torch.Generator().manual_seed(0)

    def rows(count):
        first = torch.randint(20, 60, (count, 16), generator=generator)
        return torch.cat([first, first], dim=1)

    model = small_model(local_attention=64)
    trainer = MaskedDiffusionTrainer(
        model=model, train_dataset=Dataset.from_dict({"input_ids": rows(20_000).tolist()}),
        processing_class=make_tiny_tokenizer(),
        args=args(tmp_path, per_device_train_batch_size=32, max_steps=300, learning_rate=3e-3, warmup_steps=50),
    )  # fmt: skip
    trainer.train()
    model.eval()
    test, position = rows(200), 16 + 5
    losses = []
    for hide_source in (False, True):
        inputs = test.clone()
        inputs[:, position] = MASK
        if hide_source:
            inputs[:, position - 16] = MASK
        with torch.inference_mode():
            losses.append(float(F.cross_entropy(model(input_ids=inputs).logits[:, position], test[:, position])))
    assert losses[0] < 0.5  # 0.22 nats on this CPU: read from 16 positions back
    assert losses[1] > math.log(40) - 0.1  # 3.69 (log 40 = 3.69): without the source, a uniform guess


@pytest.mark.parametrize("keyed", ["sample_id column", "plain dataset"])
def test_resuming_from_a_checkpoint_ends_with_the_same_weights(tmp_path, keyed):
    """Bit for bit, also for a plain `Dataset` of `input_ids` (the trainer keys the noise by each row's index)."""
    data = counting_dataset(rows=64)
    if keyed == "plain dataset":
        data = Dataset.from_dict({"input_ids": data["input_ids"]})

    def run(output_dir, resume=None, max_steps=12):
        model = small_model(seed=1, embedding_dropout=0.1, mlp_dropout=0.1, attention_dropout=0.1)
        trainer = MaskedDiffusionTrainer(
            model=model, train_dataset=data, processing_class=make_tiny_tokenizer(),
            args=args(tmp_path, output_dir=str(output_dir), per_device_train_batch_size=8, max_steps=max_steps,
                      learning_rate=1e-2, save_strategy="steps", save_steps=6, num_train_epochs=3),
        )  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    uninterrupted = run(tmp_path / "a")
    resumed = run(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-6"))
    assert torch.equal(uninterrupted, resumed)
    # Sanity: the checkpoint really is mid-way (resuming from it is not a no-op).
    assert (tmp_path / "a" / "checkpoint-6").is_dir() and (tmp_path / "a" / "checkpoint-12").is_dir()


def test_lora_train_save_merge_load(tmp_path):
    base = small_model()
    base.save_pretrained(tmp_path / "base")
    make_tiny_tokenizer().save_pretrained(tmp_path / "base")
    model = add_lora(
        AutoModelForMaskedDiffusion.from_pretrained(tmp_path / "base"), diffutron_lora_config(r=4, lora_alpha=8)
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in model.parameters()) / 4
    trainer = MaskedDiffusionTrainer(
        model=model, train_dataset=counting_dataset(rows=256), processing_class=make_tiny_tokenizer(),
        args=args(tmp_path, max_steps=30, learning_rate=1e-2),
    )  # fmt: skip
    trainer.train()
    model.save_pretrained(tmp_path / "adapter")

    loaded = AutoModelForMaskedDiffusion.from_pretrained(tmp_path / "adapter")
    merged = merge_lora(loaded)
    assert type(merged).__name__ == "ModernBertForMaskedDiffusion"
    assert merged.decoder.weight.data_ptr() == merged.model.embeddings.tok_embeddings.weight.data_ptr()
    merged.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForMaskedDiffusion.from_pretrained(tmp_path / "merged")
    ids = torch.tensor([[20, 21, 22, 23]])
    settings = dict(max_new_tokens=8, steps=8, block_length=8)
    model.eval()
    assert torch.equal(reloaded.generate(ids, **settings), model.generate(ids, **settings))
    with torch.no_grad():
        assert not torch.equal(reloaded.model.layers[0].attn.Wqkv.weight, base.model.layers[0].attn.Wqkv.weight)
        torch.testing.assert_close(reloaded.decoder.weight, base.decoder.weight)  # the tied decoder was left alone


def test_lora_targets_that_match_nothing_fail_clearly():
    with pytest.raises(ValueError, match="match no layer"):
        add_lora(small_model(), diffutron_lora_config(r=2, target_modules=["q_proj", "v_proj"]))


def test_evaluation_reports_the_objective(tmp_path):
    trainer = MaskedDiffusionTrainer(
        model=small_model(), train_dataset=counting_dataset(rows=32), eval_dataset=counting_dataset(rows=16, seed=1),
        processing_class=make_tiny_tokenizer(), args=args(tmp_path, per_device_eval_batch_size=8),
    )  # fmt: skip
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0


def test_truncation_drops_rows_whose_prompt_fills_max_length(caplog):
    # `progressive_sft.sh` stage 2 used to stop at its first batch: a long exam question cut to max_length left a row
    # of prompt only, which the collator refuses. Such rows are dropped when formatting, with a warning naming them.
    tokenizer = make_tiny_tokenizer()
    rows = Dataset.from_dict({"instruction": ["w1", " ".join(["w2"] * 40), "w3 w4"], "output": ["w5", "w6", "w7 w8"]})
    formatted = format_instruction_dataset(rows, tokenizer, max_length=16, truncate=True)
    assert formatted["sample_id"] == [0, 2]  # the others keep their own index (and so their noise)
    lengths = zip(formatted["input_ids"], formatted["prompt_length"], strict=True)
    assert all(prompt < len(ids) <= 16 for ids, prompt in lengths)
    assert "1 of 3 rows have a prompt of at least `max_length` (16)" in caplog.text and "(rows 1)" in caplog.text
    assert formatted[0] == format_instruction_dataset(rows.select([0]), tokenizer, max_length=16)[0]
    with pytest.raises(ValueError, match="Every row's prompt fills `max_length`"):
        format_instruction_dataset(rows.select([1]), tokenizer, max_length=16, truncate=True)


# --------------------------------------------------------------------------- evaluation loss and streamed data


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_eval_loss_is_the_whole_sets_ratio_whatever_the_eval_batch_size(tmp_path, normalization):
    # transformers averages batch losses by rows; with token normalisation and rows of different lengths that made
    # `eval_loss` depend on `per_device_eval_batch_size` (3.6 at batch 1 against 4.48 at batch 6 here).
    rows = Dataset.from_dict({"input_ids": [[20 + i % 40 for i in range(n)] for n in (2, 3, 30, 40, 4, 50)]})
    model, losses = small_model(), []
    for batch_size in (1, 4, 6):
        trainer = MaskedDiffusionTrainer(
            model=model, args=args(tmp_path / str(batch_size), loss_normalization=normalization,
                                   per_device_eval_batch_size=batch_size),
            eval_dataset=rows, processing_class=make_tiny_tokenizer(),
        )  # fmt: skip
        losses.append(trainer.evaluate()["eval_loss"])
    assert losses == pytest.approx([losses[-1]] * 3, rel=1e-5)  # batch 6 holds the whole set: the ratio itself
    assert math.isfinite(losses[0]) and losses[0] > 0


def test_instruction_rows_of_an_iterable_dataset_train_with_the_sft_collator(tmp_path):
    # After `.map`, an IterableDataset's `column_names` is None: the trainer looks at its first row instead of
    # falling back to the pretraining collator, which would mask and score the prompt.
    tokenizer = make_tiny_tokenizer()
    rows = format_instruction_dataset(
        Dataset.from_list([{"instruction": "w1 w2 w3 w4 w5 w6", "output": "w7"}] * 8), tokenizer
    )
    streamed = rows.to_iterable_dataset().map(lambda row: row)
    assert streamed.column_names is None
    trainer = MaskedDiffusionTrainer(model=small_model(), args=args(tmp_path, max_steps=1), train_dataset=streamed,
                                     processing_class=tokenizer)  # fmt: skip
    assert isinstance(trainer.data_collator, DataCollatorForMaskedDiffusionSFT)
    batch = trainer.data_collator([dict(rows[0])])
    assert batch["num_maskable"].tolist() == [len(rows[0]["input_ids"]) - rows[0]["prompt_length"]]


# --------------------------------------------------------------------------- what evaluation takes and its noise


def test_metric_arguments_are_refused_rather_than_ignored(tmp_path):
    # Evaluation computes the diffusion loss only (no predictions), and `compute_loss` is the MDLM objective: these
    # used to be accepted and never called.
    build = dict(model=small_model(), args=args(tmp_path), train_dataset=counting_dataset(rows=8),
                 processing_class=make_tiny_tokenizer())  # fmt: skip
    for name in ("compute_metrics", "preprocess_logits_for_metrics", "compute_loss_func"):
        with pytest.raises(ValueError, match=f"does not take `{name}`: its evaluation reports the masked diffusion"):
            MaskedDiffusionTrainer(**build, **{name: lambda *values, **options: None})
    trainer = MaskedDiffusionTrainer(**build, eval_dataset=counting_dataset(rows=4))
    trainer.compute_metrics = lambda prediction: {"accuracy": 1.0}  # set after the trainer was built
    with pytest.raises(ValueError, match="does not take `compute_metrics`"):
        trainer.evaluate()


def test_an_evaluation_set_given_at_call_time_is_prepared_as_the_constructors(tmp_path):
    # A set passed to `evaluate` got no `sample_id` (its noise then followed the batching and the call count) and
    # skipped the row-length check.
    rows = Dataset.from_dict({"input_ids": [[20 + i % 40 for i in range(n)] for n in (2, 3, 30, 40, 4, 50)]})
    model, tokenizer = small_model(), make_tiny_tokenizer()
    built = MaskedDiffusionTrainer(model=model, args=args(tmp_path / "a", per_device_eval_batch_size=6),
                                   eval_dataset=rows, processing_class=tokenizer)  # fmt: skip
    later = MaskedDiffusionTrainer(model=model, args=args(tmp_path / "b", per_device_eval_batch_size=4),
                                   train_dataset=counting_dataset(rows=8), processing_class=tokenizer)  # fmt: skip
    expected = built.evaluate()["eval_loss"]
    assert later.evaluate(eval_dataset=rows)["eval_loss"] == pytest.approx(expected, rel=1e-6)
    assert later.evaluate(eval_dataset={"held": rows})["eval_held_loss"] == pytest.approx(expected, rel=1e-6)
    assert later.predict(rows).metrics["test_loss"] == pytest.approx(expected, rel=1e-6)
    long = Dataset.from_dict({"input_ids": [[20, 21], [20] * 140]})  # the small model has 128 positions
    with pytest.raises(ValueError, match=r"`eval_dataset` has rows of up to 140 tokens, more than the model's 128"):
        later.evaluate(eval_dataset=long)
    with pytest.raises(ValueError, match=r"`test_dataset` has rows of up to 140 tokens"):
        later.predict(long)
    with pytest.raises(ValueError, match="`eval_dataset` is empty"):
        later.evaluate(eval_dataset=long.select([]))


def test_evaluation_noise_does_not_follow_the_training_epoch(tmp_path):
    # Evaluation's noise was keyed by the training epoch: the same model scored differently at each epoch.
    trainer = MaskedDiffusionTrainer(
        model=small_model(), train_dataset=counting_dataset(rows=16), eval_dataset=counting_dataset(rows=16, seed=1),
        processing_class=make_tiny_tokenizer(), args=args(tmp_path, per_device_train_batch_size=8),
    )  # fmt: skip
    first = trainer.evaluate()["eval_loss"]
    trainer.data_collator.epoch = 3
    assert trainer.evaluate()["eval_loss"] == first
    assert trainer.data_collator.epoch == 3  # the training noise keys are left as they were

    def train(**evaluation):
        run = MaskedDiffusionTrainer(
            model=small_model(), train_dataset=counting_dataset(rows=16), processing_class=make_tiny_tokenizer(),
            eval_dataset=counting_dataset(rows=8, seed=1),
            args=args(tmp_path / str(len(evaluation)), num_train_epochs=2, learning_rate=3e-3, **evaluation),
        )  # fmt: skip
        return run.train().training_loss

    assert train(eval_strategy="steps", eval_steps=1) == train()  # evaluating mid-epoch leaves training as it was


@pytest.mark.parametrize("form", ["torch", "numpy"])
def test_collators_take_the_integer_scalars_of_a_formatted_dataset(tmp_path, form):
    # `Dataset.with_format("torch"/"numpy")` gives 0-d tensors (numpy integers) for `sample_id` and `prompt_length`,
    # which were refused although `input_ids` of the same dataset were taken.
    import numpy as np

    tokenizer = make_tiny_tokenizer()
    rows = format_instruction_dataset(
        Dataset.from_dict({"instruction": ["w1 w2", "w3"], "output": ["w4 w5", "w6"]}), tokenizer
    )
    collator = DataCollatorForMaskedDiffusionSFT(tokenizer=tokenizer)
    formatted = rows.with_format(form)
    expected, batch = collator([rows[0], rows[1]]), collator([formatted[0], formatted[1]])
    assert expected.keys() == batch.keys() and all(torch.equal(expected[key], batch[key]) for key in expected)
    plain = DataCollatorForMaskedDiffusion(tokenizer=tokenizer)
    row = {"input_ids": [20, 21, 22]}
    for bad in (torch.tensor(True), np.bool_(True), torch.tensor(1.0), np.float64(1.0), torch.tensor(-1),
                np.int64(-1), torch.tensor([1]), np.array([1])):  # fmt: skip
        with pytest.raises(ValueError, match="`sample_id` must be an integer >= 0"):
            plain([{**row, "sample_id": bad}])
    for bad in (torch.tensor(True), torch.tensor(1.5), np.float32(1.0), np.array([1])):
        with pytest.raises(ValueError, match="`prompt_length` must be an integer"):
            collator([{**row, "prompt_length": bad}])
    trainer = MaskedDiffusionTrainer(model=small_model(), args=args(tmp_path, max_steps=1),
                                     train_dataset=counting_dataset(rows=8).with_format(form),
                                     processing_class=tokenizer)  # fmt: skip
    assert trainer.train().global_step == 1
