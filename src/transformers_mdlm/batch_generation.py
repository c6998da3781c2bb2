"""Generation over a whole dataset, on one process or many (`torchrun`, `accelerate launch`), resumable.

Rows are sharded over the processes with accelerate's `split_between_processes`, sorted by length inside each shard
(so that a batch pads little), generated through the pipeline and appended to a per-process part file as each batch
finishes. The main process then merges the parts into the output file in input order. A rerun skips every row whose
id is already written (in the output or in a part file), so a killed run resumes where it stopped; an output written
for another input (an id whose input differs, or one the input lacks) raises instead of being kept.

Example:

```python
>>> from transformers_mdlm.batch_generation import generate_dataset
>>> generate_dataset(pipe, "prompts.jsonl", "answers.jsonl", column="prompt", batch_size=16)  # doctest: +SKIP
{'rows': 1000, 'generated': 1000, 'skipped': 0, 'output': 'answers.jsonl'}

```
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .file_utils import atomic_write_text
from .validation import check_int


def load_rows(source: Any, column: str = "text", id_column: str | None = None) -> list[dict[str, Any]]:
    """The rows to generate for, each `{"id": ..., "input": ...}`, in input order.

    `source` is a `.jsonl` file (one object per line), a `.txt` file (one prompt per line), a `datasets.Dataset`, or a
    local folder / Hub name that `datasets.load_dataset` reads (its `train` split). Ids come from `id_column`, or are
    the row's index; they must be unique.
    """
    from datasets import Dataset, load_dataset

    if isinstance(source, (str, os.PathLike)) and Path(source).suffix in (".txt",):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"`input`: {path} does not exist.")
        texts = path.read_text(encoding="utf-8").splitlines()
        records = [{column: text} for text in texts if text.strip()]
    elif isinstance(source, (str, os.PathLike)) and Path(source).suffix in (".jsonl", ".json"):
        from .evaluation.jsonl import read_jsonl

        records = read_jsonl(source)
    elif isinstance(source, Dataset):
        records = source.to_list()
    elif isinstance(source, (str, os.PathLike)):
        records = load_dataset(str(source), split="train").to_list()
    else:
        raise TypeError(
            f"`input` must be a file path, a dataset name or a datasets.Dataset, got {type(source).__name__}."
        )
    if not records:
        raise ValueError(f"`input` {source} holds no rows.")
    rows = []
    for index, record in enumerate(records):
        if column not in record:
            raise ValueError(f"Row {index} of {source} has no `{column}` column (columns: {sorted(record)}).")
        if id_column is not None and id_column not in record:
            raise ValueError(f"Row {index} of {source} has no `{id_column}` id column (columns: {sorted(record)}).")
        rows.append({"id": record[id_column] if id_column is not None else index, "input": record[column]})
    ids = [row["id"] for row in rows]
    if len(set(map(json.dumps, ids))) != len(ids):
        raise ValueError(f"The ids of `input` ({id_column or 'row index'}) must be unique.")
    return rows


def generate_dataset(
    pipe: Any,
    source: Any,
    output: str | os.PathLike,
    *,
    column: str = "text",
    id_column: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    **generate_kwargs: Any,
) -> dict[str, Any]:
    """Generate for every row of `source` with `pipe` and write `{"id", "input", "generated_text"}` lines to `output`.

    Works the same on one process and under `torchrun`/`accelerate launch` (rows sharded over the processes); a rerun
    resumes. Returns counts: rows, generated (by this process), skipped (already written).
    """
    check_int("batch_size", batch_size, minimum=1)
    unsupported = sorted(name for name in ("return_tensors", "return_history") if generate_kwargs.get(name))
    if unsupported:
        raise ValueError(
            f"generate_dataset writes `generated_text` only; {', '.join(unsupported)} would be dropped. Call the "
            "pipeline directly for token ids or the denoising history."
        )
    if hasattr(pipe, "_sanitize_parameters"):  # every generation setting checked before any row is read or generated
        pipe._sanitize_parameters(**generate_kwargs)
    output = Path(output)
    if output.suffix != ".jsonl":
        raise ValueError(f"`output` must be a .jsonl file, got {output}.")
    if not output.resolve().parent.is_dir():
        raise FileNotFoundError(f"`output`: the folder {output.resolve().parent} does not exist.")
    rows = load_rows(source, column, id_column)
    state = process_state()
    done = _written_inputs(output)
    _check_written(done, rows, output)
    state.wait_for_everyone()  # every process reads what earlier runs wrote before any process writes anew
    pending = [index for index, row in enumerate(rows) if json.dumps(row["id"]) not in done]
    generated = 0
    with state.split_between_processes(pending) as shard:
        part = _part_path(output, state.process_index)
        _drop_cut_line(part)
        # Longest first inside the shard: batches of similar lengths pad little, and the slow ones start early.
        lengths = {index: len(pipe.tokenizer(str(rows[index]["input"]))["input_ids"]) for index in shard}
        ordered = sorted(shard, key=lambda index: -lengths[index])
        bar = tqdm(total=len(ordered), desc=f"generating (process {state.process_index})", unit="row",
                   disable=not progress or not state.is_local_main_process)  # fmt: skip
        with part.open("a", encoding="utf-8") as handle:
            for start in range(0, len(ordered), batch_size):
                chunk = ordered[start : start + batch_size]
                outputs = pipe([rows[i]["input"] for i in chunk], batch_size=len(chunk), **generate_kwargs)
                for index, result in zip(chunk, outputs, strict=True):
                    record = {"id": rows[index]["id"], "input": rows[index]["input"],
                              "generated_text": [r["generated_text"] for r in result] if len(result) > 1
                              else result[0]["generated_text"]}  # fmt: skip
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                generated += len(chunk)
                bar.update(len(chunk))
        bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        _merge(rows, output)
    state.wait_for_everyone()
    return {"rows": len(rows), "generated": generated, "skipped": len(rows) - len(pending), "output": str(output)}


def process_state() -> Any:
    """accelerate's `PartialState` for this process: under `torchrun`/`accelerate launch` one of several (gloo on a
    machine without CUDA, nccl with it), else the only one."""
    import torch

    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _drop_cut_line(part: Path) -> None:
    """A part file whose last line a kill cut short loses that line (its row is generated again)."""
    if not part.is_file():
        return
    data = part.read_bytes()
    if data and not data.endswith(b"\n"):
        with part.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def _part_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.part-{rank}")


def _parts(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f"{glob.escape(output.name)}.part-*"))  # a name may hold `[`, `*` or `?`


def _read_records(path: Path) -> list[dict[str, Any]]:
    """Whole lines only: a line cut by a kill (no newline, or not JSON) is ignored, so its row is generated again."""
    records = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").split("\n")[:-1]:  # the text after the last newline is not a line
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "id" in record:
            records.append(record)
    return records


def _written_inputs(output: Path) -> dict[str, Any]:
    """Ids already written, with the input each was written for: in the output, or in the part file of any earlier
    process (whatever their number)."""
    written = {json.dumps(record["id"]): record.get("input") for record in _read_records(output)}
    for part in _parts(output):
        written.update((json.dumps(record["id"]), record.get("input")) for record in _read_records(part))
    return written


def _check_written(written: dict[str, Any], rows: Sequence[dict[str, Any]], output: Path) -> None:
    """A resume must continue the same job: an id written for another input, or one the input no longer has, means
    `output` belongs to another input file (ids default to row numbers), whose answers would be kept as this one's."""
    inputs = {json.dumps(row["id"]): row["input"] for row in rows}
    changed = [key for key, text in written.items() if key in inputs and text != inputs[key]]
    missing = [key for key in written if key not in inputs]
    if changed or missing:
        what = (f"ids {', '.join(changed[:3])} were written for other inputs" if changed
                else f"ids {', '.join(missing[:3])} are not in the input")  # fmt: skip
        raise ValueError(
            f"`output` {output} (or its part files) holds answers of another job: {what}. A rerun resumes the same "
            "input only; write to a new output, or delete the old one (and its .part-* files) to start again."
        )


def _merge(rows: Sequence[dict[str, Any]], output: Path) -> None:
    """Write the output in input order from the earlier output and every part file, then remove the parts."""
    by_id = {json.dumps(record["id"]): record for record in _read_records(output)}
    for part in _parts(output):
        for record in _read_records(part):
            by_id.setdefault(json.dumps(record["id"]), record)
    ordered = [by_id[json.dumps(row["id"])] for row in rows if json.dumps(row["id"]) in by_id]
    atomic_write_text(output, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in ordered))
    if len(ordered) == len(rows):
        for part in _parts(output):
            part.unlink()


__all__ = ["generate_dataset", "load_rows", "process_state"]
