"""Load a folder of images laid out one subfolder per class (``root/<class>/<image>``), like ImageFolder.

Class names are the subfolder names, sorted, so the label of each class is its position in that order.
Images are searched recursively inside each class folder, converted to the requested number of
channels, resized with Pillow and stored as uint8 with the ``/255`` then ``(v - 0.5) / 0.5`` mapping.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kf_core.data.base import ArrayDataset
from kf_core.errors import ConfigError, DataError

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    image_size: tuple[int, int],
    channels: int = 3,
    label: str = "label",
) -> ArrayDataset:
    """Every image under ``root/<class>/``, resized to ``image_size`` = (height, width)."""
    root = Path(root)
    height, width = _check_size(image_size)
    if channels not in _MODES:
        raise ConfigError(f"channels must be one of {sorted(_MODES)}, got {channels!r}")
    if not label:
        raise ConfigError("label (the label column name) must not be empty")
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {what}; give a folder with one subfolder per class")
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if not class_dirs:
        raise DataError(f"image folder {root} has no class subfolders; put each class's images in root/<class>/")
    files: list[Path] = []
    targets: list[int] = []
    for k, class_dir in enumerate(class_dirs):
        found = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not found:
            raise DataError(
                f"class folder {class_dir} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "add images or remove the folder"
            )
        files += found
        targets += [k] * len(found)
    x = np.empty((len(files), channels, height, width), dtype=np.uint8)
    for i, file in enumerate(files):
        x[i] = _read_image(file, _MODES[channels], height, width)
    return ArrayDataset(
        x=x,
        labels={label: np.asarray(targets, dtype=np.int64)},
        classes={label: [p.name for p in class_dirs]},
        name=root.name or str(root),
        meta={"source": "folder", "path": str(root), "image_size": [height, width], "channels": channels},
        scale=2.0 / 255.0,
        shift=-1.0,
    )


def _check_size(image_size: tuple[int, int]) -> tuple[int, int]:
    size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ConfigError(f"image_size must be (height, width) with positive integers, got {image_size!r}")
    return int(size[0]), int(size[1])


def _read_image(file: Path, mode: str, height: int, width: int) -> np.ndarray:
    try:
        with Image.open(file) as img:
            resized = img.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read image {file} ({e}); fix or remove the file") from e
    pixels = np.asarray(resized, dtype=np.uint8)
    # Pillow gives (H, W) for one channel and (H, W, C) otherwise; the engine wants (C, H, W).
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
