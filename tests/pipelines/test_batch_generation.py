"""Generation over a dataset: input order kept, sharded over processes, resumed after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import pipeline

from transformers_mdlm.batch_generation import generate_dataset
from transformers_mdlm.cli import main

SETTINGS = dict(max_new_tokens=6, steps=3, block_length=6)
CLI_SETTINGS = ["--max-new-tokens", "6", "--steps", "3", "--block-length", "6"]


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return pipeline("masked-diffusion", model=str(tiny_model_dir))


def _prompts(count):
    # At least three tokens: a near-empty canvas makes float ties that batching may break either way (documented).
    return [" ".join(f"w{(i * 7 + j) % 80}" for j in range(3 + i % 7)) for i in range(count)]


def _write_input(path, count):
    path.write_text(
        "".join(json.dumps({"key": f"row-{i}", "prompt": p}) + "\n" for i, p in enumerate(_prompts(count)))
    )
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_process_keeps_input_order_and_equals_single_calls(pipe, tmp_path):
    source = _write_input(tmp_path / "in.jsonl", 13)
    summary = generate_dataset(pipe, source, tmp_path / "out.jsonl", column="prompt", id_column="key", batch_size=4,
                               progress=False, return_full_text=False, **SETTINGS)  # fmt: skip
    assert summary == {"rows": 13, "generated": 13, "skipped": 0, "output": str(tmp_path / "out.jsonl")}
    records = _lines(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == [f"row-{i}" for i in range(13)]
    for record in records:
        expected = pipe(record["input"], return_full_text=False, **SETTINGS)[0]["generated_text"]
        assert record["generated_text"] == expected
    assert not list(tmp_path.glob("out.jsonl.part-*"))


def test_a_rerun_skips_written_rows_and_redoes_a_cut_line(pipe, tmp_path):
    source = _write_input(tmp_path / "in.jsonl", 10)
    kwargs = dict(column="prompt", id_column="key", batch_size=3, progress=False, return_full_text=False, **SETTINGS)
    generate_dataset(pipe, source, tmp_path / "whole.jsonl", **kwargs)
    whole = (tmp_path / "whole.jsonl").read_text()
    # What a kill leaves: a part file with three whole rows and a line cut in the middle.
    done = whole.splitlines()[:4]
    (tmp_path / "out.jsonl.part-0").write_text("\n".join(done[:3]) + "\n" + done[3][:20])
    summary = generate_dataset(pipe, source, tmp_path / "out.jsonl", **kwargs)
    assert summary["skipped"] == 3 and summary["generated"] == 7
    assert (tmp_path / "out.jsonl").read_text() == whole
    assert generate_dataset(pipe, source, tmp_path / "out.jsonl", **kwargs)["generated"] == 0  # all done already


ENV = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def _run(arguments):
    """`mdlm` here, with one thread as each torchrun process has: the same arithmetic, so the same tokens."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(arguments) == 0
    finally:
        torch.set_num_threads(threads)


def _cli(model_dir, source, output, *extra):
    return ["generate", "--model", str(model_dir), "--input", str(source), "--column", "prompt", "--id-column",
            "key", "--output", str(output), "--batch-size", "4", *CLI_SETTINGS, *extra]  # fmt: skip


