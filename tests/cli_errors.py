"""What every failed CLI command must look like: one ``error:`` line on stderr, the right exit code, no traceback."""
from __future__ import annotations


def error_line(result, code: int) -> str:
    """The single ``error: ...`` line of a failed command (a click ``Result``), after checking its exit code."""
    assert not (result.exception and not isinstance(result.exception, SystemExit)), \
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if not line.startswith(("note: ", "warning: "))]  # said before the failure
    assert len(errors) == 1 and errors[0].startswith("error: ") and lines[-1] == errors[0], result.stderr
    return errors[0]
