"""Atomic file output: never a half-written file, never an overwritten input."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UsageError


class atomic_write:
    """``with atomic_write(target) as tmp: write(tmp)`` – renamed over ``target`` only on success."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)

    def __enter__(self) -> str:
        fd, self.tmp = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.stem}.tmp.", suffix=self.target.suffix)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.target)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)


def check_output_path(out: str | os.PathLike, *inputs: str | os.PathLike) -> Path:
    """The output path, after refusing one that would overwrite an input or cannot be written."""
    out = Path(out)
    for src in inputs:
        if out.resolve() == Path(src).resolve():
            raise UsageError(f"output {out} is the input model; write the result to another file")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"output folder {folder} is not writable")
    return out
