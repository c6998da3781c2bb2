"""Checkpoints are complete or absent; resuming skips incomplete ones; a killed run resumes to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import args, counting_dataset, make_tiny_tokenizer, small_model
from transformers_mdlm import MaskedDiffusionTrainer
from transformers_mdlm.training.checkpoints import STAGING_DIR, last_complete_checkpoint

SCRIPT = Path(__file__).with_name("killed_training.py")


def _run(output_dir, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, str(SCRIPT), str(output_dir), *extra], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_a_run_killed_while_saving_resumes_to_the_same_weights(tmp_path):
    from killed_training import main as train  # the uninterrupted run, here, with the script's single thread

    threads = torch.get_num_threads()
    try:
        train([str(tmp_path / "whole")])
    finally:
        torch.set_num_threads(threads)
    killed = _run(tmp_path / "killed", "--kill-at", "8")
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "killed"
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-4"]  # no half checkpoint-8 in view
    assert (run_dir / STAGING_DIR / "checkpoint-8" / "model.safetensors").is_file()  # it died mid-save
    resumed = _run(run_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (run_dir / STAGING_DIR).exists()
    expected, actual = load_file(tmp_path / "whole" / "final.safetensors"), load_file(run_dir / "final.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)  # bit for bit


def test_resume_skips_an_incomplete_checkpoint(tmp_path, caplog):
    trainer = MaskedDiffusionTrainer(
        model=small_model(), train_dataset=counting_dataset(rows=32), processing_class=make_tiny_tokenizer(),
        args=args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1),
    )  # fmt: skip
    trainer.train()
    out = tmp_path / "out"
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-1", "checkpoint-2"}
    for name in os.listdir(out / "checkpoint-2"):  # what a plain Trainer killed mid-save leaves: config.json only
        if name != "config.json":
            os.remove(out / "checkpoint-2" / name)
    assert last_complete_checkpoint(out) == str(out / "checkpoint-1")
    assert "Skipping the incomplete checkpoint" in caplog.text
    with pytest.raises(ValueError, match="is not a complete checkpoint"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    resumed = MaskedDiffusionTrainer(
        model=small_model(), train_dataset=counting_dataset(rows=32), processing_class=make_tiny_tokenizer(),
        args=args(tmp_path, max_steps=3, save_strategy="no"),
    )  # fmt: skip
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 3


def _best_run(tmp_path, max_steps, **overrides):
    # greater_is_better on the eval loss, which falls: the best checkpoint is the first one, whatever follows.
    values = dict(max_steps=max_steps, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                  load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=True,
                  learning_rate=3e-3, lr_scheduler_type="constant")  # fmt: skip
    return MaskedDiffusionTrainer(
        model=small_model(), train_dataset=counting_dataset(rows=64), eval_dataset=counting_dataset(rows=16, seed=1),
        processing_class=make_tiny_tokenizer(), args=args(tmp_path, **{**values, **overrides}),
    )  # fmt: skip


def test_the_best_checkpoint_survives_a_resume(tmp_path):
    # transformers records the best checkpoint while the checkpoint is staged: the published trainer_state.json named
    # the staging folder, so a resumed run forgot its best checkpoint, and `save_total_limit` then deleted it.
    out = tmp_path / "out"
    _best_run(tmp_path, 2).train()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(out / "checkpoint-2")
    resumed = _best_run(tmp_path, 4, save_total_limit=1)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert resumed.state.best_model_checkpoint == str(out / "checkpoint-2")
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]  # the best is kept, the last one goes
    best = load_file(out / "checkpoint-2" / "model.safetensors")
    final = resumed.model.state_dict()
    assert all(torch.equal(final[name], best[name]) for name in best)  # `load_best_model_at_end` loaded it


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints"])
def test_checkpoint_pushes_upload_the_published_checkpoint(tmp_path, monkeypatch, strategy):
    # transformers starts the checkpoint's upload in the background from the folder it wrote, which the trainer
    # renamed right after: every checkpoint push failed, silently. The push now starts from the published folder.
    from mock_hub import mock_hub

    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with mock_hub() as hub:
        trainer = MaskedDiffusionTrainer(
            model=small_model(), train_dataset=counting_dataset(rows=32), processing_class=make_tiny_tokenizer(),
            args=args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, push_to_hub=True,
                      hub_model_id="tester/tiny-ckpt", hub_strategy=strategy, hub_always_push=True),
        )  # fmt: skip
        trainer.train()  # waits for the pushes in flight
        jobs = trainer.push_in_progress.jobs
        assert all(job.done() and job.exception() is None for job in jobs)
    files = hub.files("tester/tiny-ckpt")
    folders = ["last-checkpoint"] if strategy == "checkpoint" else ["checkpoint-1", "checkpoint-2"]
    for folder in folders:
        assert {f"{folder}/model.safetensors", f"{folder}/trainer_state.json"} <= set(files)
    assert not any(STAGING_DIR in path for path in files)
    state = json.loads(files[f"{folders[-1]}/trainer_state.json"])
    assert state["global_step"] == 2
