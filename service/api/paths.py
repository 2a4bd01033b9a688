"""What the app's routes accept, read from its OpenAPI document: the methods of every path and the media types
of every request body. The middleware answers from it what FastAPI's nested routers cannot say right on their
own: ``OPTIONS`` and 405 with an ``Allow`` header naming every method of the path (the most specific templates
that match it: ``/v1/factor-sets/import`` before ``/v1/factor-sets/{ref}``), and 415 for a body of a media
type the operation does not take (FastAPI would parse ``text/plain`` as a string and say "Input should be a valid
dictionary"), before any route sees the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["PathTable", "media_problem"]

_PARAM = re.compile(r"\{[^}]+\}")
_MEMO = 4096  # paths remembered with their templates (paths carry ids, so the memo is bounded)


@dataclass(frozen=True)
class _Path:
    template: str
    pattern: re.Pattern[str]
    bodies: dict[str, tuple[str, ...]]  # upper-case method -> media types its body may have (() when it has none)


class PathTable:
    """Built once from ``openapi`` (the app's document): its paths, methods and request body media types."""

    def __init__(self, openapi: dict[str, Any]) -> None:
        self._paths: list[_Path] = []
        for template, ops in openapi["paths"].items():
            bodies = {
                method.upper(): tuple((op.get("requestBody") or {}).get("content", {}))
                for method, op in ops.items()
                if method in ("get", "put", "post", "delete", "patch")
            }
            pattern = re.compile("^" + "[^/]+".join(re.escape(part) for part in _PARAM.split(template)) + "$")
            self._paths.append(_Path(template, pattern, bodies))
        # Every request asks about its path; trying every template's pattern on each costs more than the lookup
        # (a prediction path asks the same question thousands of times a second).
        self._memo: dict[str, tuple[list[_Path], list[str] | None]] = {}

    def _matching(self, path: str) -> list[_Path]:
        return self._lookup(path)[0]

    def _lookup(self, path: str) -> tuple[list[_Path], list[str] | None]:
        """The templates ``path`` is an instance of, the most specific only (as OpenAPI says, a concrete path,
        ``/v1/factor-sets/import``, is matched before a templated one, ``/v1/factor-sets/{ref}``), and their
        methods."""
        hit = self._memo.get(path)
        if hit is not None:
            return hit
        found = [p for p in self._paths if p.pattern.match(path)]
        if found:
            fewest = min(p.template.count("{") for p in found)
            found = [p for p in found if p.template.count("{") == fewest]
        methods = {m for p in found for m in p.bodies}
        if len(self._memo) >= _MEMO:
            self._memo.clear()
        hit = self._memo[path] = (found, sorted(methods | {"OPTIONS"}) if methods else None)
        return hit

    def allowed(self, path: str) -> list[str] | None:
        """Every method of ``path`` (sorted, OPTIONS included); ``None``: not a path of the API."""
        return self._lookup(path)[1]

    def media_types(self, method: str, path: str) -> tuple[str, ...]:
        """The media types the body of ``method`` at ``path`` may have (() for none)."""
        for p in self._matching(path):
            if method in p.bodies:
                return p.bodies[method]
        return ()


def media_problem(accepted: tuple[str, ...], content_type: bytes | None, *, v2: bool) -> str | None:
    """Why a body sent as ``content_type`` is refused by an operation taking ``accepted`` (``None``: it is not).

    JSON takes ``application/json`` and ``application/*+json``; a missing Content-Type is refused (a browser page
    can send a body without one, with no CORS preflight) except on /v2, whose clients send the binary extension
    without one."""
    if not accepted:
        return None
    given = (content_type or b"").split(b";", 1)[0].strip().lower().decode("latin-1")
    if not given:
        if v2:
            return None
        return f"the request has no Content-Type; send the body as {_names(accepted)}"
    if given in accepted:
        return None
    if "application/json" in accepted and given.startswith("application/") and given.endswith("+json"):
        return None
    return f"the body's Content-Type is {given!r}; this operation takes {_names(accepted)}"


def _names(types: tuple[str, ...]) -> str:
    return " or ".join(types)
