"""One progress bar for every long stage (profiling, attention transfer, distillation, the search): tqdm on
stderr where it is installed, else a plain line; nothing when disabled. ``step(text)`` advances it by one
and shows ``text`` (a loss, the best layout so far); ``write(line)`` prints a line on stderr above it."""
from __future__ import annotations

import sys


class _NoBar:
    def step(self, text: str = "") -> None: ...

    def write(self, line: str) -> None:
        print(line, file=sys.stderr)

    def close(self) -> None: ...


class _LineBar(_NoBar):
    """Without tqdm: one line on stderr, rewritten in place."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0

    def step(self, text: str = "") -> None:
        self.n += 1
        sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} {self.unit}s {text}\x1b[K")
        sys.stderr.flush()

    def write(self, line: str) -> None:  # over the bar's line; the next step draws it again below
        sys.stderr.write(f"\r{line}\x1b[K\n")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


class _TqdmBar(_NoBar):
    def __init__(self, total: int, desc: str, unit: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def step(self, text: str = "") -> None:
        if text:
            self.bar.set_postfix_str(text, refresh=False)
        self.bar.update(1)

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "step") -> _NoBar:
    if not enabled or total <= 0:
        return _NoBar()
    try:
        return _TqdmBar(total, desc, unit)
    except ImportError:
        return _LineBar(total, desc, unit)
