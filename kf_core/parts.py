"""Reading ONNX files: an exported factor set (``manifest.json`` and its parts, verified against their sha256),
or any single model (:func:`read_onnx`).

:func:`kf_core.export.export_factor_set` writes the directory; :func:`load_parts` reads it back without torch
and refuses anything altered, missing or not ONNX. Loaded sets are cached by path and the files' stat
signature (size, mtime, inode, ctime), so a server that assembles many subsets of one factor set hashes and
parses each file once, while a replaced or edited file is read and verified again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from kf_core.errors import ModelFileError

__all__ = ["FORMAT", "MANIFEST", "FactorParts", "clear_parts_cache", "load_parts", "read_onnx"]

FORMAT = "kf-factor-set/1"
MANIFEST = "manifest.json"
_CACHE_SIZE = 8  # factor sets kept parsed; each holds its weights (a few MB to a few hundred MB) in memory
# Files modified this recently are not cached (git's "racily clean" rule): file times are coarse (a few ms on
# ext4, 1-2 s elsewhere), so an edit right after loading could keep the stat signature unchanged.
_RACY_NS = 2_000_000_000
_SUBGRAPH = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)

_Signature = tuple[tuple[int, int, int, int], ...]
_cache: OrderedDict[Path, tuple[_Signature, FactorParts]] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class FactorParts:
    """A verified factor set: manifest and parsed parts. Treat the protos as read-only."""

    directory: Path
    manifest: dict[str, Any]
    manifest_sha256: str  # names the exact factor set an assembly came from
    ckn: onnx.ModelProto  # x -> z_c
    tasks: dict[str, onnx.ModelProto]  # (x, z_c) -> logits, in manifest order
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # derived data, e.g. ORT-optimised parts

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)


def load_parts(directory: str | os.PathLike[str], *, cache: bool = True) -> FactorParts:
    """Read and verify a factor set; a missing, altered or non-ONNX file raises :class:`ModelFileError`.

    With ``cache`` (the default) an unchanged directory returns the same object as last time: its files are
    stat-ed, not re-read (files written in the last 2 s are always re-read). ``cache=False`` always reads,
    hashes and parses everything.
    """
    root = Path(directory).resolve()
    if cache:
        with _cache_lock:
            hit = _cache.get(root)
        if hit is not None and hit[0] == _signature(hit[1]):
            with _cache_lock:
                if root in _cache:  # another thread may have evicted it meanwhile
                    _cache.move_to_end(root)
            return hit[1]
    started = time.time_ns()
    parts, signature = _load(root)
    if cache and all(max(mtime, ctime) < started - _RACY_NS for _, mtime, _, ctime in signature):
        with _cache_lock:
            _cache[root] = (signature, parts)
            _cache.move_to_end(root)
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return parts


def read_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Parse and check one ONNX file (e.g. a teacher); external data is not loaded.

    A missing file, bytes that are not ONNX or a graph that fails ``onnx.checker`` raise :class:`ModelFileError`.
    """
    p = Path(path)
    data = _read(p, [])
    model = _parse(p, data)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    try:
        # By path when weights live beside the file: the checker then resolves them from its directory.
        onnx.checker.check_model(str(p) if external else data)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelFileError(f"{p} is not a valid ONNX model: {exc}") from exc
    return model


def clear_parts_cache() -> None:
    """Forget every cached factor set (their memory is freed once no caller holds them)."""
    with _cache_lock:
        _cache.clear()


def _load(root: Path) -> tuple[FactorParts, _Signature]:
    stats: list[tuple[int, int, int, int]] = []  # taken as each file is opened, so a later edit invalidates
    try:
        raw = _read(root / MANIFEST, stats)
    except ModelFileError as exc:
        raise ModelFileError(f"{exc}; is {root} a factor set written by export_factor_set?") from exc
    try:
        manifest = json.loads(raw)
        if manifest.get("format") != FORMAT:
            raise ModelFileError(f"{root / MANIFEST} is not a {FORMAT!r} manifest; re-export the factor set")
        ckn = _load_part(root, manifest["ckn"], ("x",), ("z_c",), stats)
        tasks = {str(n): _load_part(root, e, ("x", "z_c"), ("logits",), stats) for n, e in manifest["tasks"].items()}
    except ModelFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{root / MANIFEST} is malformed ({exc!r}); re-export the factor set") from exc
    return FactorParts(root, manifest, hashlib.sha256(raw).hexdigest(), ckn, tasks), tuple(stats)


def _read(path: Path, stats: list[tuple[int, int, int, int]]) -> bytes:
    try:
        with path.open("rb") as f:
            stats.append(_stat_key(os.fstat(f.fileno())))
            return f.read()
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _load_part(
    root: Path,
    entry: dict[str, Any],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    stats: list[tuple[int, int, int, int]],
) -> onnx.ModelProto:
    path = root / str(entry["file"])
    data = _read(path, stats)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ModelFileError(
            f"{path} has sha256 {digest}, but the manifest says {entry['sha256']}: the file was altered or "
            "corrupted; restore it or re-export the factor set"
        )
    model = _parse(path, data)
    found = (tuple(v.name for v in model.graph.input), tuple(v.name for v in model.graph.output))
    if found != (inputs, outputs):
        raise ModelFileError(
            f"{path} is not a factor-set part: expected inputs {list(inputs)} and outputs {list(outputs)}, "
            f"found {list(found[0])} and {list(found[1])}"
        )
    if any(a.type in _SUBGRAPH for n in model.graph.node for a in n.attribute):
        raise ModelFileError(f"{path} has control-flow subgraphs, which assembly cannot rename; re-export it")
    return model


def _parse(path: Path, data: bytes) -> onnx.ModelProto:
    try:
        model: onnx.ModelProto = onnx.ModelProto.FromString(data)
    except Exception as exc:  # protobuf's DecodeError has no stable import path across its backends
        raise ModelFileError(f"{path} is not an ONNX model: {exc}") from exc
    if not model.graph.output:  # random bytes can parse as an empty or nonsense proto
        raise ModelFileError(f"{path} is not an ONNX model: it declares no graph outputs")
    return model


def _signature(parts: FactorParts) -> _Signature:
    files = [MANIFEST, parts.manifest["ckn"]["file"], *(e["file"] for e in parts.manifest["tasks"].values())]
    out = []
    for f in files:
        try:
            out.append(_stat_key(os.stat(parts.directory / f)))
        except OSError:
            return ()  # never equal to a stored signature: the next load reports the missing file
    return tuple(out)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
