"""A bounded local read-through cache of remote artifacts, for API replicas and workers.

Files are kept as ``<dir>/<sha[:2]>/<sha>`` and evicted least recently used first (a read refreshes a file's
modification time) once the cache holds more than ``max_bytes``. Several processes on one host may share the
directory: files enter it by an atomic rename of a fully written, hash-checked temp file, and a process that
loses a race with an eviction simply fetches again. Cached bytes are not trusted blindly either: the store
hashes them on every read, like any other artifact, and a damaged copy is dropped and fetched again.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

__all__ = ["ReadCache"]


class ReadCache:
    """Content-addressed files under ``directory``, at most ``max_bytes`` of them (0: cache nothing)."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int) -> None:
        self.dir = Path(directory).resolve()
        self.tmp_dir = self.dir / ".tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._size = self._scan_size()

    def path_for(self, sha256: str) -> Path:
        return self.dir / sha256[:2] / sha256

    def temp_path(self) -> Path:
        """A fresh path in the cache's filesystem, so that :meth:`adopt` is a rename, not a copy."""
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    def lookup(self, sha256: str) -> Path | None:
        """The cached file, marked as just used, or None."""
        path = self.path_for(sha256)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def adopt(self, tmp: Path, sha256: str) -> Path:
        """Move the verified file ``tmp`` into the cache, then evict down to the limit (the new file last)."""
        final = self.path_for(sha256)
        size = tmp.stat().st_size
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        self._size += size
        if self._size > self.max_bytes:
            self._evict(keep=final)
        return final

    def discard(self, sha256: str) -> None:
        path = self.path_for(sha256)
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            self._size -= size

    def files(self) -> list[Path]:
        return [p for p in self.dir.glob("??/*") if p.is_file()]

    def _evict(self, *, keep: Path) -> None:
        # Rescan: other processes sharing the directory add and evict files too.
        entries = []
        for p in self.files():
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        entries.sort()  # oldest use first
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue  # its reader is about to open it; a file larger than the cache goes at the next insert
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
        self._size = total
        self._clean_tmp()

    def _scan_size(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def _clean_tmp(self, older_than_s: float = 3600.0) -> None:
        # Temp files of processes that died mid-download.
        cutoff = time.time() - older_than_s
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()
