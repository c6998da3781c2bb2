"""Two-process training on CPU through torchrun, with no distributed flags: gloo, distinct rows, the one-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("distributed_train.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


@pytest.mark.slow
def test_two_processes_see_different_rows_and_match_one_process(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(SCRIPT),
               str(two), "4"]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]  # a hung process dumps its threads' stacks here
    from distributed_train import main as train  # the one-process run, here, with the script's single thread

    threads = torch.get_num_threads()
    try:
        train(str(one), 8)
    finally:
        torch.set_num_threads(threads)
    ranks = [json.loads((two / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and "DISTRIBUTED" in ranks[0]["parallel_mode"]
    seen = [set(r["seen"]) for r in ranks]
    assert not seen[0] & seen[1]  # each rank trained on its own rows
    alone = json.loads((one / "rank0.json").read_text())
    assert seen[0] | seen[1] == set(alone["seen"])  # together, the rows of the one-process run with the same batch
    expected, actual = load_file(one / "final.safetensors"), load_file(two / "final.safetensors")
    assert all(torch.allclose(expected[name], actual[name], atol=1e-5) for name in expected)


@pytest.mark.slow
def test_mdlm_train_under_torchrun_needs_no_distributed_flags(tmp_path):
    """`torchrun -m transformers_mdlm.cli train pretrain ...`: a real two-process run; only the main process writes."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import make_tiny_tokenizer, small_model

    base = tmp_path / "base"
    small_model().save_pretrained(base)
    make_tiny_tokenizer().save_pretrained(base)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(f"w{(i + j) % 80}" for j in range(12)) for i in range(60)))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
               "transformers_mdlm.cli", "train", "pretrain", "--model", str(base), "--train_file", str(corpus),
               "--block_size", "16", "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size",
               "2", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true"]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]  # a hung process dumps its threads' stacks here
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["summary"]["batch size"] == 4  # 2 rows on each of 2 processes
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_distributed_eval_loss_counts_each_row_once(tmp_path):
    # accelerate repeats rows so that every process gets a last batch of the same size; summing each process's
    # totals counted those rows twice (eval_loss 3.83 against 4.17 for one process on 5 rows).
    eval_script = SCRIPT.with_name("distributed_eval.py")
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(eval_script), str(two)]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]
    from distributed_eval import main as evaluate  # one process, here, with the script's single thread

    threads = torch.get_num_threads()
    try:
        evaluate(str(one))
    finally:
        torch.set_num_threads(threads)
    alone = json.loads((one / "eval_rank0.json").read_text())["losses"]
    for rank in (0, 1):
        report = json.loads((two / f"eval_rank{rank}.json").read_text())
        assert report["world_size"] == 2
        assert report["losses"] == pytest.approx(alone, rel=1e-5)  # each process reports the whole set's loss
