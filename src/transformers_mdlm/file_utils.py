"""Writing files so that a reader (or a rerun after a kill) never sees half of one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it into place (atomic on one file
    system). The file keeps an existing file's permissions, else gets those of a plain `open(path, "w")` (the umask's;
    `tempfile.mkstemp` would give 0o600), and a symbolic link at `path` is followed: its target is replaced."""
    path = Path(os.path.realpath(path))
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as stream:  # "x": a new file, created with the umask's mode
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if path.exists():
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


__all__ = ["atomic_write_text"]
