"""Real photos for calibration and fidelity checks, and the preprocessing the models expect."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from jetvit_compile._files import atomic_write
from jetvit_compile.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

# The shared data folder sits beside the checkout, never inside it (it is not committed).
SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"

# Colour photographs that ship inside scikit-image's wheel (no download needed): name -> loader.
_SKIMAGE_PHOTOS = {
    "astronaut": lambda d: d.astronaut(),
    "chelsea": lambda d: d.chelsea(),
    "coffee": lambda d: d.coffee(),
    "rocket": lambda d: d.rocket(),
    "hubble_deep_field": lambda d: d.hubble_deep_field(),
    "immunohistochemistry": lambda d: d.immunohistochemistry(),
    "retina": lambda d: d.retina(),
    "motorcycle_left": lambda d: d.stereo_motorcycle()[0],
    "motorcycle_right": lambda d: d.stereo_motorcycle()[1],
}


def cache_dir(*parts: str) -> Path:
    """``$JETVIT_COMPILE_CACHE`` or ``~/.cache/jetvit_compile``, plus ``parts``; created on demand."""
    root = Path(os.environ.get("JETVIT_COMPILE_CACHE") or Path.home() / ".cache" / "jetvit_compile")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def photo_paths(limit: int | None = None) -> list[Path]:
    """Real photos, sorted: the shared ImageNet sample if present, else scikit-image's bundled photos."""
    if SHARED_PHOTOS.is_dir():
        paths = sorted(p for p in SHARED_PHOTOS.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        paths = _skimage_photos()
    return paths[:limit] if limit is not None else paths


def _skimage_photos() -> list[Path]:
    try:
        import skimage.data
    except ImportError:
        raise UsageError(f"no photos: {SHARED_PHOTOS} does not exist and scikit-image is not installed "
                         "(pip install scikit-image)") from None
    folder = cache_dir("skimage-photos")
    paths = []
    for name, loader in _SKIMAGE_PHOTOS.items():
        target = folder / f"{name}.png"
        if not target.exists():
            try:
                array = np.asarray(loader(skimage.data))
            except Exception:  # an older/newer scikit-image may lack one; the rest still serve
                continue
            with atomic_write(target) as tmp:
                Image.fromarray(array[..., :3].astype(np.uint8)).save(tmp, format="PNG")
        paths.append(target)
    return sorted(paths)


def images_in(folder: str | os.PathLike) -> list[Path]:
    """The readable images in a user's folder, sorted; a ``UsageError`` that says why when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"image folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UsageError(f"image folder {folder} is empty: put some photos (JPEG/PNG) in it")
    good, bad = [], []
    for path in files:
        try:
            with Image.open(path) as im:
                im.verify()
            good.append(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(path.name)
    if not good:
        raise UsageError(f"image folder {folder} holds no readable images; unreadable: {', '.join(bad)}")
    return good


def load_image(path: str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """RGB photo as a normalised ``[3, H, W]`` float tensor; ``size`` is ``(H, W)``; bicubic resize."""
    height, width = size
    with Image.open(path) as im:
        rgb = im.convert("RGB").resize((width, height), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


def load_batch(paths, size: tuple[int, int]) -> torch.Tensor:
    """``[B, 3, H, W]`` from :func:`load_image` on each path."""
    paths = list(paths)
    if not paths:
        raise UsageError("no images to load")
    return torch.stack([load_image(p, size) for p in paths])
