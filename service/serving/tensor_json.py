"""Numbers of a JSON request body straight into numpy: the fast path of v2 ``data`` and /v1 ``inputs``.

Validating a request whose tensor is a JSON array with its pydantic schema makes the schema walk every number
(4,096 for one 64x64 image), and numpy then walks the resulting Python list again to find its type. Here
:func:`split_array` cuts the one numeric array out of the body, so the schema validates only the small rest,
and :func:`parse_array` reads the array with orjson and hands it to numpy with its type stated. A body where the
array's key is not unique, or an array that holds anything but numbers (strings, ``null``, ``true``, a ragged
nesting), is left to the general path (``None``), which answers the usual error.
"""

from __future__ import annotations

import re

import numpy as np
import orjson

__all__ = ["parse_array", "split_array"]

_COLON = re.compile(rb"\s*:\s*\[")
_NUMBER_CHARS = b"0123456789eE.+- \t\r\n,[]"  # every character an array of JSON numbers may hold
_FLAT_CHARS = b"0123456789eE.+- \t\r\n,"  # ... of a flat one, brackets aside
_BRACKETS = re.compile(rb"\[+")


def split_array(body: bytes, key: str) -> tuple[bytes, bytes] | None:
    """``(body with the array under "key" replaced by [], the array's text)``, when the key occurs exactly once
    in ``body`` and holds an array of numbers only (nested or flat); else ``None``.

    Every step scans as little of the body as it can: the array's text may hold only number characters (so no
    quote, and no second ``"key"``, inside it), so the key's uniqueness is checked before and after the array
    only, and a flat array's characters are checked in one pass.
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
    if depth == 1:  # flat: "[" numbers "]", no bracket inside
        if text.translate(None, _FLAT_CHARS) != b"[]":
            return None
    elif text.translate(None, _NUMBER_CHARS) or text.count(b"[") != text.count(b"]"):
        return None
    return body[:start] + b"[]" + body[end:], text


def parse_array(text: bytes) -> np.ndarray | None:
    """The JSON array ``text`` (numbers, flat or rectangularly nested) as a float32 array, or ``None``."""
    try:
        values = orjson.loads(text)
        if text[1:2] == b"[":  # nested: numpy finds the shape (and refuses a ragged one)
            array: np.ndarray = np.array(values, dtype=np.float32)  # each float64 rounded once, as usual
        else:  # flat (v2 ``data``): no shape to find, and fromiter skips np.array's walk over the list
            array = np.fromiter(values, dtype=np.float32, count=len(values))
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    return array
