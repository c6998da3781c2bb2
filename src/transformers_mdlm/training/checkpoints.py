"""Checkpoints that are either complete or absent: staged in a hidden folder, renamed into place when whole."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)

#: Where a checkpoint is written before it is renamed to `checkpoint-N` (hidden, and not matched by transformers).
STAGING_DIR = ".checkpoint-staging"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """A checkpoint folder holding its weights and the trainer state (the last file transformers writes)."""
    path = Path(path)
    return (path / TRAINER_STATE).is_file() and any((path / name).is_file() for name in _WEIGHTS)


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The highest-numbered complete `checkpoint-N` in `folder`; incomplete ones (a run killed while writing, by a
    trainer that does not stage its checkpoints) are skipped with a warning naming them."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    numbered = sorted(
        ((int(match.group(1)), child) for child in folder.iterdir() if (match := _CHECKPOINT.match(child.name))),
        reverse=True,
    )
    for _, path in numbered:
        if is_complete_checkpoint(path):
            return str(path)
        logger.warning(f"Skipping the incomplete checkpoint {path} (no {TRAINER_STATE} or weights).")
    return None


def publish_checkpoint(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a fully written checkpoint into place (a rename within one file system: atomic)."""
    staged, final = Path(staged), Path(final)
    if final.exists():  # a checkpoint of the same step from an earlier run: replaced as a whole
        shutil.rmtree(final)
    os.replace(staged, final)
    with contextlib.suppress(OSError):  # the staging folder goes too, when nothing else is staged
        staged.parent.rmdir()


def clear_staging(run_dir: str | os.PathLike) -> None:
    """Remove what a killed run left half-written in the staging folder."""
    staging = Path(run_dir) / STAGING_DIR
    if staging.is_dir():
        logger.warning(f"Removing the half-written checkpoint(s) of an interrupted run in {staging}.")
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["STAGING_DIR", "clear_staging", "is_complete_checkpoint", "last_complete_checkpoint", "publish_checkpoint"]
