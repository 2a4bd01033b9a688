"""Read and write labelled datasets as ``.npz`` files, the format users bring their own data in.

The format, in one ``np.savez`` archive:

- ``x``: the inputs, ``(N, *sample_shape)`` of the shape the teacher takes: vectors ``(N, D)``, images
  ``(N, C, H, W)``, any rank >= 2; ``(N, H, W)`` is read as one-channel images ``(N, 1, H, W)``. uint8 values are
  mapped to [-1, 1] (``/255`` then ``(v - 0.5) / 0.5``, kept compact as uint8 with ``scale``/``shift``); floats
  are used as given.
- one integer array ``(N,)`` per label column, values in ``[0, K)``; a task reads the column named after the
  teacher output it maps to (or its ``label``);
- optionally ``classes_<column>``: a string array of the column's K class names (default "0".."K-1",
  with K = largest label + 1).

Files are always opened with ``allow_pickle=False``: an ``.npz`` can come from anyone.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kf_core.data.base import ArrayDataset
from kf_core.errors import DataError, LabelError, UnknownTaskError

__all__ = ["load_npz", "save_npz"]

_CLASSES = "classes_"
_UINT8_SCALE, _UINT8_SHIFT = 2.0 / 255.0, -1.0


def load_npz(path: str | os.PathLike[str], *, labels: Sequence[str] | None = None) -> ArrayDataset:
    """Load an ``.npz`` dataset; ``labels`` keeps only the named label arrays (default: all of them)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give the path of an .npz archive written by np.savez")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not an .npz archive ({e}); write the dataset with np.savez") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single .npy array, not an .npz archive; write it with np.savez")
    with archive:
        arrays = {name: _read(archive, name, path) for name in archive.files}
    name = path.stem
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found: {', '.join(sorted(arrays)) or 'none'}); store inputs as x")
    x, scale, shift = _images(arrays.pop("x"), path)
    names = {k[len(_CLASSES) :]: v for k, v in arrays.items() if k.startswith(_CLASSES)}
    columns = {k: v for k, v in arrays.items() if not k.startswith(_CLASSES)}
    for col in names:
        if col not in columns:
            raise DataError(f"{path}: {_CLASSES}{col} names classes but there is no label array {col!r}")
    if not columns:
        raise DataError(f"{path}: no label arrays besides x; add one integer array (N,) per task")
    if labels is not None:
        if not labels:
            raise DataError(f"{path}: labels= is empty; name at least one label array or pass None for all")
        for col in labels:
            if col not in columns:
                raise UnknownTaskError("label array", col, list(columns))
        columns = {col: columns[col] for col in labels}
    n = len(x)
    y = {col: _label(col, arr, n, path) for col, arr in columns.items()}
    classes = {col: _class_names(col, y[col], names.get(col), path) for col in y}
    return ArrayDataset(
        x=x,
        labels=y,
        classes=classes,
        name=name,
        meta={"source": "npz", "path": str(path)},
        scale=scale,
        shift=shift,
    )


def save_npz(ds: ArrayDataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` in the format :func:`load_npz` reads, so that loading it back gives the same images.

    Compact uint8/bool images are written as uint8 pixels when their inputs are ``(p / 255 - 0.5) / 0.5`` for
    whole pixels p (dSprites' 0/1 becomes 0/255; inputs then agree to float32 rounding); anything else is
    written as float32 network inputs.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"x": _encode_images(ds)}
    for col, y in ds.labels.items():
        if col == "x" or col.startswith(_CLASSES):
            raise DataError(f"label column {col!r} cannot be stored in an .npz: 'x' and '{_CLASSES}*' are reserved")
        arrays[col] = np.asarray(y, dtype=np.int64)
        arrays[_CLASSES + col] = np.asarray(ds.classes[col], dtype=np.str_)
    # Through a file object: np.savez would append ".npz" to a path that lacks it.
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # stub confuses **kwds with allow_pickle
    return path


def _read(archive: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[name])
    except ValueError as e:  # numpy refuses object arrays when allow_pickle=False
        raise DataError(
            f"{path}: array {name!r} holds pickled Python objects, which are not loaded for safety; "
            "store numbers (and class names as a plain string array)"
        ) from e
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: array {name!r} cannot be read ({e}); the file may be truncated") from e


def _images(x: np.ndarray, path: Path) -> tuple[np.ndarray, float, float]:
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W): one-channel images
    if x.ndim < 2:
        raise DataError(
            f"{path}: x must be (N, *sample_shape), e.g. (N, D) vectors or (N, C, H, W) images; "
            f"got shape {tuple(x.shape)}"
        )
    if x.dtype == np.uint8:
        return x, _UINT8_SCALE, _UINT8_SHIFT
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False), 1.0, 0.0
    raise DataError(f"{path}: x must hold uint8 pixels or floats, got dtype {x.dtype}; convert it first")


def _label(col: str, y: np.ndarray, n: int, path: Path) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        length = len(y) if y.ndim else 0
        raise LabelError(
            f"{path}: label array {col!r} has length {length} (shape {tuple(y.shape)}) but x has N={n} "
            "images; give one label per image"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise LabelError(
            f"{path}: label array {col!r} must hold integers, got dtype {y.dtype}; "
            "store class indices (e.g. y.astype(np.int64))"
        )
    if n and int(y.min()) < 0:
        raise LabelError(f"{path}: label array {col!r} has negative values (min {int(y.min())}); use 0..K-1")
    return y.astype(np.int64)


def _class_names(col: str, y: np.ndarray, names: np.ndarray | None, path: Path) -> list[str]:
    if names is None:
        return [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(
            f"{path}: {_CLASSES}{col} must be a 1-D string array of class names, "
            f"got dtype {names.dtype} and shape {tuple(names.shape)}"
        )
    result = [v.decode() if isinstance(v, bytes) else str(v) for v in names.tolist()]
    if len(y) and int(y.max()) >= len(result):
        raise LabelError(
            f"{path}: label array {col!r} goes up to {int(y.max())} but {_CLASSES}{col} names only "
            f"{len(result)} classes; name every class"
        )
    return result


def _encode_images(ds: ArrayDataset) -> np.ndarray:
    x = ds.x
    if x.dtype == np.uint8 and ds.scale == _UINT8_SCALE and ds.shift == _UINT8_SHIFT:
        return x
    if x.dtype in (np.uint8, np.bool_):
        # Map each possible raw value to the uint8 pixel giving the same input; a lookup table keeps
        # this cheap even for the 3 GB dSprites grid.
        raw = x.view(np.uint8)
        inputs = np.arange(256, dtype=np.float32) * np.float32(ds.scale) + np.float32(ds.shift)
        pixels = (inputs.astype(np.float64) - _UINT8_SHIFT) / _UINT8_SCALE
        lut = np.rint(pixels)
        used = np.bincount(raw.ravel(), minlength=256) > 0
        fits = (np.abs(pixels - lut) < 1e-3) & (lut >= 0) & (lut <= 255)
        if fits[used].all():
            return lut.astype(np.uint8)[raw]
    return ds.images()
