"""Two-process training on CPU through torchrun (gloo): both ranks must end with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_process_training_keeps_ranks_in_sync(tmp_path):
    script = Path(__file__).with_name("distributed_train.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script),
               str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]  # a real two-process run, not one process
    assert reports[0]["checksum"] == reports[1]["checksum"]
    assert reports[0]["first"] == reports[1]["first"]
    losses = reports[0]["losses"]
    assert losses[-1] < losses[0]
