"""Labelled vectors from tables (CSV or Parquet), the data of tabular and other vector teachers.

One row per sample. The columns named in ``labels`` are label columns: integers ``0..K-1`` are used as given,
any other values (strings, floats) become class indices in sorted order, with the values as class names. Every
other column is a feature: together, in table order, they form ``x`` of shape ``(N, D)`` float32, so ``D`` must
be what the teacher takes. Features must be numbers (no missing values): encode categories before export.
CSV needs a header row; Parquet needs ``pyarrow``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kf_core.data.base import ArrayDataset
from kf_core.errors import DataError

__all__ = ["TABLE_SUFFIXES", "load_table"]

TABLE_SUFFIXES = (".csv", ".parquet")
PARQUET_MAGIC = b"PAR1"


def load_table(
    path: str | os.PathLike[str], *, labels: Sequence[str], format: str | None = None, name: str | None = None
) -> ArrayDataset:
    """Read a CSV or Parquet table: ``labels`` name the label columns, the other columns are the features.

    ``format`` (``"csv"`` or ``"parquet"``) overrides the file suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path.name}: no such file")
    fmt = format or path.suffix.lstrip(".").lower()
    if not labels:
        raise DataError(
            f"{path.name}: a table needs 'labels': the names of its label columns (the other columns are features)"
        )
    if fmt == "csv":
        columns = _read_csv(path)
    elif fmt == "parquet":
        columns = _read_parquet(path)
    else:
        raise DataError(f"{path.name}: unknown table format {fmt!r}; use a .csv or .parquet file")
    missing = [c for c in labels if c not in columns]
    if missing:
        raise DataError(f"table has no column(s) {missing} to use as labels; its columns: {list(columns)[:50]}")
    features = [c for c in columns if c not in set(labels)]
    if not features:
        raise DataError("table has no feature columns besides the label columns; x needs at least one")
    n = len(columns[features[0]])
    if n == 0:
        raise DataError("table has no rows")
    x = np.empty((n, len(features)), dtype=np.float32)
    for j, col in enumerate(features):
        x[:, j] = _numbers(col, columns[col])
    y: dict[str, np.ndarray] = {}
    classes: dict[str, list[str]] = {}
    for col in labels:
        y[col], classes[col] = _classes(col, columns[col])
    return ArrayDataset(
        x=x,
        labels=y,
        classes=classes,
        name=name or path.stem,
        meta={"source": fmt, "features": features},
    )


def _read_csv(path: Path) -> dict[str, list[object]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"the CSV file cannot be read ({e}); write UTF-8 text with a header row") from None
    if not rows or not any(rows[0]):
        raise DataError("the CSV file is empty; give a header row of column names, then one row per sample")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or "" in header:
        raise DataError(f"the CSV header must name every column once; got {header[:50]}")
    body = [r for r in rows[1:] if r]
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataError(f"CSV line {i} has {len(r)} fields but the header has {len(header)}; fix that row")
    return {h: [r[j].strip() for r in body] for j, h in enumerate(header)}


def _read_parquet(path: Path) -> dict[str, list[object]]:
    # Imported here: pyarrow is large and only Parquet uploads need it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        reason = str(e).replace(str(path), "the file")[:200]  # pyarrow names the path: a server's, in the service
        raise DataError(f"the Parquet file cannot be read ({reason}); write it with pandas or pyarrow") from None
    return {str(name): table.column(name).to_pylist() for name in table.column_names}


def _numbers(col: str, values: list[object]) -> np.ndarray:
    try:
        out = np.array([float(v) if v not in (None, "") else math.nan for v in values], dtype=np.float64)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        bad = next(v for v in values if not _is_number(v))
        raise DataError(
            f"feature column {col!r} holds {bad!r}, which is not a number; features must be numeric "
            "(encode categories as numbers, or name the column in 'labels' if it is a label)"
        ) from None
    if not np.isfinite(out).all():
        raise DataError(f"feature column {col!r} has missing or infinite values; fill or drop them first")
    return out


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _classes(col: str, values: list[object]) -> tuple[np.ndarray, list[str]]:
    if any(v is None or v == "" for v in values):
        raise DataError(f"label column {col!r} has missing values; every row needs a label")
    ints = [_as_int(v) for v in values]
    if all(i is not None for i in ints):
        y = np.asarray(ints, dtype=np.int64)
        if int(y.min()) < 0:
            raise DataError(f"label column {col!r} has negative values (min {int(y.min())}); use 0..K-1")
        return y, [str(i) for i in range(int(y.max()) + 1)]
    names = sorted({str(v) for v in values})
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[str(v)] for v in values], dtype=np.int64), names


def _as_int(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        s = v.strip()
        return int(s) if s.lstrip("-").isdigit() else None
    return None
