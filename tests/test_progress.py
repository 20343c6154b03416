"""What is said while a progress bar runs goes on a line of its own above the bar, never glued to the bar's
line (tqdm's bar and the plain one without tqdm)."""
from __future__ import annotations

import pytest

from jetvit_compile import progress

from terminal_lines import own_lines


@pytest.mark.parametrize("kind", ["tqdm", "line"])
def test_a_line_written_during_the_bar_is_a_line_of_its_own(kind, capsys):
    bar = progress._TqdmBar(5, "search", "layout") if kind == "tqdm" else progress._LineBar(5, "search", "layout")
    bar.step("best 0.99")
    bar.write("search: validation: the target raised")
    bar.step("best 0.99")
    bar.close()
    assert "search: validation: the target raised" in own_lines(capsys.readouterr().err)


def test_without_a_bar_the_line_is_printed(capsys):
    progress.progress_bar(5, False, "search").write("search: done")
    assert capsys.readouterr().err == "search: done\n"
