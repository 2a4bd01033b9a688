"""Per-sample input shapes: the one check that data fits a teacher or a factor set.

A teacher, a dataset and a factor set each declare the shape of one input sample, without the batch dimension:
``(D,)`` for vectors (tabular features, embeddings), ``(C, H, W)`` for images, any other rank the teacher's graph
declares. A dimension of ``-1`` (or ``None``) in the wanted shape is free: the graph accepts any size there.
Everything that pairs data with a model (training, extension, job submission, serving metadata) calls
:func:`check_input_shape`, so the rule and its message are the same everywhere. Importing this module pulls in
neither torch nor onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence

from kf_core.errors import InputShapeError

__all__ = ["check_input_shape", "describe_shape", "normalize_shape"]


def normalize_shape(shape: Sequence[int | None]) -> tuple[int, ...]:
    """``shape`` as a tuple of ints, free dimensions (``None`` or negative) as ``-1``."""
    return tuple(-1 if s is None or int(s) < 0 else int(s) for s in shape)


def describe_shape(shape: Sequence[int | None]) -> str:
    """``(64,) (a vector of 64 features)`` or ``(1, 8, 8) (C, H, W image)``: a shape with what it means."""
    dims = normalize_shape(shape)
    text = "(" + ", ".join("any" if d < 0 else str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"
    if len(dims) == 1:
        return f"{text} (a vector)"
    if len(dims) == 3:
        return f"{text} (C, H, W)"
    return text


def check_input_shape(
    want: Sequence[int | None], got: Sequence[int | None], *, what: str = "the teacher", data: str = "the data"
) -> None:
    """Raise :class:`InputShapeError` unless per-sample shape ``got`` fits ``want`` (free dims match any size).

    ``what`` names the side that wants ``want`` in the message ("the teacher", "factor set fs:1", ...), ``data``
    the side that has ``got`` ("the data", "dataset 'digits'").
    """
    w, g = normalize_shape(want), normalize_shape(got)
    if len(w) != len(g):
        raise InputShapeError(
            f"{what} takes inputs of shape {describe_shape(w)} per sample ({len(w)} dims) but {data} has "
            f"{describe_shape(g)} ({len(g)} dims); give data of the same rank, e.g. x of shape (N, *{w})"
        )
    if any(wd >= 0 and gd != wd for wd, gd in zip(w, g, strict=True)):
        raise InputShapeError(
            f"{what} takes inputs of shape {describe_shape(w)} per sample but {data} has {describe_shape(g)}; "
            "resize the data or use a model made for this input size"
        )
