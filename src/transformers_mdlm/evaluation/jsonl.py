"""Reading evaluation data: one JSON object per line, errors naming the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of a `.jsonl` file (blank lines skipped), at most `limit` of them.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line that is not JSON, or not a JSON object, named by file and 1-based line number.
    """
    return [row for _, row in read_jsonl_lines(path, limit)]


def read_jsonl_lines(path: str | Path, limit: int | None = None) -> list[tuple[int, dict[str, Any]]]:
    """As [`read_jsonl`], each row with its 1-based line number (for error messages about a row's fields)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"`limit` must be an integer >= 0 or None, got {limit!r}.")
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
            rows.append((number, row))
    return rows


__all__ = ["read_jsonl", "read_jsonl_lines"]