@pytest.mark.slow
def test_two_processes_and_a_killed_run_give_the_one_process_file(tiny_model_dir, tmp_path):
    """One file, three ways: one process; two torchrun processes; one process killed mid-run, then rerun."""
    source = _write_input(tmp_path / "in.jsonl", 240)
    _run(_cli(tiny_model_dir, source, tmp_path / "one.jsonl"))
    one = (tmp_path / "one.jsonl").read_text()

    logs = tmp_path / "logs"  # one log per process, so that their summaries do not interleave
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "--log-dir",
               str(logs), "--redirects", "3", "-m", "transformers_mdlm.cli",
               *_cli(tiny_model_dir, source, tmp_path / "two.jsonl")]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(line) for log in logs.rglob("stderr.log") for line in log.read_text().splitlines()
                 if line.startswith('{"rows"')]  # fmt: skip
    assert sorted(summary["generated"] for summary in summaries) == [120, 120]  # each process did its share
    assert (tmp_path / "two.jsonl").read_text() == one

    output = tmp_path / "killed.jsonl"
    command = [sys.executable, "-m", "transformers_mdlm.cli", *_cli(tiny_model_dir, source, output)]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = tmp_path / "killed.jsonl.part-0"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not part.exists() or part.read_text().count("\n") < 8):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL  # killed mid-run, not finished
    assert 8 <= part.read_text().count("\n") < 240 and not output.exists()
    _run(_cli(tiny_model_dir, source, output))
    assert output.read_text() == one


def test_a_rerun_on_another_input_raises_instead_of_keeping_the_old_answers(pipe, tmp_path):
    # Ids default to row numbers: an edited input (or another file) written to the same output had every row
    # "skipped", and the output kept the old prompts' answers.
    source, output = tmp_path / "prompts.txt", tmp_path / "answers.jsonl"
    source.write_text("w1 w2 w3\nw4 w5 w6\n")
    generate_dataset(pipe, source, output, batch_size=2, progress=False, **SETTINGS)
    source.write_text("w50 w51 w52\nw60 w61 w62\n")
    with pytest.raises(ValueError, match="holds answers of another job: ids 0, 1 were written for other inputs"):
        generate_dataset(pipe, source, output, batch_size=2, progress=False, **SETTINGS)
    source.write_text("w1 w2 w3\n")  # a row fewer: id 1 is no longer in the input
    with pytest.raises(ValueError, match="ids 1 are not in the input"):
        generate_dataset(pipe, source, output, batch_size=2, progress=False, **SETTINGS)


def test_an_output_name_with_glob_characters_merges_its_parts(pipe, tmp_path):
    source, output = tmp_path / "prompts.txt", tmp_path / "answers[v2].jsonl"
    source.write_text("\n".join(_prompts(3)) + "\n")
    summary = generate_dataset(pipe, source, output, batch_size=2, progress=False, **SETTINGS)
    assert summary["generated"] == 3
    assert len(output.read_text().splitlines()) == 3  # was 0: the parts were never found
    assert not list(tmp_path.glob("*.part-*"))
    assert generate_dataset(pipe, source, output, batch_size=2, progress=False, **SETTINGS)["skipped"] == 3


def test_a_complete_record_without_its_newline_is_generated_again(pipe, tmp_path):
    """A kill between a record's JSON and its newline: the cut line is dropped, so its row must not count as done."""
    source, output = tmp_path / "prompts.txt", tmp_path / "answers.jsonl"
    source.write_text("w1 w2\nw3 w4\nw5 w6\n")
    part = output.with_name(output.name + ".part-0")
    part.write_text(
        json.dumps({"id": 0, "input": "w1 w2", "generated_text": "a"}) + "\n"
        + json.dumps({"id": 1, "input": "w3 w4", "generated_text": "b"})
    )  # fmt: skip
    summary = generate_dataset(pipe, source, output, batch_size=2, progress=False, **SETTINGS)
    assert summary["skipped"] == 1 and summary["generated"] == 2
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == [0, 1, 2]
    assert not part.exists()


def test_outputs_it_cannot_write_and_bad_settings_are_refused_before_generating(pipe, tmp_path):
    source, output = tmp_path / "prompts.txt", tmp_path / "answers.jsonl"
    source.write_text("w1 w2\n")
    for setting in ("return_tensors", "return_history"):
        with pytest.raises(ValueError, match=f"{setting} would be dropped"):
            generate_dataset(pipe, source, output, progress=False, **{setting: True}, **SETTINGS)
    with pytest.raises(ValueError, match="temperature"):
        generate_dataset(pipe, source, output, progress=False, temperature=-1.0, **SETTINGS)
    assert not list(tmp_path.glob("answers*"))
