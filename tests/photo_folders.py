"""A folder of real photos for a test (copies of the first ``count`` of the bundled sample)."""
import shutil
from pathlib import Path

from jetvit_compile.images import photo_paths


def photo_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in photo_paths(limit=count):
        shutil.copy(p, folder / p.name)
    return folder
