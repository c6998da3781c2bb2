"""The embedded model's recipe (`examples/train_embedded_model.py`) refuses bad settings before it trains anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_embedded_model.py"


def _run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=120)


def test_too_few_bound_samples_fail_before_any_training(tmp_path):
    work = tmp_path / "work"
    result = _run("--work-dir", str(work), "--bound-samples", "1")
    assert result.returncode == 2
    assert "--bound-samples must be at least 2, got 1" in result.stderr
    assert not work.exists()  # nothing written: it used to fail after the whole pretraining stage


def test_a_resumed_run_keeps_the_precision_its_stages_trained_in(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipe_log.json").write_text(json.dumps({"precision": "bf16"}))
    result = _run("--work-dir", str(work), "--precision", "fp32", "--data-dir", str(tmp_path / "no-data"))
    assert result.returncode == 1
    assert "--precision fp32: the stages in" in result.stderr and "trained in bf16" in result.stderr
    assert json.loads((work / "recipe_log.json").read_text()) == {"precision": "bf16"}
