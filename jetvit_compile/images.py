"""Real photos for calibration and fidelity checks, and the preprocessing the models expect."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

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


MIN_PHOTO_SIDE = 32  # px: a smaller photo holds no more than a patch or two, and scores say nothing


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def images_in(folder: str | os.PathLike, say: Callable[[str], None] | None = _say,
              min_side: int = MIN_PHOTO_SIDE) -> list[Path]:
    """The photos in a user's folder, sorted, each decoded up front.

    Files that are not images (no image format recognised) are skipped and named in a note (``say``); a photo
    that does not decode (a truncated or damaged file) or is smaller than ``min_side`` px on a side is
    refused, every such file named in one ``UsageError``: a damaged data set is fixed, not sampled around."""
    if not isinstance(folder, (str, os.PathLike)):
        raise UsageError(f"the photos are given as a folder path, got {type(folder).__name__}")
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"image folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UsageError(f"image folder {folder} is empty: put some photos (JPEG/PNG) in it")
    good, not_images, broken, small = [], [], [], []
    for path in files:
        try:
            with Image.open(path) as im:
                fmt = im.format
                try:
                    im.load()
                except (OSError, SyntaxError, ValueError, EOFError) as e:
                    broken.append(f"{path.name} ({fmt}: {' '.join(str(e).split()) or type(e).__name__})")
                    continue
                if min(im.size) < min_side:
                    small.append(f"{path.name} ({im.size[0]}x{im.size[1]} px)")
                    continue
            good.append(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
            not_images.append(path.name)
    problems = []
    if broken:
        problems.append(f"{len(broken)} photo(s) do not decode (truncated or damaged): {', '.join(broken)}; "
                        "replace or remove them")
    if small:
        problems.append(f"{len(small)} photo(s) are smaller than {min_side} px on a side: {', '.join(small)}; "
                        "use real photos (each is resized to the model's input, so a tiny one says nothing)")
    if problems:
        raise UsageError(f"image folder {folder}: " + "; ".join(problems))
    if not good:
        raise UsageError(f"image folder {folder} holds no readable images; unreadable: {', '.join(not_images)}")
    if not_images and say is not None:
        say(f"note: skipped {len(not_images)} file(s) in {folder} that are not images: {', '.join(not_images)}")
    return good


def _unit_rgb(im: Image.Image, width: int, height: int) -> np.ndarray:
    """``[H, W, 3]`` float32 in [0, 1] at ``(height, width)`` (bicubic), whatever the mode: 16-bit integer
    images are scaled by their range (``convert("RGB")`` would clip them to 255: white), float ones clipped."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        grey = np.asarray(im, dtype=np.float32)
        if im.mode != "F":
            grey = grey / 65535.0  # 16-bit PNG/TIFF (I;16, or I in some Pillow versions)
        resized = Image.fromarray(np.clip(grey, 0, 1).astype(np.float32), mode="F").resize((width, height),
                                                                                          Image.BICUBIC)
        return np.repeat(np.clip(np.asarray(resized, dtype=np.float32), 0, 1)[..., None], 3, axis=2)
    rgb = im.convert("RGB").resize((width, height), Image.BICUBIC)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def load_image(path: str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """RGB photo as a normalised ``[3, H, W]`` float tensor; ``size`` is ``(H, W)``; bicubic resize."""
    height, width = size
    try:
        with Image.open(path) as im:
            rgb = _unit_rgb(im, width, height)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise UsageError(f"photo {path} cannot be read ({' '.join(str(e).split()) or type(e).__name__}); "
                         "replace or remove it") from None
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


def load_batch(paths, size: tuple[int, int]) -> torch.Tensor:
    """``[B, 3, H, W]`` from :func:`load_image` on each path."""
    paths = list(paths)
    if not paths:
        raise UsageError("no images to load")
    return torch.stack([load_image(p, size) for p in paths])
