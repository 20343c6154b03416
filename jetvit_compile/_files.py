"""File output, one rule for every command: never a half-written file, never a temp file left behind (signals
included: the CLI turns SIGTERM into an exception), and never an output over any of the command's inputs,
however either path is spelled (relative, ``..``, a symlink, a hard link)."""
from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import UsageError


class atomic_write:
    """``with atomic_write(target) as tmp: write(tmp)`` – renamed over ``target`` only on success; the temp
    file is removed on every other way out (an exception, KeyboardInterrupt, a SIGTERM turned into
    :class:`Terminated` by :func:`terminate_as_exception`)."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.tmp: str | None = None

    def __enter__(self) -> str:
        fd, self.tmp = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.stem}.tmp.", suffix=self.target.suffix)
        try:
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        except BaseException:
            self._remove()
            raise
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                os.replace(self.tmp, self.target)
                return
            except BaseException:
                self._remove()
                raise
        self._remove()
        if isinstance(exc, OSError) and exc.filename is not None and os.fspath(exc.filename) == self.tmp:
            # the user named the target, not our temp file: say the target (disk full, quota, ...)
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.target)) from exc

    def _remove(self) -> None:
        if self.tmp is not None and os.path.lexists(self.tmp):
            os.unlink(self.tmp)


class Terminated(BaseException):
    """SIGTERM, raised where the program was so that ``finally`` blocks and ``atomic_write`` clean up."""

    exit_code = 128 + signal.SIGTERM


def terminate_as_exception():
    """Make SIGTERM raise :class:`Terminated` (SIGINT already raises KeyboardInterrupt); main thread only.
    Returns a function that puts the previous handler back (a command run in-process leaves none behind)."""

    def _raise(signum, frame):
        raise Terminated(f"terminated (signal {signum})")

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread (e.g. a test runner's worker): leave the default
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file or folder: the same inode when both exist (hard links, symlinks,
    bind mounts), else the same resolved path (``..``, relative, a symlink to where a file will be)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        resolved = path.resolve()
        return any(same_file(parent, folder) for parent in resolved.parents)
    except OSError:
        return False


def check_not_an_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], *,
                       sidecars: Iterable[str] = ()) -> None:
    """Refuse ``out`` (and ``out`` with each suffix in ``sidecars``, written beside it) when it is one of
    ``inputs`` (files, or folders: then also anything inside them)."""
    out = Path(out)
    targets = [out, *(out.with_suffix(s) for s in sidecars)]
    for src in inputs:
        if src is None:
            continue
        src = Path(src)
        for target in targets:
            what = "" if target == out else f" (its {target.suffix} file {target})"
            if same_file(target, src):
                kind = "model " if src.suffix.lower() in (".onnx", ".pt2") else ""
                raise UsageError(f"output {out}{what} is the input {kind}{src}; write the result to another file")
            if src.is_dir() and _inside(target, src):
                raise UsageError(f"output {out}{what} is inside the input folder {src}; write it elsewhere")
            if target.is_dir() and src.exists() and _inside(src, target):
                raise UsageError(f"output {out} would replace the folder holding the input {src}; "
                                 "write it elsewhere")


def check_output_path(out: str | os.PathLike, *inputs: str | os.PathLike | None, suffix: str | None = None,
                      sidecars: Iterable[str] = (), what: str = "the result") -> Path:
    """The output file ``out``, after refusing one that would overwrite any input (see
    :func:`check_not_an_input`), does not end in ``suffix`` (what is written), is not a regular file, or whose
    folder is missing or not writable."""
    out = Path(out)
    if suffix is not None and out.suffix.lower() != suffix:
        raise UsageError(f"{what} is written as a {suffix} file: name the output *{suffix}, not {out.name}")
    check_not_an_input(out, inputs, sidecars=sidecars)
    if out.exists() and not out.is_file():
        raise UsageError(f"output {out} exists and is not a regular file (a folder or a device); "
                         "give the path of a file to write")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"output folder {folder} is not writable")
    return out


def check_output_folder_inputs(out: str | os.PathLike, *inputs: str | os.PathLike | None,
                               writes: Iterable[str] | None = None) -> Path:
    """The output folder ``out``, after refusing one that is a file, is an input, lies inside an input folder,
    or holds an input it would write over (``writes``: the names written into it; None: any input inside)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder; give a folder to write into")
    names = None if writes is None else list(writes)
    for src in inputs:
        if src is None:
            continue
        src = Path(src)
        if same_file(out, src):
            raise UsageError(f"output folder {out} is the input {src}; write into another folder")
        if src.is_dir() and _inside(out, src):
            raise UsageError(f"output folder {out} is inside the input folder {src}; write it elsewhere")
        held = (_inside(src, out) if names is None
                else any(same_file(out / name, src) or (src.is_dir() and _inside(src, out / name)) for name in names))
        if src.exists() and held:
            raise UsageError(f"writing into {out} would overwrite the input {src}; choose another output folder")
    return out
