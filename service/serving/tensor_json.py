"""Numbers of a JSON request body straight into numpy: the fast path of v2 ``data`` and /v1 ``inputs``.

Validating a request whose tensor is a JSON array with its pydantic schema makes the schema walk every number (4,096
for one 64x64 image), and numpy then walks the resulting Python list again to find its type. Here
:func:`split_array` cuts the one numeric array out of the body, so the schema validates only the small rest, and
:func:`parse_array` reads the array into numpy. A flat array (v2 ``data``) goes straight from text to a buffer of
doubles with simdjson: no Python object per number (orjson makes 4,096 floats, numpy converts each, then they are
freed: 159 -> 45 us for one 64x64 image of 0s and 1s, 322 -> 152 us for random floats). A nested one (/v1
``inputs``) is read the same way once its arrays are checked to be rectangular (simdjson would flatten a ragged
one): 275 -> 73 us for one image of 0s and 1s, 368 -> 145 us for random floats; short rows, and integers past 64
bits, go through orjson and numpy. A body where the array's key is not unique, or an array that holds anything but
numbers (strings, ``null``, ``true``, a ragged nesting), is left to the general path (``None``), which answers the
usual error.
"""

from __future__ import annotations

import math
import re
import threading

import numpy as np
import orjson
import simdjson

__all__ = ["parse_array", "split_array"]

_COLON = re.compile(rb"\s*:\s*\[")
_NUMBER_CHARS = b"0123456789eE.+- \t\r\n,[]"  # every character an array of JSON numbers may hold
_BRACKETS = re.compile(rb"\[+")
_PARSERS = threading.local()  # one simdjson parser per thread (large bodies are parsed on worker threads)


def split_array(body: bytes, key: str) -> tuple[bytes, bytes] | None:
    """``(body with the array under "key" replaced by [], the array's text)``, when the key occurs exactly once
    in ``body`` and holds an array with no string in it (flat, or nested and of numbers only); else ``None``.

    Every step scans as little of the body as it can: the array's text may hold no quote (so no string, and no
    second ``"key"``, inside it), so the key's uniqueness is checked before and after the array only. A flat
    array is checked for quotes alone (one ``memchr``): whatever else it holds that is not a number (``true``,
    ``null``, ``{}``), :func:`parse_array` refuses. A nested one may hold number characters and brackets only.
    """
    token = b'"' + key.encode() + b'"'
    at = body.find(token)
    if at < 0:
        return None
    match = _COLON.match(body, at + len(token))
    if match is None:
        return None
    start = match.end() - 1
    brackets = _BRACKETS.match(body, start)
    assert brackets is not None  # _COLON ended on one
    depth = brackets.end() - start  # leading brackets: a rectangular nesting's depth
    run = body.find(b"]" * depth, start)  # d brackets closing in a row close the outermost array
    if run < 0:
        return None  # also when whitespace separates them: the general path reads that
    end = run + depth
    if body.find(token, end) >= 0:  # a second "key" after the array (none before it: ``at`` is the first)
        return None
    text = body[start:end]
    if depth == 1:  # flat: "[" ... "]" with no string inside (so no "key" and no "]"); :func:`parse_array` then
        if text.find(b'"') >= 0:  # refuses anything but numbers, as simdjson reads them (a memchr, not a copy)
            return None
    elif text.translate(None, _NUMBER_CHARS) or text.count(b"[") != text.count(b"]"):
        return None
    return body[:start] + b"[]" + body[end:], text


def parse_array(text: bytes) -> np.ndarray | None:
    """The JSON array ``text`` (numbers, flat or rectangularly nested) as a float32 array, or ``None``."""
    read = _flat(text) if text.find(b"[", 1) < 0 else _nested(text)  # flat: v2 ``data``; nested: /v1 ``inputs``
    if read is not None:
        return read
    try:
        values = orjson.loads(text)
        if isinstance(values, list) and text[1:2] != b"[" and not all(type(v) in (int, float) for v in values):
            return None  # a flat array simdjson refused: only integers past 64 bits are numbers here
        array: np.ndarray = np.array(values, dtype=np.float32)  # nested: numpy finds the shape (refuses ragged)
    except (orjson.JSONDecodeError, ValueError, TypeError, OverflowError):
        return None
    return array


def _flat(text: bytes) -> np.ndarray | None:
    """A flat array of numbers read by simdjson into doubles, rounded to float32 as the general path rounds
    them; ``None`` for anything else, and for integers past 64 bits (orjson reads those)."""
    return _read(text, nested=False)


def _nested(text: bytes) -> np.ndarray | None:
    """A rectangular nesting of arrays of numbers, read as :func:`_flat` reads a flat one. simdjson flattens
    whatever it is given, so the shape is the first element's at every depth, every array at every depth must
    have that length, and the text must hold no more arrays than such a nesting (so every innermost element is a
    number). ``None`` for a ragged nesting, an empty dimension, many short rows (numpy reads those as fast as
    this checks them) or anything :func:`_flat` refuses."""
    return _read(text, nested=True)


def _read(text: bytes, *, nested: bool) -> np.ndarray | None:
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = simdjson.Parser()
    try:
        doc = parser.parse(text)
    except (ValueError, RuntimeError):
        return None
    try:
        if not isinstance(doc, simdjson.Array):
            return None
        values = doc.as_buffer(of_type="d")  # every leaf a number, or TypeError
        shape = _shape(doc, text) if nested else ()
    except (TypeError, ValueError, RuntimeError):
        return None
    finally:
        del doc  # the parser refuses the next document while a proxy of this one lives
    if shape is None:
        return None
    array: np.ndarray = np.frombuffer(values, dtype=np.float64).astype(np.float32)
    return array.reshape(shape) if shape else array


def _shape(doc: simdjson.Array, text: bytes) -> tuple[int, ...] | None:
    """The shape of the rectangular nesting ``doc`` (parsed from ``text``), or ``None``."""
    shape: list[int] = []
    element: object = doc
    while isinstance(element, simdjson.Array):
        if not len(element):
            return None  # an empty dimension: numpy says what it makes of it
        shape.append(len(element))
        element = element[0]
    del element
    arrays, level = 1, 1  # how many arrays a rectangular nesting of this shape holds
    for n in shape[:-1]:
        level *= n
        arrays += level
    if arrays > math.prod(shape) // 16 + 1 or text.count(b"[") != arrays:
        return None
    return tuple(shape) if _lengths(doc, shape, 0) else None


def _lengths(array: simdjson.Array, shape: list[int], depth: int) -> bool:
    """Whether ``array`` and every array in it down to the innermost have the lengths ``shape`` says."""
    if len(array) != shape[depth]:
        return False
    if depth + 1 < len(shape):
        for child in array:
            if not isinstance(child, simdjson.Array) or not _lengths(child, shape, depth + 1):
                return False
    return True
