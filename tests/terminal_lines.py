"""What a terminal shows of a command's stderr: its lines, each ``\\r``-rewritten line in its last state."""
from __future__ import annotations

import re


def own_lines(stderr: str) -> list[str]:
    return [re.split(r"\r", line)[-1].replace("\x1b[K", "").strip() for line in stderr.split("\n")]
